//! `trainer generate --code 1234 --prompt "a red fox" [--style-image ref.png ...] [--grid]`:
//! images from style codes (stage 3 -> indices) or reference images (stage 1 -> indices)
//! through the style-conditioned DiT (stage 2). The pipeline file (`configs/pipeline.yaml`)
//! names the three checkpoints; `--dit`, `--ar`, `--codebook` override it.
//!
//! Writes into `--out`: one PNG per (style, prompt) named `code-1234_p0.png` or
//! `ref0-NAME_p0.png`, `generate.json` (what made each image: checkpoints, indices, prompt,
//! seed, sampler settings) and with `--grid` a contact sheet `grid.png` (rows = codes, then
//! references, each reference first in its row; columns = prompts).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use image::RgbImage;

use crate::config::load_stage;
use crate::config::stages::PipelineConfig;
use crate::sample::folder::write_folder;
use crate::sample::pipeline::{Job, Pipeline};
use crate::stages::dit_generate::{save_png, to_images};

#[derive(Args)]
pub struct GenerateArgs {
    /// A style code, any unsigned 64-bit integer (repeatable: one row each).
    #[arg(long = "code", value_parser = super::sample_style::parse_code)]
    codes: Vec<u64>,
    /// A reference image whose style to take (repeatable: one row each).
    #[arg(long = "style-image")]
    style_images: Vec<PathBuf>,
    /// A prompt (repeatable: one column each).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A file of prompts, one per line (blank lines and lines starting with # are skipped).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Noise seed: the image of prompt c starts from the noise of (seed, c).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Euler steps (default: the DiT checkpoint's `sample.steps`).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale on the style (default: the checkpoint's).
    #[arg(long)]
    guidance: Option<f64>,
    /// Output folder.
    #[arg(long, default_value = "out/generate")]
    out: PathBuf,
    /// Also write the contact sheet `grid.png`.
    #[arg(long)]
    grid: bool,
    /// The pipeline file naming the three checkpoints.
    #[arg(long, default_value = "configs/pipeline.yaml")]
    pipeline: PathBuf,
    /// Override a pipeline key: `--set ema=false` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The DiT checkpoint, instead of the pipeline file's.
    #[arg(long)]
    dit: Option<PathBuf>,
    /// The style generator checkpoint, instead of the pipeline file's.
    #[arg(long)]
    ar: Option<PathBuf>,
    /// The codebook checkpoint, instead of the one the DiT was trained with.
    #[arg(long)]
    codebook: Option<PathBuf>,
    /// Images per sampler call.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

/// Prompts from the flags and the prompt file, in that order.
fn prompts_of(a: &GenerateArgs) -> Result<Vec<String>> {
    let mut out = a.prompts.clone();
    if let Some(f) = &a.prompt_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the prompt file {}", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    if out.is_empty() {
        bail!("give at least one prompt: --prompt \"...\" or --prompt-file FILE");
    }
    Ok(out)
}

