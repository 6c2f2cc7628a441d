//! `trainer dit --config F [--set k=v ...] [--resume latest|PATH]`: train the style-conditioned
//! diffusion transformer (stage 2) on same-style pairs, conditioned through the frozen stage-1
//! codebook named by the config's `codebook:`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::load_stage;
use crate::config::stages::DitConfig;
use crate::stages::dit;
use crate::train::stop;

#[derive(Args)]
pub struct DitArgs {
    /// The stage config (YAML with `stage: dit`), for example configs/dit.yaml.
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

pub fn run(a: DitArgs) -> Result<()> {
    let cfg: DitConfig =
        load_stage(&a.config, "dit", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?;
    let run_dir = super::run_dir(&cfg.train, a.resume.as_deref())?;
    stop::install()?;
    tracing::info!("dit run in {}", run_dir.display());
    let out = dit::train(&cfg, &run_dir, a.resume.as_deref(), &stop::requested)?;
    let state = if out.completed { "done" } else { "stopped" };
    match out.last_eval {
        Some(e) => println!(
            "{state} at {}: held-out flow loss {:.4}",
            out.checkpoint.display(),
            e.loss
        ),
        None => println!("{state}: {}", out.checkpoint.display()),
    }
    if let Some(g) = out.last_eval.and_then(|e| e.style_gap) {
        println!(
            "held-out style check: similarity to own reference {:.3}, to other references {:.3} (gap {:.3})",
            g.matched,
            g.mismatched,
            g.gap()
        );
    }
    Ok(())
}
