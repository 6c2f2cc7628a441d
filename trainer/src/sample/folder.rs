//! A folder of generated images with its manifest `generate.json`: what `trainer generate` and
//! `trainer eval` write, and what `trainer eval --images` reads back (`stages/eval_images.rs`).
//!
//! The manifest names the checkpoints (DiT with step and EMA, codebook, AR with its sampling
//! settings), the DiT sampler settings, and two lists: `styles` (one row per style, `code` or
//! `reference`, with its index sequence) and `images` (file, style row, prompt, noise seed).

use std::path::Path;

use anyhow::{Context, Result};
use image::RgbImage;
use serde_json::{json, Value};

use super::pipeline::{Job, Pipeline};
use crate::stages::dit_config::DitSampleConfig;
use crate::stages::dit_generate::save_png;

/// The name of the manifest.
pub const MANIFEST: &str = "generate.json";

/// Writes `images` (one per job, in job order) as `files` into `dir`, then the manifest;
/// `styles` are the rows the jobs point at, `program` names the writer.
#[allow(clippy::too_many_arguments)]
pub fn write_folder(
    dir: &Path,
    program: &str,
    pipe: &Pipeline,
    sample: &DitSampleConfig,
    styles: &[Value],
    jobs: &[Job],
    images: &[RgbImage],
    files: &[String],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut listed = Vec::with_capacity(images.len());
    for ((img, job), file) in images.iter().zip(jobs).zip(files) {
        save_png(img, &dir.join(file))?;
        listed.push(json!({
            "file": file,
            "row": job.row,
            "prompt": job.prompt,
            "seed": job.seed,
        }));
    }
    let ar = pipe
        .styles
        .as_ref()
        .map(|g| json!({"checkpoint": g.checkpoint, "step": g.step, "sampling": g.sample}));
    let manifest = json!({
        "program": program,
        "version": env!("CARGO_PKG_VERSION"),
        "dit": {
            "checkpoint": pipe.dit.checkpoint,
            "step": pipe.dit.step,
            "ema": pipe.dit.ema,
            "codebook": pipe.dit.config.codebook,
        },
        "ar": ar,
        "sample": sample,
        "styles": styles,
        "images": listed,
    });
    let path = dir.join(MANIFEST);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
