//! `trainer codebook --config F [--set k=v ...] [--resume latest|PATH]`: train the style
//! codebook (stage 1); `trainer codebook eval --checkpoint CKPT [--data PATH]`: held-out
//! retrieval, usage and perplexity of a trained codebook, printed and written as JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::stages::CodebookConfig;
use crate::config::{load_stage, load_stage_text, to_yaml};
use crate::stages::{codebook, codebook_eval, codebook_parts::CodebookParts};
use crate::train::{checkpoint, stop};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CodebookArgs {
    #[command(subcommand)]
    sub: Option<CodebookSub>,
    /// The stage config (YAML with `stage: codebook`).
    #[arg(long, required = false)]
    config: Option<PathBuf>,
    /// Override a key: `--set train.steps=50` (repeatable; values are YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue a run: `latest` (of `train.out_dir/train.run`), a run folder or a checkpoint
    /// folder (`.../step-400`).
    #[arg(long)]
    resume: Option<String>,
}

#[derive(Subcommand)]
enum CodebookSub {
    /// Evaluate a checkpoint: held-out-style retrieval, codebook usage, perplexity.
    Eval(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A checkpoint folder (`step-N`, `final`) or a run folder (its `latest`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A dataset (parquet folder or file, image folder); default: the checkpoint config's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The split to evaluate; default: the config's `data.eval_split`.
    #[arg(long)]
    split: Option<String>,
    /// Evaluate at most this many images (0 = all).
    #[arg(long)]
    max_images: Option<usize>,
    /// Where to write the JSON report; default: `eval-<checkpoint>.json` beside it.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: CodebookArgs) -> Result<()> {
    if let Some(CodebookSub::Eval(e)) = a.sub {
        return eval(e);
    }
    let Some(file) = a.config else {
        bail!("`trainer codebook` needs --config FILE (for example configs/codebook.yaml)");
    };
    let cfg: CodebookConfig =
        load_stage(&file, "codebook", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?;
    let yaml = format!("stage: codebook\n{}", to_yaml(&cfg));
    let run_dir = super::run_dir(&cfg.train, a.resume.as_deref())?;
    stop::install()?;
    tracing::info!("codebook run in {}", run_dir.display());
    let out = codebook::train(&cfg, &yaml, &run_dir, a.resume.as_deref(), &stop::requested)?;
    match &out.last_eval {
        Some(r) => println!(
            "{} at {}: held-out top-1 {:.3}, mAP {:.3} (encoder features {:.3}), codes used {:.1}%, perplexity {:.1}",
            if out.completed { "done" } else { "stopped" },
            out.checkpoint.display(),
            r.top1,
            r.map,
            r.feature_top1,
            100.0 * r.usage,
            r.perplexity
        ),
        None => println!("checkpoint: {}", out.checkpoint.display()),
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    // A run folder means its `latest`: reports and errors name the real checkpoint.
    // A run folder means its `latest`: the report names, and sits beside, the real checkpoint.
    let ck_dir = checkpoint::checkpoint_dir(&a.checkpoint)?;
    let ck = checkpoint::load(&ck_dir)?;
    let source = ck_dir.join("config.yaml");
    let mut cfg: CodebookConfig = load_stage_text(&ck.config_yaml, &source, "codebook")
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    if let Some(d) = a.data {
        cfg.data.root = d;
    }
    if let Some(s) = a.split {
        cfg.data.eval_split = s;
    }
    if let Some(m) = a.max_images {
        cfg.eval.max_images = m;
    }
    let parts = CodebookParts::build(&cfg, Some(&ck.model))?;
    let ds = Arc::new(data::Dataset::open(&cfg.data.root, &cfg.data.eval_split)?);
    let r = codebook_eval::evaluate(&parts, ds, &cfg.data, &cfg.eval)?;
    println!(
        "{} images, {} styles (split `{}` of {}), checkpoint step {}",
        r.images,
        r.styles,
        cfg.data.eval_split,
        cfg.data.root.display(),
        ck.step
    );
    println!("style embeddings: top-1 {:.4}  mAP {:.4}", r.top1, r.map);
    println!(
        "encoder features: top-1 {:.4}  mAP {:.4}",
        r.feature_top1, r.feature_map
    );
    println!(
        "codes used {:.1}%  perplexity {:.1}",
        100.0 * r.usage,
        r.perplexity
    );
    // Beside the checkpoint, not in it: a checkpoint folder holds what state.json lists.
    let out = a.out.unwrap_or_else(|| {
        let name = ck_dir.file_name().unwrap_or_default().to_string_lossy();
        let parent = ck_dir.parent().unwrap_or(Path::new("."));
        parent.join(format!("eval-{name}.json"))
    });
    let json = serde_json::json!({
        "checkpoint": ck_dir,
        "step": ck.step,
        "data": cfg.data.root,
        "split": cfg.data.eval_split,
        "report": r,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("report: {}", out.display());
    Ok(())
}
