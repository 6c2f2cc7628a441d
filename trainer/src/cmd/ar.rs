//! `trainer ar --config F [--set k=v ...] [--resume latest|PATH]`: train the style generator
//! (stage 3) on the index sequences `trainer extract` wrote.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::load_stage;
use crate::config::stages::ArConfig;
use crate::stages::ar;
use crate::train::stop;

#[derive(Args)]
pub struct ArArgs {
    /// The stage config (YAML with `stage: ar`), for example configs/ar.yaml.
    #[arg(long)]
    config: PathBuf,
    /// Override a key: `--set train.steps=50` (repeatable; values are YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue a run: `latest` (of `train.out_dir/train.run`), a run folder or a checkpoint
    /// folder (`.../step-400`).
    #[arg(long)]
    resume: Option<String>,
}

pub fn run(a: ArArgs) -> Result<()> {
    let cfg: ArConfig = load_stage(&a.config, "ar", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?;
    let run_dir = super::run_dir(&cfg.train, a.resume.as_deref())?;
    stop::install()?;
    tracing::info!("ar run in {}", run_dir.display());
    let out = ar::train(&cfg, &run_dir, a.resume.as_deref(), &stop::requested)?;
    let state = if out.completed { "done" } else { "stopped" };
    match &out.last_eval {
        Some(h) => println!(
            "{state} at {}: held-out loss {:.4} nats/token over {} sequences (unigram entropy of the training indices {:.4})",
            out.checkpoint.display(),
            h.loss,
            h.sequences,
            h.unigram_entropy
        ),
        None => println!("{state}: {}", out.checkpoint.display()),
    }
    Ok(())
}