/// A file-name-safe label: letters, digits, `-` and `_`, at most 40 characters.
fn label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if a.codes.is_empty() && a.style_images.is_empty() {
        bail!("give a style: --code N (needs the style generator) or --style-image ref.png");
    }
    let prompts = prompts_of(&a)?;
    let mut cfg: PipelineConfig = if a.pipeline.exists() {
        load_stage(&a.pipeline, "pipeline", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?
    } else if a.dit.is_some() {
        PipelineConfig::default()
    } else {
        bail!(
            "no pipeline file {}: write one (see configs/pipeline.yaml) or pass --dit",
            a.pipeline.display()
        );
    };
    cfg.dit = a.dit.clone().unwrap_or(cfg.dit);
    cfg.ar = a.ar.clone().unwrap_or(cfg.ar);
    cfg.codebook = a.codebook.clone().unwrap_or(cfg.codebook);
    let pipe = Pipeline::load(&cfg, !a.codes.is_empty(), |_| {})?;
    let mut sample = pipe.dit.config.sample.clone();
    sample.steps = a.steps.unwrap_or(sample.steps);
    sample.guidance = a.guidance.unwrap_or(sample.guidance);
    let problems = sample.problems("sample");
    if let Some((k, m)) = problems.first() {
        bail!("{k}: {m}");
    }
    let lm = &pipe.dit.config.text.lm;
    for p in &prompts {
        let n = pipe.dit.parts.template.length(p)?;
        if n > lm.max_position_embeddings {
            bail!(
                "the prompt `{p}` takes {n} tokens with the template, the text branch was built \
                 for {}: shorten it",
                lm.max_position_embeddings
            );
        }
    }

    // Style rows: codes first, then references.
    let mut idx_rows = Vec::new();
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut names = Vec::new();
    if !a.codes.is_empty() {
        let (idx, seqs) = pipe.code_indices(&a.codes)?;
        idx_rows.push(idx);
        for (code, seq) in a.codes.iter().zip(seqs) {
            names.push(format!("code-{code}"));
            rows.push(serde_json::json!({"code": code, "indices": seq}));
        }
    }
    let mut refs = Vec::new();
    for (i, path) in a.style_images.iter().enumerate() {
        let img = pipe.reference(path)?;
        let idx = pipe.image_indices(&img)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("ref");
        names.push(format!("ref{i}-{}", label(stem)));
        rows.push(serde_json::json!({
            "reference": path,
            "indices": idx.get(0)?.to_vec1::<u32>()?,
        }));
        idx_rows.push(idx);
        refs.push(img);
    }
    let idx = Tensor::cat(&idx_rows, 0)?;

    let prompt_refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let jobs: Vec<Job> = (0..names.len())
        .flat_map(|row| {
            prompt_refs.iter().enumerate().map(move |(c, p)| Job {
                row,
                prompt: p,
                seed: data::rng::mix(a.seed, c as u64),
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let images = pipe.render(&idx, &jobs, &sample, a.batch, |done, total| {
        eprint!("\r{done}/{total} images");
    })?;
    eprintln!();
    let secs = started.elapsed().as_secs_f64();
    let images = to_images(&images, &pipe.dit.config.data)?;
    let p = prompts.len();
    let files: Vec<String> = (0..images.len())
        .map(|k| format!("{}_p{}.png", names[k / p], k % p))
        .collect();
    write_folder(
        &a.out,
        "cotyle trainer generate",
        &pipe,
        &sample,
        &rows,
        &jobs,
        &images,
        &files,
    )?;
    println!(
        "{} images ({} styles x {p} prompts) in {} ({:.2} s/image)",
        images.len(),
        names.len(),
        a.out.display(),
        secs / images.len() as f64
    );

    if a.grid {
        let codes = a.codes.len();
        let ref_imgs = match refs.is_empty() {
            true => Vec::new(),
            false => to_images(&Tensor::cat(&refs, 0)?, &pipe.dit.config.data)?,
        };
        let sheet_rows: Vec<Vec<RgbImage>> = (0..names.len())
            .map(|r| {
                let mut row = Vec::new();
                if r >= codes {
                    row.push(ref_imgs[r - codes].clone());
                } else if let Some(first) = ref_imgs.first() {
                    // A code has no reference: a white cell keeps the prompt columns aligned.
                    let (w, h) = first.dimensions();
                    row.push(RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255])));
                }
                row.extend(images[r * p..(r + 1) * p].iter().cloned());
                row
            })
            .collect();
        let path = a.out.join("grid.png");
        save_png(&data::preview::sheet(&sheet_rows), &path)?;
        println!(
            "contact sheet {}: rows {}, columns {}",
            path.display(),
            names.join(", "),
            match refs.is_empty() {
                true => format!("prompts {prompts:?}"),
                false => format!("(reference) then prompts {prompts:?}"),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_file_name_safe() {
        assert_eq!(label("my ref.v2"), "my_ref_v2");
        assert_eq!(label(&"x".repeat(50)).len(), 40);
    }
}
