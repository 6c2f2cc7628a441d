//! Style scores of a folder that `trainer generate` wrote (issue 7, "scoring an existing
//! folder of images"): its `generate.json` says which style row made each image and, for
//! reference rows, which reference. Images from codes give code-to-style consistency and
//! diversity (CoTyle, arXiv 2511.10555, Sec. 4.1; `eval::style_metrics`); images from
//! references give image-conditioned consistency and the matched/mismatched style gap.
//!
//! Style embeddings come from CSD (`--csd`, the real weights converted by
//! `scripts/convert_csd.py`) or, when those are absent, from the offline descriptor of
//! `trainer eval train-descriptor`; the report names which.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde::Serialize;

use eval::csd::{preprocess_batch, Csd, CsdConfig};
use eval::{matched_mismatched, style_scores, StyleScores};
use eval::{Clip, ClipConfig};

use super::descriptor;

/// Images embedded per forward.
const BATCH: usize = 16;

/// The style descriptor in use and what it is.
pub struct Descriptor {
    pub model: Csd,
    /// For reports: "CSD ViT-L/14 (F)" or "offline descriptor (DIR, top-1 ...)".
    pub name: String,
}

impl Descriptor {
    /// CSD from `csd` (ViT-L/14 safetensors) if given, else the offline descriptor `offline`.
    pub fn load(csd: Option<&Path>, offline: &Path) -> Result<Self> {
        let dev = Device::Cpu;
        if let Some(f) = csd {
            let model = Csd::from_safetensors(&CsdConfig::vit_l14(), f, DType::F32, &dev)?;
            return Ok(Descriptor {
                model,
                name: format!("CSD ViT-L/14 ({})", f.display()),
            });
        }
        let (model, rec) = descriptor::load(offline, &dev).with_context(|| {
            format!(
                "no CSD weights given (--csd) and no offline descriptor at {}: train one with \
                 `trainer eval train-descriptor --config configs/descriptor.yaml`",
                offline.display()
            )
        })?;
        Ok(Descriptor {
            model,
            name: format!(
                "offline descriptor ({}; held-out top-1 {:.3}, mAP {:.3})",
                offline.display(),
                rec.trained.top1,
                rec.trained.map
            ),
        })
    }

