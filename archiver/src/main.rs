use archiver::{Archiver, Config};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "archiver", about = "Writes the message log to PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Exits 0 when the archiver on this host (ARCHIVER_LISTEN_ADDR) answers
    /// `/healthz`, 1 otherwise: a container health check without a shell.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    if let Some(Command::Healthcheck) = command {
        let healthy = service_kit::ops::http_ok(service_kit::ops::local(config.http_listen_addr), "/healthz").await;
        std::process::exit(if healthy { 0 } else { 1 });
    }
    service_kit::logging::init("archiver");
    let archiver = Archiver::build(config).await?;
    tracing::info!(ops = %archiver.ops_addr(), "archiver serving its health and metrics");
    archiver.run_until_stopped(service_kit::shutdown::signal()).await
}
