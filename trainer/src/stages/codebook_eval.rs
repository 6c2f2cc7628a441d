//! Evaluation of a style codebook (issue 4, item 5): held-out-style retrieval on the pooled
//! style embeddings (each image's embedding against every other image of the split: top-1
//! same-style rate and mean average precision, `eval::retrieval`), the same retrieval on the
//! encoder's raw pooled features (what the codebook adds), codebook usage and perplexity.
//! Run inside the stage every `train.eval_every` steps and by `trainer codebook eval`.

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, D};
use serde::Serialize;

use data::config::DataConfig;
use data::loader::SequentialLoader;
use data::Dataset;

use super::codebook_config::RetrievalEvalConfig;
use super::codebook_parts::CodebookParts;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Images evaluated and their distinct styles.
    pub images: usize,
    pub styles: usize,
    /// Retrieval on the pooled style embeddings (codebook lookup + mirror projection).
    pub top1: f64,
    pub map: f64,
    /// Retrieval on the pooled encoder features: the baseline the codebook must beat.
    pub feature_top1: f64,
    pub feature_map: f64,
    /// Share of codes used at least once over the evaluated images.
    pub usage: f64,
    /// exp(entropy) of the code distribution over the evaluated images.
    pub perplexity: f64,
}

impl EvalReport {
    /// The report as metric name/value pairs, prefixed `eval/`.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("eval/top1", self.top1),
            ("eval/map", self.map),
            ("eval/feature_top1", self.feature_top1),
            ("eval/feature_map", self.feature_map),
            ("eval/usage", self.usage),
            ("eval/perplexity", self.perplexity),
        ]
    }
}

/// Evaluates `parts` on `ds` (at most `cfg.max_images` images, in dataset order).
pub fn evaluate(
    parts: &CodebookParts,
    ds: Arc<Dataset>,
    data: &DataConfig,
    cfg: &RetrievalEvalConfig,
) -> Result<EvalReport> {
    let limit = if cfg.max_images == 0 {
        ds.items.len()
    } else {
        cfg.max_images.min(ds.items.len())
    };
    let codes = parts.codebook.codebook()?.dim(0)?;
    let mut counts = vec![0u64; codes];
    let (mut style_rows, mut feature_rows, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut width = (0, 0);
    for batch in SequentialLoader::new(ds.clone(), data, cfg.batch_size)? {
        let batch = batch?;
        if labels.len() >= limit {
            break;
        }
        let take = (limit - labels.len()).min(batch.items.len());
        let images = batch.images.narrow(0, 0, take)?;
        let v = parts.features(&images)?;
        let idx = parts.codebook.quantize(&v)?;
        // Pooled over tokens: (B, N, E) -> (B, E), detached (no graph needed here).
        let style = parts.codebook.embed_indices(&idx)?.detach().mean(1)?;
        let feat = v.detach().mean(1)?;
        width = (style.dim(D::Minus1)?, feat.dim(D::Minus1)?);
        style_rows.extend(
            style
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        feature_rows.extend(feat.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        for i in idx.flatten_all()?.to_vec1::<u32>()? {
            counts[i as usize] += 1;
        }
        labels.extend(batch.items[..take].iter().map(|&i| ds.items[i].style));
    }
    let styles = {
        let mut s = labels.clone();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    let on_style = eval::retrieval::retrieval(&style_rows, width.0, &labels)
        .context("retrieval on style embeddings")?;
    let on_features = eval::retrieval::retrieval(&feature_rows, width.1, &labels)
        .context("retrieval on encoder features")?;
    let (usage, perplexity) = usage_and_perplexity(&counts);
    Ok(EvalReport {
        images: labels.len(),
        styles,
        top1: on_style.top1,
        map: on_style.map,
        feature_top1: on_features.top1,
        feature_map: on_features.map,
        usage,
        perplexity,
    })
}

/// Share of codes with a non-zero count, and exp of the entropy of the counts.
pub fn usage_and_perplexity(counts: &[u64]) -> (f64, f64) {
    let total: u64 = counts.iter().sum();
    if total == 0 || counts.is_empty() {
        return (0.0, 0.0);
    }
    let used = counts.iter().filter(|&&c| c > 0).count();
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    (used as f64 / counts.len() as f64, entropy.exp())
}
