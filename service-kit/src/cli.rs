//! The command line every binary shares: its settings (flags with
//! environment fallbacks), and an optional subcommand (`healthcheck`,
//! `migrate`) that runs instead of the service.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
struct Cli<C: Args, S: Subcommand> {
    #[command(subcommand)]
    command: Option<S>,
    #[command(flatten)]
    config: C,
}

/// The subcommand, if one was given, and the settings, as `name` (what
/// `--help` calls the binary, described by `about`) was started with. Exits
/// with clap's message on bad arguments or `--help`.
pub fn parse<C: Args, S: Subcommand>(name: &'static str, about: &'static str) -> (Option<S>, C) {
    let matches = Cli::<C, S>::command().name(name).about(about).get_matches();
    let cli = Cli::<C, S>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    (cli.command, cli.config)
}
