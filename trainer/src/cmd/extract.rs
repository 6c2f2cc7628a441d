//! `trainer extract --checkpoint CKPT [--data PATH] [--split train --split test] [--out DIR]`:
//! the index sequences of a dataset under a trained style codebook, and `freq.json` (over the
//! first split), for the AR stage. By default they go into the checkpoint's run folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::load_stage_text;
use crate::config::stages::CodebookConfig;
use crate::stages::codebook_extract::{extract_split, write_freq};
use crate::stages::codebook_parts::CodebookParts;
use crate::train::checkpoint;

#[derive(Args)]
pub struct ExtractArgs {
    /// A codebook checkpoint folder (`step-N`, `final`) or a run folder (its `latest`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The dataset; default: the checkpoint config's `data.root`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Splits to extract (repeatable); default: the config's train and eval splits.
    /// `freq.json` counts the first one.
    #[arg(long = "split")]
    splits: Vec<String>,
    /// Output folder; default: the run folder of the checkpoint.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

pub fn run(a: ExtractArgs) -> Result<()> {
    let ck_dir = checkpoint::checkpoint_dir(&a.checkpoint)?;
    let ck = checkpoint::load(&ck_dir)?;
    let mut cfg: CodebookConfig =
        load_stage_text(&ck.config_yaml, &ck_dir.join("config.yaml"), "codebook")
            .map_err(|p| anyhow::anyhow!("{p}"))?;
    if let Some(d) = &a.data {
        cfg.data.root = d.clone();
    }
    let splits = if a.splits.is_empty() {
        vec![cfg.data.train_split.clone(), cfg.data.eval_split.clone()]
    } else {
        a.splits.clone()
    };
    let out = match &a.out {
        Some(o) => o.clone(),
        None => ck_dir
            .parent()
            .context("the checkpoint folder has no parent (run) folder; pass --out")?
            .to_path_buf(),
    };
    let parts = CodebookParts::build(&cfg, Some(&ck.model))?;
    let size = cfg.data.image_size as usize;
    let tokens = cfg.encoder.vision.tokens(size, size);
    let made_by = serde_json::json!({
        "program": "cotyle trainer extract",
        "version": env!("CARGO_PKG_VERSION"),
        "checkpoint": std::fs::canonicalize(&ck_dir).unwrap_or(ck_dir.clone()),
        "step": ck.step,
        "data": cfg.data.root,
        "image_size": cfg.data.image_size,
    });
    for split in &splits {
        let e = extract_split(
            &parts,
            &cfg.data,
            split,
            tokens,
            a.batch_size,
            &out,
            made_by.clone(),
        )?;
        println!(
            "{}: {} images x {tokens} tokens -> {} shard(s) in {}",
            e.split,
            e.images,
            e.shards.len(),
            out.join(data::indices::INDICES_DIR).display()
        );
    }
    let (path, count) = write_freq(&out, &splits[0])?;
    println!(
        "{}: {count} tokens of split `{}`",
        path.display(),
        splits[0]
    );
    Ok(())
}
