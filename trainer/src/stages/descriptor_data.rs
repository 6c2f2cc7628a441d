//! The offline descriptor's data (issue 7, item 2): the synthetic styles it learns from
//! (rendered into the run folder when `data.root` is empty, ids from
//! `synth.first_style`, disjoint from the stages'), its training batches of K styles x M
//! images (SupCon's batch composition: every image has M - 1 positives in the batch), and
//! the held-out split preprocessed exactly as evaluation feeds the descriptor
//! (`eval::csd::preprocess`).
//!
//! Batch `b` is a pure function of `(train.seed, b)`: a resumed run continues from the
//! number of batches drawn, with nothing else to restore. Images are read through the
//! loader's byte-bounded [`BlockCache`], decoded and transformed (`data.crop`, seeded per
//! image) in parallel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use data::config::DataConfig;
use data::dataset::decode_rgb_lazy;
use data::loader::BlockCache;
use data::rng::{mix, Rng};
use data::synth::generate::{generate, SynthConfig};
use data::transform::Transform;
use data::Dataset;

use super::descriptor_config::DESCRIPTOR_FIRST_STYLE;
use crate::config::stages::DescriptorConfig;

/// The record of a synthesised set, inside its folder.
pub const SYNTH_RECORD: &str = "synth.json";
/// Stream tag of the batch draws.
const BATCH_STREAM: u64 = 0xDE5C_0B47;

