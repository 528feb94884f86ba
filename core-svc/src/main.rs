use clap::Subcommand;
use core_svc::{Application, Config, app};

#[derive(Subcommand)]
enum Command {
    /// Runs the database migrations, then exits.
    Migrate,
    /// Exits 0 when the core-svc on this host (GRPC_LISTEN_ADDR) is serving,
    /// 1 otherwise: a container health check without a shell.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, config) = service_kit::cli::parse::<Config, Command>("core-svc", "The messenger's core gRPC service");
    match command {
        Some(Command::Healthcheck) => std::process::exit(if app::healthy(config.listen_addr).await { 0 } else { 1 }),
        Some(Command::Migrate) => {
            let export = service_kit::logging::init("core-svc")?;
            app::migrate_only(&config.database_url).await?;
            tracing::info!("migrated");
            export.shutdown().await;
            Ok(())
        }
        None => {
            let export = service_kit::logging::init("core-svc")?;
            let app = Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), metrics = %app.ops_addr(), "core-svc listening");
            let stopped = app.run_until_stopped(service_kit::shutdown::signal()).await;
            export.shutdown().await;
            stopped
        }
    }
}
