//! `trainer eval --config configs/eval.yaml`: the paper's evaluation protocols (CoTyle, arXiv
//! 2511.10555, Sec. 4.1, Table 1) run through the trained pipeline, scored with CSD or the
//! offline descriptor (`eval_images.rs`), written as `report.json`, `report.md` and `grid.png`.
//!
//! - Code-to-style: codes `first_code .. first_code + codes`, `images_per_code` images each,
//!   image k of code i with prompt `(i * images_per_code + k) mod P` of the split's prompts and
//!   noise seed `mix(seed, i * images_per_code + k)`. Consistency and diversity over them.
//! - Image-conditioned: `references` (reference image, prompt) pairs from the split, the
//!   reference cycling over its styles (first image of each style, then the second, ...) and
//!   the prompt of the next item; mean similarity to the own reference and to the others.
//! - Ablation: with `ablate_suppression` the code set is generated again with the AR
//!   sampler's high-frequency suppression off (the paper's diversity 0.7764 vs 0.7488).
//!
//! Every image comes from seeds in the config: a rerun gives the same folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use data::rng::mix;
use data::Dataset;

use super::dit_generate::{save_png, to_images};
use super::eval_images::{load_clip, score_folder, Descriptor, FolderScores, Metrics};
use crate::config::rules::Rules;
use crate::config::stages::PipelineConfig;
use crate::config::Validate;
use crate::sample::folder::write_folder;
use crate::sample::pipeline::{Job, Pipeline};

/// `stage: eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// The three checkpoints (as in configs/pipeline.yaml).
    pub pipeline: PipelineConfig,
    /// Dataset whose split gives the prompts and the references.
    pub data: PathBuf,
    pub split: String,
    /// Codes of the code-to-style protocol (paper: 500) and images per code (paper: 4).
    pub codes: usize,
    pub first_code: u64,
    pub images_per_code: usize,
    /// (reference, prompt) pairs of the image-conditioned protocol (paper: 500); 0 skips it.
    pub references: usize,
    /// Also generate the codes without high-frequency suppression.
    pub ablate_suppression: bool,
    pub seed: u64,
    /// What to score: csd (style scores), clip-t, quality, or all; a CLIP score without CLIP
    /// weights is skipped with a message in the report.
    pub metric: String,
    /// CSD ViT-L/14 weights (scripts/convert_csd.py); empty: the offline descriptor.
    pub csd: PathBuf,
    /// CLIP ViT-L/14 (a folder with Hugging Face `model.safetensors` and `tokenizer.json`)
    /// for CLIP-T and quality; empty: they are skipped.
    pub clip: PathBuf,
    /// The offline descriptor (a `trainer eval train-descriptor` run).
    pub descriptor: PathBuf,
    /// Where the images and reports go.
    pub out_dir: PathBuf,
    /// Images per sampler call.
    pub batch: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            pipeline: PipelineConfig::default(),
            data: "data/synth".into(),
            split: "test".into(),
            codes: 500,
            first_code: 0,
            images_per_code: 4,
            references: 500,
            ablate_suppression: true,
            seed: 0,
            metric: "all".into(),
            csd: PathBuf::new(),
            clip: PathBuf::new(),
            descriptor: "checkpoints/descriptor/demo".into(),
            out_dir: "out/eval".into(),
            batch: 16,
        }
    }
}

impl Validate for EvalConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        let mut inner = Vec::new();
        self.pipeline.validate(&mut inner);
        out.extend(inner.into_iter().map(|(k, m)| (format!("pipeline.{k}"), m)));
        let mut r = Rules::new("");
        r.need(
            self.codes >= 2,
            "codes",
            "at least 2 codes: diversity compares codes",
        );
        r.need(
            self.images_per_code >= 2,
            "images_per_code",
            "at least 2: consistency compares images of one code",
        );
        r.need(
            self.references == 0 || self.references >= 2,
            "references",
            "0 (skip) or at least 2",
        );
        r.need(self.batch > 0, "batch", "must be at least 1");
        if let Err(e) = Metrics::parse(&self.metric) {
            r.need(false, "metric", e.to_string());
        }
        out.extend(r.into_vec());
    }
}

