//! `trainer`: the one binary of cotyle (DESIGN.md). Parses the command line and hands each
//! subcommand to its module in `cmd/`; nothing else happens here.

mod cmd;
mod config;
#[allow(dead_code)] // the loop pieces are used by the stages that arrive with issues 4-6
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "cotyle: code-to-style training, evaluation and tools"
)]
struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Datasets: synthesise, inspect, preview.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Show or check a config file with its overrides resolved.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Benchmarks (speed is measured here, never asserted in tests).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Data(c) => cmd::data::run(c),
        Command::Config(c) => cmd::config::run(c),
        Command::Bench(c) => cmd::bench::run(c),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
