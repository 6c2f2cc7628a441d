//! `trainer extract` (issue 4, item 6): runs a trained style codebook over a dataset and
//! writes each image's code index sequence, the input of the AR stage (DESIGN.md, "How data
//! flows": `RUN/indices/*.parquet` + `RUN/freq.json`). Every file names what made it:
//! checkpoint, step, dataset and split, in `made_by`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use data::config::DataConfig;
use data::indices::{IndexFreq, IndexSet, IndexShardWriter, FREQ_FILE};
use data::loader::SequentialLoader;
use data::Dataset;

use super::codebook_parts::CodebookParts;

/// What one split produced.
pub struct Extracted {
    pub split: String,
    pub images: usize,
    pub shards: Vec<PathBuf>,
}

/// Quantises every image of `split` (in dataset order) into `out/indices/{split}-*.parquet`.
/// `tokens` is the sequence length the encoder makes at `data.image_size`; `made_by` is
/// recorded in every shard.
pub fn extract_split(
    parts: &CodebookParts,
    data: &DataConfig,
    split: &str,
    tokens: usize,
    batch_size: usize,
    out: &Path,
    made_by: serde_json::Value,
) -> Result<Extracted> {
    let ds = Arc::new(Dataset::open(&data.root, split)?);
    let codes = parts.codebook.codebook()?.dim(0)?;
    let mut writer = IndexShardWriter::create(out, split, made_by, codes as u32, tokens)?;
    let mut loader = SequentialLoader::new(ds.clone(), data, batch_size)?;
    let mut images = 0;
    for batch in loader.by_ref() {
        let batch = batch?;
        let idx = parts.codebook.quantize(&parts.features(&batch.images)?)?;
        let rows = idx.to_vec2::<u32>()?;
        for (&item, row) in batch.items.iter().zip(rows) {
            let seq: Vec<u16> = row.into_iter().map(|i| i as u16).collect();
            let style = &ds.styles[ds.items[item].style as usize];
            writer
                .push(&format!("{split}#{item}"), style, &seq)
                .with_context(|| ds.locate(item))?;
            images += 1;
        }
    }
    if !loader.skipped.is_empty() {
        tracing::warn!(
            "{} images skipped as unreadable: {:?}",
            loader.skipped.len(),
            loader.skipped
        );
    }
    let shards = writer.finish()?;
    Ok(Extracted {
        split: split.to_string(),
        images,
        shards,
    })
}

/// Counts every index of `split`'s sequences in `out` into `out/freq.json` (the AR sampler's
/// high-frequency suppression reads it). Returns its path and the token count.
pub fn write_freq(out: &Path, split: &str) -> Result<(PathBuf, u64)> {
    let set = IndexSet::open(out, split)?;
    let freq = IndexFreq::from_set(&set);
    let path = out.join(FREQ_FILE);
    freq.write(&path)?;
    Ok((path, freq.tokens_counted))
}
