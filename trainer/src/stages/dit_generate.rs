//! Images from style indices and prompts (DESIGN.md, "Uses": code -> style -> images, and
//! reference image -> codebook -> images), and the stage's style check: are generated images
//! closer in style to their own reference than to the others?
//!
//! Generation is Euler on the flow ODE (`dit_sample.rs`) from seeded noise (one seed per
//! image: an image does not depend on its batch), with classifier-free guidance on the style:
//! the unconditional branch keeps the prompt and zeroes the style embeddings, as training drops
//! them. Output in the data's normalised range (about [-1, 1] with mean/std 0.5).
//!
//! Style similarity uses the stage-1 style embeddings: the frozen codebook's quantised,
//! mirrored tokens of an image, averaged over tokens and L2-normalised. (The eval issue's CSD
//! descriptor joins it later.)

use std::path::Path;

use anyhow::Result;
use candle_core::{Tensor, D};
use image::RgbImage;
use serde::Serialize;

use super::dit_config::DitSampleConfig;
use super::dit_flow::seeded_noise;
use super::dit_parts::DitParts;
use super::dit_sample::{euler, guide, Guidance};

/// Images (B, 3, S, S) for style indices (B, N) u32 and prompts, noise from `seeds`.
pub fn generate(
    parts: &DitParts,
    idx: &Tensor,
    prompts: &[&str],
    seeds: &[u64],
    cfg: &DitSampleConfig,
) -> Result<Tensor> {
    let b = prompts.len();
    let (text, mask) = parts.condition(idx, &[], prompts)?;
    let (text, mask) = (text.detach(), mask);
    let guided = cfg.guidance != 1.0;
    let uncond = if guided {
        let (t, m) = parts.condition(idx, &vec![true; b], prompts)?;
        Some((t.detach(), m))
    } else {
        None
    };
    let m = parts.dit.config();
    let s = m.sample_size;
    let noise = seeded_noise((b, m.in_channels, s, s), seeds, parts.dit.device())?;
    let g = Guidance {
        scale: cfg.guidance,
        rescale: cfg.rescale,
    };
    let mut velocity = |x: &Tensor, t: f64| -> Result<Tensor> {
        let tt = Tensor::new(vec![t as f32; b], x.device())?;
        let cond = parts.velocity(x, &tt, &text, &mask)?.detach();
        match &uncond {
            Some((ut, um)) => {
                let u = parts.velocity(x, &tt, ut, um)?.detach();
                guide(&cond, &u, &g)
            }
            None => Ok(cond),
        }
    };
    let x = euler(&mut velocity, noise, cfg.steps, cfg.shift)?;
    parts.to_images(&x)
}

/// One L2-normalised style vector per image: images (B, 3, S, S) -> (B, E).
pub fn style_vectors(parts: &DitParts, images: &Tensor) -> Result<Tensor> {
    let idx = parts.style_indices(images)?;
    let e = parts
        .codebook
        .codebook
        .embed_indices(&idx)?
        .mean(1)?
        .detach();
    let norm = e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(e.broadcast_div(&(norm + 1e-12)?)?)
}

/// Images (B, 3, S, S) normalised by `data.mean`/`data.std` (undone here) -> B RGB images,
/// values clamped to [0, 1].
pub fn to_images(batch: &Tensor, data: &data::config::DataConfig) -> Result<Vec<RgbImage>> {
    let (b, c, h, w) = batch.dims4()?;
    if c != 3 {
        anyhow::bail!("images have {c} channels, expected 3 (RGB)");
    }
    let flat: Vec<f32> = batch
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let plane = h * w;
    Ok((0..b)
        .map(|i| {
            let img = &flat[i * 3 * plane..(i + 1) * 3 * plane];
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = y as usize * w + x as usize;
                let v = |ch: usize| {
                    let f = img[ch * plane + at] * data.std[ch] + data.mean[ch];
                    (f.clamp(0.0, 1.0) * 255.0).round() as u8
                };
                image::Rgb([v(0), v(1), v(2)])
            })
        })
        .collect())
}

