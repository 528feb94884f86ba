use clap::Parser;
use gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::logging::init("gateway");
    let app = Application::build(Config::parse()).await?;
    tracing::info!(addr = %app.local_addr(), "gateway listening");
    app.run_until_stopped(service_kit::shutdown::signal()).await
}