/// What one evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub scores: FolderScores,
    /// Code scores with suppression off, when ablated.
    pub without_suppression: Option<FolderScores>,
    pub seconds: f64,
}

/// Runs the protocols of `cfg`; writes `report.json`, `report.md`, `grid.png` and the image
/// folders under `cfg.out_dir`.
pub fn run(cfg: &EvalConfig) -> Result<EvalReport> {
    let started = std::time::Instant::now();
    let metrics = Metrics::parse(&cfg.metric)?;
    let desc = match metrics.csd {
        true => Some(Descriptor::load(
            (!cfg.csd.as_os_str().is_empty()).then_some(cfg.csd.as_path()),
            &cfg.descriptor,
        )?),
        false => None,
    };
    let clip = match metrics.needs_clip() {
        true => load_clip(&cfg.clip),
        false => Err(String::new()),
    };
    let ds = Dataset::open(&cfg.data, &cfg.split)?;
    let mut prompts: Vec<&str> = ds.items.iter().map(|i| i.prompt.as_str()).collect();
    prompts.sort_unstable();
    prompts.dedup();
    if prompts.is_empty() {
        bail!(
            "{} split `{}` has no prompts",
            cfg.data.display(),
            cfg.split
        );
    }
    let out = &cfg.out_dir;
    let main = out.join("images");
    generate_set(cfg, &ds, &prompts, true, &main)?;
    let scores = score_folder(&main, metrics, desc.as_ref(), &clip)?;
    let without_suppression = if cfg.ablate_suppression {
        let dir = out.join("images-no-suppression");
        let no_refs = EvalConfig {
            references: 0,
            ..cfg.clone()
        };
        generate_set(&no_refs, &ds, &prompts, false, &dir)?;
        let style_only = Metrics {
            clip_t: false,
            quality: false,
            ..metrics
        };
        Some(score_folder(&dir, style_only, desc.as_ref(), &clip)?)
    } else {
        None
    };
    let report = EvalReport {
        scores,
        without_suppression,
        seconds: started.elapsed().as_secs_f64(),
    };
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = out.join("report.md");
    std::fs::write(&md, markdown(cfg, &report))
        .with_context(|| format!("writing {}", md.display()))?;
    Ok(report)
}

/// Generates the protocol's images into `dir` (codes, then references), with or without the
/// AR sampler's suppression, and a contact sheet of the first codes into `dir/../grid.png`
/// (suppressed set only).
fn generate_set(
    cfg: &EvalConfig,
    ds: &Dataset,
    prompts: &[&str],
    suppression: bool,
    dir: &Path,
) -> Result<()> {
    let pipe = Pipeline::load(&cfg.pipeline, true, |s| {
        s.suppression.enabled &= suppression
    })?;
    let sample = pipe.dit.config.sample.clone();
    let codes: Vec<u64> = (0..cfg.codes as u64).map(|i| cfg.first_code + i).collect();
    let (code_idx, seqs) = pipe.code_indices(&codes)?;
    let mut styles: Vec<serde_json::Value> = codes
        .iter()
        .zip(&seqs)
        .map(|(c, s)| serde_json::json!({"code": c, "indices": s}))
        .collect();
    let k = cfg.images_per_code;
    let mut jobs = Vec::new();
    let mut files = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        for j in 0..k {
            let n = (i * k + j) as u64;
            jobs.push(Job {
                row: i,
                prompt: prompts[(i * k + j) % prompts.len()],
                seed: mix(cfg.seed, n),
            });
            files.push(format!("code-{code}_{j}.png"));
        }
    }
    let mut idx_rows = vec![code_idx];
    let by_style = ds.items_of_style();
    let mut picked = Vec::new();
    'pick: for round in 0.. {
        let before = picked.len();
        for items in &by_style {
            if picked.len() == cfg.references {
                break 'pick;
            }
            if let Some(&item) = items.get(round) {
                picked.push(item);
            }
        }
        if picked.len() == before {
            break;
        }
    }
    let ref_dir = dir.join("references");
    if !picked.is_empty() {
        std::fs::create_dir_all(&ref_dir)
            .with_context(|| format!("creating {}", ref_dir.display()))?;
    }
    for (r, &item) in picked.iter().enumerate() {
        let it = &ds.items[item];
        let img = ds.image(item)?;
        let path = ref_dir.join(format!("ref{r}-item{item}.png"));
        save_png(&img, &path)?;
        let x = pipe.reference(&path)?;
        let idx = pipe.image_indices(&x)?;
        styles.push(serde_json::json!({
            "reference": path,
            "style": it.style,
            "indices": idx.get(0)?.to_vec1::<u32>()?,
        }));
        idx_rows.push(idx);
        let n = (codes.len() * k + r) as u64;
        jobs.push(Job {
            row: codes.len() + r,
            prompt: prompts[(r + 1) % prompts.len()],
            seed: mix(cfg.seed, n),
        });
        files.push(format!("ref{r}.png"));
    }
    let idx = Tensor::cat(&idx_rows, 0)?;
    let what = if suppression {
        ""
    } else {
        " (suppression off)"
    };
    let images = pipe.render(&idx, &jobs, &sample, cfg.batch, |done, total| {
        eprint!("\r{done}/{total} images{what}");
    })?;
    eprintln!();
    let images = to_images(&images, &pipe.dit.config.data)?;
    write_folder(
        dir,
        "cotyle trainer eval",
        &pipe,
        &sample,
        &styles,
        &jobs,
        &images,
        &files,
    )?;
    if suppression {
        let rows: Vec<Vec<image::RgbImage>> = images[..codes.len().min(8) * k]
            .chunks(k)
            .map(|c| c.to_vec())
            .collect();
        let grid = dir.parent().unwrap_or(dir).join("grid.png");
        save_png(&data::preview::sheet(&rows), &grid)?;
    }
    Ok(())
}

