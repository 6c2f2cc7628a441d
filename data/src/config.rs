//! The `data` section of every stage config: where the dataset is, how images become tensors,
//! and how pairs are drawn. Defaults are the tiny synthetic demo's.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a resized image is cut to its final square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    Center,
    /// A seeded random crop (training augmentation); evaluation always uses `center`.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A Hugging Face parquet folder (`train-*.parquet`, `test-*.parquet`), one `.parquet`
    /// file, or an image folder `ROOT/<style>/<file>.png`.
    pub root: PathBuf,
    pub train_split: String,
    /// Held-out *styles* for evaluation.
    pub eval_split: String,
    /// Side of the square image the model sees.
    pub image_size: u32,
    /// Short side after resizing, before the crop; 0 means `image_size` (no margin to crop).
    pub resize: u32,
    pub crop: Crop,
    /// Per-channel normalisation, applied to [0, 1] pixel values: (x - mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Share of pairs whose two images are of different styles (label y = 0).
    pub negative_fraction: f32,
    /// Shuffle window in blocks (parquet row groups): anchors are shuffled within a window and
    /// partners are drawn from it when possible, so reads stay local.
    pub window_blocks: usize,
    /// Upper bound on encoded image bytes held by the block cache, in MiB. The pair loader's
    /// memory is about cache_mb + (prefetch + 2) x the bytes of one batch of pairs
    /// (2 x batch x 3 x image_size^2 x 4).
    pub cache_mb: usize,
    /// Batches prepared ahead of the training step.
    pub prefetch: usize,
    /// Decode threads; 0 uses every core.
    pub threads: usize,
    /// Skip rows whose image cannot be decoded (counted and reported) instead of stopping.
    pub skip_corrupt: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: PathBuf::from("data/synth"),
            train_split: "train".into(),
            eval_split: "test".into(),
            image_size: 64,
            resize: 0,
            crop: Crop::Center,
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.5, 0.5],
            negative_fraction: 0.5,
            window_blocks: 8,
            cache_mb: 128,
            prefetch: 4,
            threads: 0,
            skip_corrupt: false,
        }
    }
}

impl DataConfig {
    /// Rules beyond the types, as `(key, message)`, for the config loader.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        let mut out = Vec::new();
        if self.image_size == 0 {
            out.push((key("image_size"), "must be at least 1".into()));
        }
        if self.resize != 0 && self.resize < self.image_size {
            out.push((
                key("resize"),
                format!(
                    "{} is smaller than image_size {}",
                    self.resize, self.image_size
                ),
            ));
        }
        if self.std.iter().any(|s| *s <= 0.0 || !s.is_finite()) {
            out.push((key("std"), "every entry must be a positive number".into()));
        }
        if !(0.0..=1.0).contains(&self.negative_fraction) {
            out.push((key("negative_fraction"), "must be within [0, 1]".into()));
        }
        if self.window_blocks == 0 {
            out.push((key("window_blocks"), "must be at least 1".into()));
        }
        if self.prefetch == 0 {
            out.push((key("prefetch"), "must be at least 1".into()));
        }
        out
    }
}
