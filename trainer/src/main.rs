//! `trainer`: the one binary of cotyle (DESIGN.md). Parses the command line and hands each
//! subcommand to its module in `cmd/`; nothing else happens here.

mod cmd;
mod config;
mod models;
mod sample;
mod stages;
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
    /// Stage 1: train the style codebook; `codebook eval` evaluates a checkpoint.
    Codebook(cmd::codebook::CodebookArgs),
    /// Index sequences of a dataset under a trained codebook (+ freq.json), for the AR stage.
    Extract(cmd::extract::ExtractArgs),
    /// Stage 2: train the style-conditioned diffusion transformer.
    Dit(cmd::dit::DitArgs),
    /// Stage 3: train the autoregressive style generator on extracted index sequences.
    Ar(cmd::ar::ArArgs),
    /// A style code's index sequence (or several codes' interpolated) from a trained generator.
    SampleStyle(cmd::sample_style::SampleStyleArgs),
    /// Images from style codes or reference images through the three trained stages.
    Generate(cmd::generate::GenerateArgs),
    /// Evaluation; `eval train-descriptor` trains the offline style descriptor.
    Eval(cmd::eval::EvalArgs),
    /// The whole system in one command: data, the three stages, descriptor, grid, report.
    Pipeline(cmd::pipeline::PipelineArgs),
    /// Benchmarks (speed is measured here, never asserted in tests).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Data(c) => cmd::data::run(c),
        Command::Config(c) => cmd::config::run(c),
        Command::Codebook(a) => cmd::codebook::run(a),
        Command::Extract(a) => cmd::extract::run(a),
        Command::Dit(a) => cmd::dit::run(a),
        Command::Ar(a) => cmd::ar::run(a),
        Command::SampleStyle(a) => cmd::sample_style::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Pipeline(a) => cmd::pipeline::run(a),
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

/// Batches and activations are large (a 64x3x224x224 f32 batch is 38 MB), above the 32 MiB
/// ceiling of glibc's dynamic mmap threshold, so by default each is mmapped, page-faulted in,
/// zeroed by the kernel and unmapped again. Measured with `trainer bench data` at 256 px: 60%
/// of the run was kernel time and throughput halved. Serving them from the heap, and keeping
/// up to 256 MiB of freed heap before trimming, lets the pages be reused. One arena: the
/// per-thread arenas grow in 64 MiB sub-heaps that cannot hold a few batch buffers, so
/// buffers built on loader threads were mmapped afresh anyway (pair loader 1.7x slower).
/// Our threads allocate rarely and in large pieces, so one arena costs no contention.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
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
