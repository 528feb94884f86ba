use clap::Subcommand;
use gateway::{Application, Config};

#[derive(Subcommand)]
enum Command {
    /// Exits 0 when the gateway on this host (HTTP_LISTEN_ADDR) answers
    /// `/healthz`, 1 otherwise: a container health check without a shell.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, config) =
        service_kit::cli::parse::<Config, Command>("gateway", "The messenger's REST and WebSocket gateway");
    if let Some(Command::Healthcheck) = command {
        service_kit::ops::healthcheck(config.listen_addr).await;
    }
    let export = service_kit::logging::init("gateway")?;
    let app = Application::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "gateway listening");
    let stopped = app.run_until_stopped(service_kit::shutdown::signal()).await;
    export.shutdown().await;
    stopped
}
