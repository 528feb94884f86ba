use archiver::{Archiver, Config};
use clap::Subcommand;

#[derive(Subcommand)]
enum Command {
    /// Exits 0 when the archiver on this host (ARCHIVER_LISTEN_ADDR) answers
    /// `/healthz`, 1 otherwise: a container health check without a shell.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, config) =
        service_kit::cli::parse::<Config, Command>("archiver", "Writes the message log to PostgreSQL");
    if let Some(Command::Healthcheck) = command {
        service_kit::ops::healthcheck(config.http_listen_addr).await;
    }
    let export = service_kit::logging::init("archiver")?;
    let archiver = Archiver::build(config).await?;
    tracing::info!(ops = %archiver.ops_addr(), "archiver serving its health and metrics");
    let stopped = archiver.run_until_stopped(service_kit::shutdown::signal()).await;
    export.shutdown().await;
    stopped
}
