//! The code -> image pipeline (DESIGN.md, "How data flows": `trainer generate` reads the three
//! stages). A row's style comes either from a style code (stage 3 samples its index sequence)
//! or from a reference image (the frozen stage-1 codebook quantises it); the indices become
//! style embeddings in the text branch, and the stage-2 DiT's flow sampler turns them and each
//! prompt into an image.
//!
//! Loading refuses stages that do not fit together (a generator of another vocabulary or
//! sequence length than the codebook, a codebook of another width or image size than the
//! DiT), naming both checkpoints.
//!
//! Noise: every image has its own seed (a `Job`); `trainer generate` uses `mix(seed, c)` for
//! prompt c, the same down a column, so the rows of a contact sheet differ by style only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use data::transform::Transform;

use crate::config::stages::PipelineConfig;
use crate::sample::SamplingConfig;
use crate::stages::ar_sample::StyleGenerator;
use crate::stages::dit_config::DitSampleConfig;
use crate::stages::dit_generate::generate;
use crate::stages::dit_parts::{DitParts, LoadedDit};
use crate::train::checkpoint::checkpoint_dir;

/// The trained stages, loaded and checked against each other.
pub struct Pipeline {
    pub dit: LoadedDit,
    /// The style generator, when codes are to be turned into styles.
    pub styles: Option<StyleGenerator>,
}

impl Pipeline {
    /// Loads the DiT (and the codebook it names, or `cfg.codebook`), and with `with_ar` the
    /// style generator, whose sampling settings `adjust_ar` may change.
    pub fn load(
        cfg: &PipelineConfig,
        with_ar: bool,
        adjust_ar: impl FnOnce(&mut SamplingConfig),
    ) -> Result<Self> {
        let codebook = (!cfg.codebook.as_os_str().is_empty()).then_some(cfg.codebook.as_path());
        let dit = DitParts::load(&cfg.dit, codebook, cfg.ema)?;
        let styles = if with_ar {
            if cfg.ar.as_os_str().is_empty() {
                bail!(
                    "a style code needs the style generator (stage 3): name its checkpoint as \
                     `ar:` in the pipeline file, or pass --ar"
                );
            }
            let g = StyleGenerator::load(&cfg.ar, adjust_ar, &Device::Cpu)
                .context("the style generator (pipeline `ar:`)")?;
            check_fit(&dit, &g)?;
            Some(g)
        } else {
            None
        };
        Ok(Pipeline { dit, styles })
    }

    /// Index sequences of style codes -> (B, N) u32, and the sequences.
    pub fn code_indices(&self, codes: &[u64]) -> Result<(Tensor, Vec<Vec<u32>>)> {
        let Some(g) = &self.styles else {
            bail!("the pipeline was loaded without its style generator");
        };
        let seqs = g.sample(codes)?;
        let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        let idx = Tensor::from_vec(flat, (codes.len(), g.len()), &Device::Cpu)?;
        Ok((idx, seqs))
    }

    /// A reference image file, as the DiT's evaluation loader prepares it (resize, centre
    /// crop, normalise) -> (1, 3, S, S).
    pub fn reference(&self, path: &Path) -> Result<Tensor> {
        let img = image::open(path)
            .with_context(|| format!("reading the style reference {}", path.display()))?
            .to_rgb8();
        let tf = Transform::from_config(&self.dit.config.data, false);
        let s = tf.size as usize;
        Ok(Tensor::from_vec(
            tf.apply(&img, 0),
            (1, 3, s, s),
            &Device::Cpu,
        )?)
    }

    /// Code indices of reference images (B, 3, S, S) under the codebook -> (B, N) u32.
    pub fn image_indices(&self, images: &Tensor) -> Result<Tensor> {
        self.dit.parts.style_indices(images)
    }

    /// One image per job (a style row of idx (R, N), a prompt, a noise seed) -> (J, 3, S, S)
    /// in job order, at most `batch` images per sampler call; `progress` hears (done, total)
    /// after each call. An image depends on its job only, not on its batch.
    pub fn render(
        &self,
        idx: &Tensor,
        jobs: &[Job],
        sample: &DitSampleConfig,
        batch: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Tensor> {
        let mut out = Vec::new();
        let mut done = 0;
        for chunk in jobs.chunks(batch.max(1)) {
            let at: Vec<u32> = chunk.iter().map(|j| j.row as u32).collect();
            let at = Tensor::new(at.as_slice(), idx.device())?;
            let chunk_idx = idx.index_select(&at, 0)?;
            let prompts: Vec<&str> = chunk.iter().map(|j| j.prompt).collect();
            let seeds: Vec<u64> = chunk.iter().map(|j| j.seed).collect();
            out.push(generate(
                &self.dit.parts,
                &chunk_idx,
                &prompts,
                &seeds,
                sample,
            )?);
            done += chunk.len();
            progress(done, jobs.len());
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

/// One image to draw: which style row, which prompt, which noise.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub row: usize,
    pub prompt: &'a str,
    pub seed: u64,
}

/// Refuses a style generator whose indices cannot be the DiT codebook's; warns when they were
/// extracted with another codebook checkpoint of the same shape.
fn check_fit(dit: &LoadedDit, ar: &StyleGenerator) -> Result<()> {
    let codes = dit.parts.codebook.codebook.config().codes;
    let size = dit.config.data.image_size as usize;
    let tokens = dit.parts.codebook.encoder.config().tokens(size, size);
    let vocab = ar.model.config().vocab_size;
    let names = format!(
        "the style generator {} and the DiT {} (codebook {})",
        ar.checkpoint.display(),
        dit.checkpoint.display(),
        dit.config.codebook.display()
    );
    if vocab != codes {
        bail!(
            "{names} do not fit: the generator samples indices of a {vocab}-entry codebook, \
             the DiT's codebook has {codes} entries"
        );
    }
    if ar.len() != tokens {
        bail!(
            "{names} do not fit: the generator samples {} indices per style, the codebook \
             makes {tokens} per image",
            ar.len()
        );
    }
    let extracted_with = ar.made_by.get("checkpoint").and_then(|v| v.as_str());
    let codebook_dir: Option<PathBuf> = checkpoint_dir(&dit.config.codebook)
        .ok()
        .and_then(|d| std::fs::canonicalize(d).ok());
    if let (Some(made), Some(cb)) = (extracted_with, codebook_dir) {
        if Path::new(made) != cb {
            tracing::warn!(
                "the style generator learned the indices of codebook {made}, the DiT is \
                 conditioned through {}: unless both hold the same weights, codes map to \
                 other styles than it learned",
                cb.display()
            );
        }
    }
    Ok(())
}
