use archiver::{Archiver, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::logging::init("archiver");
    let archiver = Archiver::build(Config::parse()).await?;
    archiver.run_until_stopped(service_kit::shutdown::signal()).await
}
