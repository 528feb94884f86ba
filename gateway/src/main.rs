use clap::{Parser, Subcommand};
use gateway::{Application, Config};

#[derive(Parser)]
#[command(name = "gateway", about = "The messenger's REST and WebSocket gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Exits 0 when the gateway on this host (HTTP_LISTEN_ADDR) answers
    /// `/healthz`, 1 otherwise: a container health check without a shell.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    if let Some(Command::Healthcheck) = command {
        let healthy = service_kit::ops::http_ok(service_kit::ops::local(config.listen_addr), "/healthz").await;
        std::process::exit(if healthy { 0 } else { 1 });
    }
    service_kit::logging::init("gateway");
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "gateway listening");
    app.run_until_stopped(service_kit::shutdown::signal()).await
}
