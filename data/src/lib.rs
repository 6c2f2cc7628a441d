//! Datasets for cotyle (DESIGN.md, "How data flows"): Hugging Face parquet shards and image
//! folders behind one [`Dataset`] index, the synthetic paired-style generator that every demo
//! and test uses, paired-style sampling, image transforms and a prefetching loader; and the
//! codebook index-sequence shards plus `freq.json` that `trainer extract` writes and
//! `trainer ar` reads ([`indices`]).

mod atomic;
pub mod error;
pub mod rng;

pub mod dataset;
pub mod folder;
pub mod hf;
pub mod indices;
pub mod inspect;
mod parquet_columns;
pub mod parquet_read;
pub mod shard_writer;

pub mod synth;

pub mod config;
pub mod loader;
pub mod pairs;
pub mod preview;
pub mod transform;

pub use dataset::{Dataset, Item};
pub use error::DataError;
