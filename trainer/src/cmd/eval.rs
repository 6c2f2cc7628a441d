//! `trainer eval train-descriptor --config F [--set k=v ...] [--resume latest|PATH]`: train
//! the offline style descriptor that evaluation uses when CSD weights are absent (issue 7,
//! item 2; `stages/descriptor.rs`). The evaluation subcommands proper arrive with the rest
//! of issue 7.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::config::stages::DescriptorConfig;
use crate::config::{load_stage, to_yaml};
use crate::stages::descriptor::{self, DESCRIPTOR_DIR};
use crate::train::stop;

#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    sub: Option<EvalSub>,
}

#[derive(Subcommand)]
enum EvalSub {
    /// Train the offline style descriptor (a small CSD on disjoint synthetic styles).
    TrainDescriptor(TrainDescriptorArgs),
}

#[derive(Args)]
struct TrainDescriptorArgs {
    /// The descriptor config (YAML with `stage: descriptor`), e.g. configs/descriptor.yaml.
    #[arg(long)]
    config: PathBuf,
    /// Override a key: `--set train.steps=50` (repeatable; values are YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue a run: `latest` (of `train.out_dir/train.run`), a run folder or a checkpoint
    /// folder (`.../step-100`).
    #[arg(long)]
    resume: Option<String>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    match a.sub {
        Some(EvalSub::TrainDescriptor(t)) => train_descriptor(t),
        None => bail!(
            "`trainer eval` needs a subcommand; for now: `trainer eval train-descriptor --config \
             configs/descriptor.yaml`"
        ),
    }
}

fn train_descriptor(a: TrainDescriptorArgs) -> Result<()> {
    let cfg: DescriptorConfig =
        load_stage(&a.config, "descriptor", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?;
    let yaml = format!("stage: descriptor\n{}", to_yaml(&cfg));
    let run_dir = super::run_dir(&cfg.train, a.resume.as_deref())?;
    stop::install()?;
    tracing::info!("descriptor run in {}", run_dir.display());
    let started = std::time::Instant::now();
    let out = descriptor::train(&cfg, &yaml, &run_dir, a.resume.as_deref(), &stop::requested)?;
    if !out.completed {
        println!("stopped: {}", out.checkpoint.display());
        return Ok(());
    }
    let (_, rec) = descriptor::load(&run_dir.join(DESCRIPTOR_DIR), &candle_core::Device::Cpu)?;
    let t = &rec.trained;
    println!(
        "done in {:.0} s ({} steps): held-out retrieval on {} images of {} disjoint styles",
        started.elapsed().as_secs_f64(),
        rec.steps,
        t.images,
        t.styles
    );
    if let Some(u) = &rec.untrained {
        println!("  untrained: top-1 {:.4}  mAP {:.4}", u.top1, u.map);
    }
    println!("  trained:   top-1 {:.4}  mAP {:.4}", t.top1, t.map);
    println!("descriptor: {}", run_dir.join(DESCRIPTOR_DIR).display());
    Ok(())
}