/// Writes a PNG, naming the file in errors.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    img.save(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The style check's contact sheet: one row per reference, the reference first, then its
/// image for each prompt. refs (R, 3, S, S) and each of `per_prompt` (R, 3, S, S),
/// normalised as the loader does.
pub fn write_grid(
    path: &Path,
    refs: &Tensor,
    per_prompt: &[Tensor],
    data: &data::config::DataConfig,
) -> Result<()> {
    let columns = std::iter::once(refs)
        .chain(per_prompt)
        .map(|t| to_images(t, data))
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<Vec<RgbImage>> = (0..refs.dim(0)?)
        .map(|r| columns.iter().map(|c| c[r].clone()).collect())
        .collect();
    save_png(&data::preview::sheet(&rows), path)
}

/// Matched and mismatched style similarity of generated images.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StyleGap {
    /// Mean cosine between each generated image and its own reference.
    pub matched: f64,
    /// Mean cosine between each generated image and the other references.
    pub mismatched: f64,
    pub images: usize,
    pub references: usize,
}

impl StyleGap {
    pub fn gap(&self) -> f64 {
        self.matched - self.mismatched
    }
}

/// One image of each of the first `max` styles of `ds` (in file order) and the first
/// `prompts` distinct prompts: the held-out references of [`style_gap`].
pub fn references(
    ds: &std::sync::Arc<data::Dataset>,
    data: &data::config::DataConfig,
    max: usize,
    prompts: usize,
) -> Result<(Tensor, Vec<String>)> {
    let mut picked = Vec::new();
    let mut styles = std::collections::BTreeSet::new();
    for (i, item) in ds.items.iter().enumerate() {
        if picked.len() < max && styles.insert(item.style) {
            picked.push(i);
        }
    }
    let mut ps: Vec<String> = Vec::new();
    for item in &ds.items {
        if ps.len() < prompts && !ps.contains(&item.prompt) {
            ps.push(item.prompt.clone());
        }
    }
    let mut rows = Vec::new();
    for batch in data::loader::SequentialLoader::new(ds.clone(), data, 64)? {
        let batch = batch?;
        for (k, &item) in batch.items.iter().enumerate() {
            if picked.contains(&item) {
                rows.push(batch.images.get(k)?);
            }
        }
        if rows.len() == picked.len() {
            break;
        }
    }
    Ok((Tensor::stack(&rows, 0)?, ps))
}

/// For R reference images (R, 3, S, S) (one per style) and P prompts: one image per
/// (reference, prompt) from the reference's style indices, then the style similarity of each
/// generated image to its own reference and to the other references.
pub fn style_gap(
    parts: &DitParts,
    refs: &Tensor,
    prompts: &[&str],
    cfg: &DitSampleConfig,
    seed: u64,
) -> Result<(StyleGap, Vec<Tensor>)> {
    let r = refs.dim(0)?;
    let idx = parts.style_indices(refs)?; // (R, N)
    let ref_vecs = style_vectors(parts, refs)?; // (R, E)
    let (mut matched, mut mismatched, mut m_n, mut x_n) = (0f64, 0f64, 0usize, 0usize);
    let mut made = Vec::with_capacity(prompts.len());
    for (p_i, p) in prompts.iter().enumerate() {
        let ps = vec![*p; r];
        let seeds: Vec<u64> = (0..r as u64)
            .map(|i| seed ^ (i << 16) ^ p_i as u64)
            .collect();
        let images = generate(parts, &idx, &ps, &seeds, cfg)?;
        let gen = style_vectors(parts, &images)?; // (R, E)
        made.push(images);
        let sims: Vec<Vec<f32>> = gen.matmul(&ref_vecs.t()?)?.to_vec2()?;
        for (i, row) in sims.iter().enumerate() {
            for (j, &s) in row.iter().enumerate() {
                if i == j {
                    matched += s as f64;
                    m_n += 1;
                } else {
                    mismatched += s as f64;
                    x_n += 1;
                }
            }
        }
    }
    let gap = StyleGap {
        matched: matched / m_n.max(1) as f64,
        mismatched: mismatched / x_n.max(1) as f64,
        images: m_n,
        references: r,
    };
    Ok((gap, made))
}