/// Where the data is: `data.root`, or `run_dir/synth`, rendered from `synth` when absent
/// (into a temporary folder, renamed when complete). A set already there made from another
/// `synth` section is refused. Returns the root and whether it was synthesised.
pub fn prepare(cfg: &DescriptorConfig, run_dir: &Path) -> Result<(PathBuf, bool)> {
    if !cfg.data.root.as_os_str().is_empty() {
        check_disjoint(cfg)?;
        return Ok((cfg.data.root.clone(), false));
    }
    let dir = run_dir.join("synth");
    let record = dir.join(SYNTH_RECORD);
    if dir.exists() {
        let text = std::fs::read_to_string(&record).with_context(|| {
            format!(
                "reading {} (remove {} to re-render)",
                record.display(),
                dir.display()
            )
        })?;
        let made: SynthConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", record.display()))?;
        if made != cfg.synth {
            bail!(
                "{} was rendered from another `synth` section ({}); remove it or use another run",
                dir.display(),
                record.display()
            );
        }
        return Ok((dir, true));
    }
    let tmp = run_dir.join("synth.partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let s = &cfg.synth;
    tracing::info!(
        "rendering {} + {} synthetic styles (ids {}..{}) x {} images into {}",
        s.styles,
        s.test_styles,
        s.first_style,
        s.first_style + (s.styles + s.test_styles) as u64,
        s.per_style,
        dir.display()
    );
    generate(&tmp, s, &|_, _| {})?;
    std::fs::write(
        tmp.join(SYNTH_RECORD),
        serde_json::to_string_pretty(s)? + "\n",
    )
    .with_context(|| format!("writing {}", tmp.join(SYNTH_RECORD).display()))?;
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    Ok((dir, true))
}

/// A given `data.root` must not hold styles of the stages' id range (numeric ids below
/// [`DESCRIPTOR_FIRST_STYLE`]); other style names cannot be checked (a warning says so).
fn check_disjoint(cfg: &DescriptorConfig) -> Result<()> {
    let root = &cfg.data.root;
    for split in [&cfg.data.train_split, &cfg.data.eval_split] {
        let ds = Dataset::open(root, split)?;
        match style_ids(&ds) {
            Some(ids) => {
                if let Some(id) = ids.iter().find(|&&id| id < DESCRIPTOR_FIRST_STYLE) {
                    bail!(
                        "data.root {} split `{split}` has style {id}, in the stages' id range \
                         (below {DESCRIPTOR_FIRST_STYLE}): the descriptor must learn from \
                         disjoint styles (leave data.root empty to render them)",
                        root.display()
                    );
                }
            }
            None => tracing::warn!(
                "descriptor data {}: style names are not ids; that they are disjoint from \
                 every stage's is not checked",
                root.display()
            ),
        }
    }
    Ok(())
}

/// The numeric style ids of a split (names of a parquet set are `style_id` in decimal);
/// `None` when a name is not a number.
pub fn style_ids(ds: &Dataset) -> Option<Vec<u64>> {
    ds.styles.iter().map(|s| s.parse().ok()).collect()
}

/// Training batches of K styles x M images.
pub struct StyleBatches {
    ds: Arc<Dataset>,
    /// Item lists of the styles with at least M images.
    styles: Vec<(u32, Vec<usize>)>,
    cache: BlockCache,
    transform: Transform,
    seed: u64,
    k: usize,
    m: usize,
}

impl StyleBatches {
    pub fn new(ds: Arc<Dataset>, d: &DataConfig, seed: u64, k: usize, m: usize) -> Result<Self> {
        let styles: Vec<(u32, Vec<usize>)> = ds
            .items_of_style()
            .into_iter()
            .enumerate()
            .filter(|(_, items)| items.len() >= m)
            .map(|(s, items)| (s as u32, items))
            .collect();
        if styles.len() < k {
            bail!(
                "split `{}` of {} has {} styles with {m} or more images; a batch needs {k}",
                ds.split,
                ds.root.display(),
                styles.len()
            );
        }
        Ok(StyleBatches {
            ds,
            styles,
            cache: BlockCache::new(d.cache_mb << 20),
            transform: Transform::from_config(d, true),
            seed,
            k,
            m,
        })
    }

    /// Batch number `index`: images (K M, 3, S, S) grouped by style, and their style labels.
    pub fn batch(&self, index: u64) -> Result<(Tensor, Vec<u32>)> {
        let mut rng = Rng::new(mix(mix(self.seed, BATCH_STREAM), index));
        let mut order: Vec<usize> = (0..self.styles.len()).collect();
        partial_shuffle(&mut rng, &mut order, self.k);
        let mut picks = Vec::with_capacity(self.k * self.m);
        let mut labels = Vec::with_capacity(self.k * self.m);
        for &s in &order[..self.k] {
            let (label, items) = &self.styles[s];
            let mut its = items.clone();
            partial_shuffle(&mut rng, &mut its, self.m);
            for &item in &its[..self.m] {
                picks.push((item, rng.next_u64()));
                labels.push(*label);
            }
        }
        let len = self.transform.output_len();
        let mut buf = vec![0f32; picks.len() * len];
        let (ds, cache, tf) = (&*self.ds, &self.cache, &self.transform);
        buf.par_chunks_mut(len).zip(picks.par_iter()).try_for_each(
            |(out, &(item, crop_seed))| -> Result<()> {
                let it = &ds.items[item];
                let block = cache.get(ds, it.block)?;
                let bytes = block[it.offset as usize].as_ref().map_err(|e| e.clone())?;
                let img = decode_rgb_lazy(bytes, || ds.locate(item))?;
                tf.apply_into(&img, crop_seed, out);
                Ok(())
            },
        )?;
        let s = tf.size as usize;
        Ok((
            Tensor::from_vec(buf, (picks.len(), 3, s, s), &Device::Cpu)?,
            labels,
        ))
    }
}

/// The first `n` entries of `v` become a uniform random selection (Fisher-Yates, cut short).
fn partial_shuffle(rng: &mut Rng, v: &mut [usize], n: usize) {
    for i in 0..n.min(v.len()) {
        let j = i + rng.below((v.len() - i) as u64) as usize;
        v.swap(i, j);
    }
}

/// The held-out split as evaluation sees it: CSD-preprocessed images and style labels.
pub struct HeldOut {
    /// One (3, S, S) image per entry, `eval::csd::preprocess`'d.
    pub images: Vec<Vec<f32>>,
    pub labels: Vec<u32>,
    pub styles: usize,
}

impl HeldOut {
    /// The first `max` images of `ds` (0 = all) at `size` px.
    pub fn load(ds: &Dataset, size: usize, max: usize) -> Result<HeldOut> {
        let n = if max == 0 {
            ds.items.len()
        } else {
            ds.items.len().min(max)
        };
        let mut images = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for row in ds.stream().take(n) {
            let (item, bytes) = row?;
            let img = decode_rgb_lazy(&bytes?, || ds.locate(item))?;
            images.push(eval::csd::preprocess(&img, size).with_context(|| ds.locate(item))?);
            labels.push(ds.items[item].style);
        }
        let mut styles = labels.clone();
        styles.sort_unstable();
        styles.dedup();
        Ok(HeldOut {
            images,
            labels,
            styles: styles.len(),
        })
    }
}
