use clap::Parser;
use core_svc::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::logging::init("core-svc");
    let app = Application::build(Config::parse()).await?;
    tracing::info!(addr = %app.local_addr(), "core-svc listening");
    app.run_until_stopped(service_kit::shutdown::signal()).await
}
