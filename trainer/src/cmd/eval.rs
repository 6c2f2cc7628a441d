//! `trainer eval --metric csd --images DIR [--csd F | --descriptor RUN]`: style scores of a
//! folder `trainer generate` wrote (`stages/eval_images.rs`), into `DIR/report.json`.
//! `trainer eval train-descriptor --config F [--set k=v ...] [--resume latest|PATH]`: train
//! the offline style descriptor that evaluation uses when CSD weights are absent (issue 7,
//! item 2; `stages/descriptor.rs`). Generating with the paper's protocols, CLIP-T and quality
//! arrive with the rest of issue 7.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::config::stages::DescriptorConfig;
use crate::config::{load_stage, to_yaml};
use crate::stages::descriptor::{self, DESCRIPTOR_DIR};
use crate::stages::eval_images;
use crate::stages::eval_protocol::{self, EvalConfig};
use crate::train::stop;

#[derive(Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    sub: Option<EvalSub>,
    /// Run the paper's protocols through the pipeline (YAML with `stage: eval`), e.g.
    /// configs/eval.yaml.
    #[arg(long, conflicts_with = "images")]
    config: Option<PathBuf>,
    /// Override a key of --config: `--set codes=500` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// What to score: `csd` (style consistency, diversity, reference similarity), `clip-t`,
    /// `quality` or `all` (default: the config's `metric`, or `csd` for --images).
    #[arg(long)]
    metric: Option<String>,
    /// CLIP ViT-L/14 for clip-t and quality (a folder with Hugging Face model.safetensors and
    /// tokenizer.json); without it they are skipped with a message.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// A folder written by `trainer generate` (its `generate.json` lists the images).
    #[arg(long)]
    images: Option<PathBuf>,
    /// CSD ViT-L/14 weights (safetensors from scripts/convert_csd.py); without them the
    /// offline descriptor is used.
    #[arg(long)]
    csd: Option<PathBuf>,
    /// The offline descriptor (a `trainer eval train-descriptor` run folder).
    #[arg(long, default_value = "checkpoints/descriptor/demo")]
    descriptor: PathBuf,
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
        None => match (&a.images, &a.config) {
            (_, Some(config)) => protocols(&a, config),
            (Some(dir), None) => score_images(&a, dir),
            (None, None) => bail!(
                "give a config (`trainer eval --config configs/eval.yaml`), a folder to score (`trainer eval --metric csd --images DIR`, DIR written by \
                 `trainer generate`) or `trainer eval train-descriptor --config \
                 configs/descriptor.yaml`"
            ),
        },
    }
}

fn protocols(a: &EvalArgs, config: &std::path::Path) -> Result<()> {
    let mut cfg: EvalConfig =
        load_stage(config, "eval", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?;
    if let Some(m) = &a.metric {
        cfg.metric = m.clone();
    }
    if let Some(c) = &a.clip {
        cfg.clip = c.clone();
    }
    let report = eval_protocol::run(&cfg)?;
    print!(
        "{}",
        std::fs::read_to_string(cfg.out_dir.join("report.md")).unwrap_or_default()
    );
    println!(
        "reports: {} and report.md; grid: {}; {:.0} s",
        cfg.out_dir.join("report.json").display(),
        cfg.out_dir.join("grid.png").display(),
        report.seconds
    );
    Ok(())
}

fn score_images(a: &EvalArgs, dir: &std::path::Path) -> Result<()> {
    let metrics = eval_images::Metrics::parse(a.metric.as_deref().unwrap_or("csd"))?;
    let desc = match metrics.csd {
        true => Some(eval_images::Descriptor::load(
            a.csd.as_deref(),
            &a.descriptor,
        )?),
        false => None,
    };
    let clip = match metrics.needs_clip() {
        true => eval_images::load_clip(a.clip.as_deref().unwrap_or(std::path::Path::new(""))),
        false => Err(String::new()),
    };
    let s = eval_images::score_folder(dir, metrics, desc.as_ref(), &clip)?;
    if metrics.csd {
        println!("style descriptor: {}", s.descriptor);
    }
    if let Some(v) = s.clip_t {
        println!("CLIP-T: {v:.4}");
    }
    if let Some(v) = s.quality {
        println!("quality: {v:.4}");
    }
    for why in &s.skipped {
        println!("skipped {why}");
    }
    if let Some(c) = &s.codes {
        println!(
            "codes: consistency {:.4}, diversity {:.4} (margin {:.4}; {} codes, {} images)",
            c.consistency,
            c.diversity,
            c.margin(),
            c.codes,
            c.images
        );
    }
    if let Some(r) = &s.references {
        println!(
            "references: to own reference {:.4}, to the others {:.4} (gap {:.4}; {} images, {} references)",
            r.matched,
            r.mismatched,
            r.matched - r.mismatched,
            r.images,
            r.references
        );
    }
    if metrics.csd && s.codes.is_none() && s.references.is_none() {
        bail!(
            "{}: nothing to score: it needs 2 codes with 2 images each, or 2 references",
            dir.display()
        );
    }
    let out = dir.join("report.json");
    std::fs::write(&out, serde_json::to_string_pretty(&s)? + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    println!("report: {}", out.display());
    Ok(())
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