/// The report as a Markdown table beside the paper's Table 1 figures.
fn markdown(cfg: &EvalConfig, r: &EvalReport) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
    let c = r.scores.codes.as_ref();
    let refs = r.scores.references.as_ref();
    let off = r
        .without_suppression
        .as_ref()
        .and_then(|s| s.codes.as_ref());
    let mut s = String::new();
    s += "# cotyle evaluation\n\n";
    s += &format!(
        "Style descriptor: {}. DiT {}, style generator {}.\n\n",
        r.scores.descriptor,
        cfg.pipeline.dit.display(),
        cfg.pipeline.ar.display()
    );
    s += &format!(
        "Protocol: {} codes x {} images; {} reference-prompt pairs from `{}` split `{}`; seed {}.\n\n",
        cfg.codes,
        cfg.images_per_code,
        cfg.references,
        cfg.data.display(),
        cfg.split,
        cfg.seed
    );
    s += "| metric | cotyle (this run) | CoTyle paper (Table 1) |\n|---|---|---|\n";
    s += &format!(
        "| code-to-style consistency | {} | 0.6007 |\n",
        f(c.map(|c| c.consistency))
    );
    s += &format!(
        "| code-to-style diversity | {} | 0.7764 |\n",
        f(c.map(|c| c.diversity))
    );
    s += &format!(
        "| consistency margin (consistency - (1 - diversity)) | {} | 0.3771 |\n",
        f(c.map(|c| c.margin()))
    );
    s += &format!(
        "| image-conditioned consistency (to own reference) | {} | 0.5791 |\n",
        f(refs.map(|r| r.matched))
    );
    s += &format!(
        "| similarity to the other references | {} | - |\n",
        f(refs.map(|r| r.mismatched))
    );
    s += &format!(
        "| CLIP-T (prompt alignment) | {} | - |\n",
        f(r.scores.clip_t)
    );
    s += &format!(
        "| quality (CLIP-IQA style) | {} | - |\n",
        f(r.scores.quality)
    );
    if cfg.ablate_suppression {
        s += &format!(
            "| without suppression: consistency | {} | - |\n",
            f(off.map(|c| c.consistency))
        );
        s += &format!(
            "| without suppression: diversity | {} | 0.7488 |\n",
            f(off.map(|c| c.diversity))
        );
    }
    for why in &r.scores.skipped {
        s += &format!("\nSkipped: {why}.\n");
    }
    s += &format!(
        "\nThe paper's figures use CSD on its own models and prompts; these use the descriptor \
         above on this run's data: compare the pattern, not the digits. {:.0} s.\n",
        r.seconds
    );
    s
}
