//! `trainer bench data`: decode + resize + normalise throughput from parquet, the Rust side of
//! `benches/data_python.py` (pyarrow + Pillow + numpy on the same shards and settings);
//! `trainer bench ops` lives in `bench_ops.rs`, `trainer bench block` in `bench_block.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use data::config::{Crop, DataConfig};
use data::loader::{PairLoader, SequentialLoader};
use data::pairs::{Cursor, PairPlan};
use data::transform::Transform;
use data::Dataset;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Images per second through decode + resize + normalise, streaming a split once per pass.
    Data(BenchDataArgs),
    /// Fused `kernels` ops against their slow candle references (forward, forward+backward),
    /// and VQ nearest-code throughput against matmul + argmax.
    Ops(super::bench_ops::BenchOpsArgs),
    /// One transformer block's training step: fused kernels vs slow candle ops vs PyTorch.
    Block(super::bench_block::BenchBlockArgs),
    /// Style-generator sampling: codes/s and tokens/s, demo and full size, against PyTorch.
    Ar(super::bench_ar::BenchArArgs),
    /// The demo MMDiT: training images/s and sampling s/image, against PyTorch.
    Dit(super::bench_dit::BenchDitArgs),
}

#[derive(Args)]
pub struct BenchDataArgs {
    /// A parquet folder or file.
    #[arg(long)]
    root: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Decode threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Output side; the short side is resized to it and the centre cropped. 0 = 7/8 of the
    /// source side (64 -> 56, 256 -> 224), so the resize does real work.
    #[arg(long, default_value_t = 0)]
    size: u32,
    /// Passes over the split; the first is also timed (the page cache is warm after it).
    #[arg(long, default_value_t = 2)]
    passes: usize,
    /// Measure the training loader instead: one epoch of style pairs (two images per pair)
    /// through the block cache and prefetch queue.
    #[arg(long)]
    pairs: bool,
    /// Block cache budget for --pairs, in MiB.
    #[arg(long, default_value_t = 128)]
    cache_mb: usize,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Data(a) => bench_data(a),
        BenchCommand::Ops(a) => super::bench_ops::run(a),
        BenchCommand::Block(a) => super::bench_block::run(a),
        BenchCommand::Ar(a) => super::bench_ar::run(a),
        BenchCommand::Dit(a) => super::bench_dit::run(a),
    }
}

fn bench_data(a: BenchDataArgs) -> Result<()> {
    let ds = Arc::new(Dataset::open(&a.root, &a.split)?);
    let size = if a.size > 0 {
        a.size
    } else {
        source_side(&ds)? * 7 / 8
    };
    let cfg = DataConfig {
        threads: a.threads,
        ..DataConfig::default()
    };
    let transform = Transform {
        size,
        resize: size,
        crop: Crop::Center,
        mean: cfg.mean,
        std: cfg.std,
    };
    println!(
        "bench data: {} images of split `{}` in {}, output {size}x{size}, {} threads, batch {}",
        ds.items.len(),
        a.split,
        a.root.display(),
        a.threads,
        a.batch
    );
    if a.pairs {
        return bench_pairs(
            &a,
            ds,
            DataConfig {
                image_size: size,
                cache_mb: a.cache_mb,
                ..cfg
            },
        );
    }
    let mut best = 0f64;
    for pass in 1..=a.passes.max(1) {
        let loader =
            SequentialLoader::new(ds.clone(), &cfg, a.batch)?.with_transform(transform.clone());
        let started = Instant::now();
        let mut images = 0usize;
        let mut checksum = 0f64;
        for batch in loader {
            let batch = batch?;
            images += batch.items.len();
            // Touch the result so nothing is optimised away, and print it for comparison.
            checksum += batch.images.mean_all()?.to_scalar::<f32>()? as f64;
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = images as f64 / secs;
        best = best.max(rate);
        println!("pass {pass}: {images} images in {secs:.2}s = {rate:.0} images/s (checksum {checksum:.4})");
    }
    println!(
        "best: {best:.0} images/s; peak RSS {:.0} MB",
        peak_rss_mb().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// One epoch of the pair loader, as a training loop would draw it.
fn bench_pairs(a: &BenchDataArgs, ds: Arc<Dataset>, cfg: DataConfig) -> Result<()> {
    let plan = PairPlan {
        seed: 0,
        rank: 0,
        world: 1,
        batch_size: a.batch,
        negative_fraction: cfg.negative_fraction,
        window_blocks: cfg.window_blocks,
    };
    let mut loader = PairLoader::new(ds, &cfg, plan, Cursor::default())?;
    let started = Instant::now();
    let mut images = 0usize;
    for _ in 0..loader.batches_per_epoch {
        let batch = loader.next_batch()?;
        images += 2 * batch.pairs.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pairs: {} batches, {images} images in {secs:.2}s = {:.0} images/s (cache {} MiB); peak RSS {:.0} MB",
        loader.batches_per_epoch,
        images as f64 / secs,
        cfg.cache_mb,
        peak_rss_mb().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Side of the first image, to derive the default output size.
fn source_side(ds: &Dataset) -> Result<u32> {
    let first = ds.read_block(0)?;
    let bytes = first
        .first()
        .context("the split is empty")?
        .as_ref()
        .map_err(Clone::clone)?;
    let img = data::dataset::decode_rgb(bytes, &ds.locate(0))?;
    Ok(img.width().min(img.height()))
}

/// Peak resident memory of this process (Linux `VmHWM`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A PyTorch twin's figures: runs `python script ARGS... --json` and reads the one JSON object
/// it prints; the error is why there are none (no torch, a failed run: its last stderr line).
pub fn torch_twin(
    python: &str,
    script: &std::path::Path,
    args: &[(&str, String)],
) -> std::result::Result<TwinOutput, String> {
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script);
    for (flag, value) in args {
        cmd.args([*flag, value.as_str()]);
    }
    let out = cmd
        .arg("--json")
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.trim().lines().last().unwrap_or("failed").to_string());
    }
    let json = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable output from {}: {e}", script.display()))?;
    Ok(TwinOutput(json))
}

/// What a PyTorch twin printed.
pub struct TwinOutput(serde_json::Value);

impl TwinOutput {
    /// A number the twin reported, or an error naming the key.
    pub fn number(&self, key: &str) -> std::result::Result<f64, String> {
        self.0[key]
            .as_f64()
            .ok_or_else(|| format!("no `{key}` in the torch output"))
    }
}
