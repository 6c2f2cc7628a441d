//! The offline style descriptor's config (issue 7, item 2): defaults of
//! [`DescriptorConfig`] (whose struct sits with the other stages' in `config/stages.rs`),
//! its `loss:` section and its rules. The default shape is a small CSD (64 px, patch 8,
//! width 128, 4 blocks of 4 heads, MLP 512, 128-d heads) and the default styles start at id
//! [`DESCRIPTOR_FIRST_STYLE`], far above any id a stage trains or tests on.

use serde::{Deserialize, Serialize};

use data::config::DataConfig;
use data::synth::generate::SynthConfig;
use eval::csd::{CLIP_MEAN, CLIP_STD};
use eval::CsdConfig;

use crate::config::rules::Rules;
use crate::config::stages::DescriptorConfig;
use crate::stages::codebook_config::RetrievalEvalConfig;
use crate::train::TrainConfig;

/// Every synthetic dataset the stages use has ids `first_style .. first_style + styles +
/// test_styles` with `first_style` 0 and well under a million styles (configs/synth.yaml:
/// 0..288); the descriptor's ids start here or above, so its styles are disjoint from them.
pub const DESCRIPTOR_FIRST_STYLE: u64 = 1_000_000;

/// `loss:` CSD's style objective, a supervised-contrastive loss over style labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DescriptorLossConfig {
    /// Softmax temperature of the cosine similarities.
    pub temperature: f64,
    /// Images of each style in a micro-batch (M); the micro-batch holds
    /// `train.batch_size / train.grad_accum / M` styles (K >= 2).
    pub images_per_style: usize,
}

impl Default for DescriptorLossConfig {
    fn default() -> Self {
        DescriptorLossConfig {
            temperature: 0.1,
            images_per_style: 4,
        }
    }
}

impl Default for DescriptorConfig {
    fn default() -> Self {
        DescriptorConfig {
            data: DataConfig {
                // Empty: synthesise `synth` into the run folder.
                root: std::path::PathBuf::new(),
                // What CSD's preprocessing gives at evaluation time (`eval::csd::preprocess`).
                mean: CLIP_MEAN,
                std: CLIP_STD,
                ..DataConfig::default()
            },
            train: TrainConfig {
                steps: 150,
                batch_size: 64,
                lr: 5e-4,
                warmup_steps: 15,
                log_every: 10,
                eval_every: 50,
                checkpoint_every: 50,
                out_dir: "checkpoints/descriptor".into(),
                ..TrainConfig::default()
            },
            model: CsdConfig {
                image_size: 64,
                patch_size: 8,
                width: 128,
                layers: 4,
                heads: 4,
                mlp_width: 512,
                out_dim: 128,
            },
            synth: SynthConfig {
                styles: 256,
                test_styles: 64,
                per_style: 8,
                size: 64,
                seed: 1,
                first_style: DESCRIPTOR_FIRST_STYLE,
                ..SynthConfig::default()
            },
            loss: DescriptorLossConfig::default(),
            eval: RetrievalEvalConfig::default(),
        }
    }
}

impl DescriptorConfig {
    /// Images per micro-batch.
    pub fn micro_batch(&self) -> usize {
        self.train.batch_size / self.train.grad_accum.max(1)
    }

    /// Styles per micro-batch (K).
    pub fn styles_per_batch(&self) -> usize {
        self.micro_batch() / self.loss.images_per_style.max(1)
    }

    /// Rules beyond the `data` and `train` sections', as `(key, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .model
            .problems()
            .into_iter()
            .map(|(k, m)| (format!("model.{k}"), m))
            .collect();
        out.extend(
            self.synth
                .problems()
                .into_iter()
                .map(|(k, m)| (format!("synth.{k}"), m)),
        );
        out.extend(self.eval.problems("eval"));
        let mut r = Rules::new("");
        r.need(
            self.data.image_size as usize == self.model.image_size,
            "data.image_size",
            format!(
                "is {} but model.image_size is {}: the descriptor sees the loader's images",
                self.data.image_size, self.model.image_size
            ),
        );
        r.need(
            self.data.mean == CLIP_MEAN && self.data.std == CLIP_STD,
            "data.mean",
            format!(
                "data.mean and data.std must be CLIP's, {CLIP_MEAN:?} and {CLIP_STD:?} \
                 (evaluation feeds the descriptor through CSD's preprocessing)"
            ),
        );
        r.need(
            self.synth.first_style >= DESCRIPTOR_FIRST_STYLE,
            "synth.first_style",
            format!(
                "{} is in the range of the stages' styles; use {DESCRIPTOR_FIRST_STYLE} or \
                 more so the descriptor's styles are disjoint from theirs",
                self.synth.first_style
            ),
        );
        r.need(
            self.loss.temperature > 0.0 && self.loss.temperature.is_finite(),
            "loss.temperature",
            "must be a positive number",
        );
        let m = self.loss.images_per_style;
        r.need(
            m >= 2,
            "loss.images_per_style",
            "must be at least 2 (a positive pair)",
        );
        r.need(
            m > 0 && self.micro_batch().is_multiple_of(m) && self.styles_per_batch() >= 2,
            "train.batch_size",
            format!(
                "{} per micro-batch must be a multiple of loss.images_per_style {m} with at \
                 least 2 styles (negatives)",
                self.micro_batch()
            ),
        );
        r.need(
            self.data.root.as_os_str() != ""
                || self.synth.per_style as usize >= m.max(2) && self.synth.test_styles >= 2,
            "synth.per_style",
            format!(
                "the synthesised set needs per_style >= loss.images_per_style ({m}) and \
                 test_styles >= 2 (held-out retrieval)"
            ),
        );
        out.extend(r.into_vec());
        out
    }
}
