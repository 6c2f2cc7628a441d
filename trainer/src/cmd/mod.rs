//! One file per subcommand: parse arguments, load the config, call into the crates.

pub mod bench;
pub mod bench_block;
pub mod bench_ops;
pub mod codebook;
pub mod config;
pub mod data;
pub mod extract;