    /// L2-normalised style embeddings of image files, row-major (N, D), and D.
    pub fn embed_files(&self, files: &[PathBuf]) -> Result<(Vec<f32>, usize)> {
        let size = self.model.config().image_size;
        let mut out = Vec::new();
        for chunk in files.chunks(BATCH) {
            let imgs = open_images(chunk.iter())?;
            let x = preprocess_batch(&imgs, size, self.model.device())?;
            out.extend(self.model.style(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((out, self.model.config().out_dim))
    }
}

/// Which scores to compute (`--metric csd|clip-t|quality|all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub csd: bool,
    pub clip_t: bool,
    pub quality: bool,
}

impl Metrics {
    pub fn parse(s: &str) -> Result<Self> {
        let (csd, clip_t, quality) = match s {
            "csd" => (true, false, false),
            "clip-t" => (false, true, false),
            "quality" => (false, false, true),
            "all" => (true, true, true),
            other => bail!("--metric {other}: one of csd, clip-t, quality, all"),
        };
        Ok(Metrics {
            csd,
            clip_t,
            quality,
        })
    }

    pub fn needs_clip(&self) -> bool {
        self.clip_t || self.quality
    }
}

/// CLIP ViT-L/14 from `dir` (`model.safetensors`, `tokenizer.json`, Hugging Face layout), or
/// why there is none (CLIP-T and quality are then skipped with that message).
pub fn load_clip(dir: &Path) -> std::result::Result<Clip, String> {
    if dir.as_os_str().is_empty() {
        return Err(
            "no CLIP weights given (`clip:` / --clip DIR with model.safetensors and \
             tokenizer.json)"
                .into(),
        );
    }
    let (w, t) = (dir.join("model.safetensors"), dir.join("tokenizer.json"));
    if !w.exists() || !t.exists() {
        return Err(format!(
            "{} lacks model.safetensors or tokenizer.json",
            dir.display()
        ));
    }
    Clip::load(&ClipConfig::vit_l14(), &w, &t, DType::F32, &Device::Cpu)
        .map_err(|e| format!("loading CLIP from {}: {e:#}", dir.display()))
}

/// Image files as RGB, each error naming its file.
fn open_images<'a>(files: impl Iterator<Item = &'a PathBuf>) -> Result<Vec<image::RgbImage>> {
    files
        .map(|f| {
            Ok(image::open(f)
                .with_context(|| format!("reading {}", f.display()))?
                .to_rgb8())
        })
        .collect()
}

/// The scores of one generated folder.
#[derive(Debug, Clone, Serialize)]
pub struct FolderScores {
    pub descriptor: String,
    /// Mean CLIP-T (cosine of CLIP image and prompt embeddings) over every image.
    pub clip_t: Option<f64>,
    /// Mean CLIP-IQA-style quality over every image.
    pub quality: Option<f64>,
    /// Scores asked for but skipped, and why.
    pub skipped: Vec<String>,
    /// Over the rows made from codes (at least 2 codes of at least 2 images each).
    pub codes: Option<StyleScores>,
    /// Over the rows made from references (at least 2 references).
    pub references: Option<ReferenceScores>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReferenceScores {
    /// Image-conditioned consistency: mean cosine of each image to its own reference.
    pub matched: f64,
    /// Mean cosine of each image to the other references.
    pub mismatched: f64,
    pub images: usize,
    pub references: usize,
}

/// Scores the images `generate.json` in `dir` lists: style scores with `desc`, CLIP-T and
/// quality with `clip` (or the reason it is missing) as `metrics` asks.
pub fn score_folder(
    dir: &Path,
    metrics: Metrics,
    desc: Option<&Descriptor>,
    clip: &std::result::Result<Clip, String>,
) -> Result<FolderScores> {
    let path = dir.join("generate.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: --images takes a folder written by `trainer generate`",
            path.display()
        )
    })?;
    let m: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let (Some(styles), Some(images)) = (m["styles"].as_array(), m["images"].as_array()) else {
        bail!("{} has no `styles` and `images` lists", path.display());
    };
    // Per image: its file and style row.
    let mut rows_of = Vec::with_capacity(images.len());
    for (i, im) in images.iter().enumerate() {
        let (Some(file), Some(row)) = (im["file"].as_str(), im["row"].as_u64()) else {
            bail!("{}: images[{i}] lacks `file` or `row`", path.display());
        };
        if row as usize >= styles.len() {
            bail!(
                "{}: images[{i}] names style row {row} of {}",
                path.display(),
                styles.len()
            );
        }
        rows_of.push((dir.join(file), row as usize));
    }
    let is_code = |r: usize| styles[r].get("code").is_some();
    let mut skipped = Vec::new();
    let (mut clip_t, mut quality) = (None, None);
    if metrics.needs_clip() {
        match clip {
            Ok(c) => {
                let imgs = open_images(rows_of.iter().map(|(f, _)| f))?;
                if metrics.clip_t {
                    let prompts: Vec<&str> = images
                        .iter()
                        .map(|im| im["prompt"].as_str().unwrap_or(""))
                        .collect();
                    clip_t = Some(c.clip_t_mean(&imgs, &prompts)?);
                }
                if metrics.quality {
                    let q = c.quality(&imgs)?;
                    quality = Some(q.iter().sum::<f64>() / q.len().max(1) as f64);
                }
            }
            Err(why) => {
                for (on, name) in [(metrics.clip_t, "clip-t"), (metrics.quality, "quality")] {
                    if on {
                        skipped.push(format!("{name}: {why}"));
                    }
                }
            }
        }
    }
    let Some(desc) = desc.filter(|_| metrics.csd) else {
        return Ok(FolderScores {
            descriptor: String::new(),
            clip_t,
            quality,
            skipped,
            codes: None,
            references: None,
        });
    };

    let code_imgs: Vec<&(PathBuf, usize)> = rows_of.iter().filter(|(_, r)| is_code(*r)).collect();
    let code_rows: std::collections::BTreeSet<usize> = code_imgs.iter().map(|(_, r)| *r).collect();
    let codes = if code_rows.len() >= 2 && code_imgs.len() > code_rows.len() {
        let files: Vec<PathBuf> = code_imgs.iter().map(|(f, _)| f.clone()).collect();
        let labels: Vec<u32> = code_imgs.iter().map(|(_, r)| *r as u32).collect();
        let (e, d) = desc.embed_files(&files)?;
        Some(style_scores(&e, d, &labels)?)
    } else {
        None
    };

    let ref_rows: Vec<usize> = (0..styles.len()).filter(|&r| !is_code(r)).collect();
    let references = if ref_rows.len() >= 2 {
        let ref_files = ref_rows
            .iter()
            .map(|&r| {
                styles[r]["reference"]
                    .as_str()
                    .map(PathBuf::from)
                    .with_context(|| format!("{}: styles[{r}] has no reference", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let gen: Vec<&(PathBuf, usize)> = rows_of.iter().filter(|(_, r)| !is_code(*r)).collect();
        let files: Vec<PathBuf> = gen.iter().map(|(f, _)| f.clone()).collect();
        let owner: Vec<usize> = gen
            .iter()
            .map(|(_, r)| {
                ref_rows
                    .iter()
                    .position(|x| x == r)
                    .expect("a reference row")
            })
            .collect();
        let (g, d) = desc.embed_files(&files)?;
        let (r, _) = desc.embed_files(&ref_files)?;
        let (matched, mismatched) = matched_mismatched(&g, &r, d, &owner)?;
        Some(ReferenceScores {
            matched,
            mismatched,
            images: files.len(),
            references: ref_files.len(),
        })
    } else {
        None
    };
    Ok(FolderScores {
        descriptor: desc.name.clone(),
        clip_t,
        quality,
        skipped,
        codes,
        references,
    })
}
