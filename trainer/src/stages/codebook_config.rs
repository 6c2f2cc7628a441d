//! The codebook stage's own config sections (the `data` and `train` sections are shared):
//! which vision encoder extracts the features and whether it trains, and how the held-out
//! retrieval evaluation runs. The model and loss sections live beside their code
//! (`models::codebook::StyleCodebookConfig`, `stages::codebook_loss::LossConfig`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::rules::Rules;
use crate::models::vision::VisionConfig;

/// `encoder:` the vision tower that turns images into patch features.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderConfig {
    /// The paper freezes the encoder; small from-scratch runs may train it with the codebook.
    pub trainable: bool,
    /// Safetensors file(s) with the Hugging Face names (`visual.blocks.0.attn.qkv.weight`,
    /// ...), e.g. Qwen2.5-VL's shards; empty means seeded random weights (`train.seed`),
    /// which is what the tiny and demo configs use.
    pub weights: Vec<PathBuf>,
    /// The tower's shape; `vision.image_size` must equal `data.image_size`.
    pub vision: VisionConfig,
}

impl EncoderConfig {
    pub fn problems(&self, prefix: &str, data_image_size: u32) -> Vec<(String, String)> {
        let mut rules = Rules::new(prefix);
        rules.need(
            self.vision.image_size == data_image_size as usize,
            "vision.image_size",
            format!(
                "is {} but data.image_size is {data_image_size}: the encoder runs at the size \
                 the loader produces",
                self.vision.image_size
            ),
        );
        let mut out = self.vision.problems(&format!("{prefix}.vision"));
        out.extend(rules.into_vec());
        out
    }
}

/// `eval:` held-out-style retrieval on `data.eval_split`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalEvalConfig {
    /// Images per forward batch.
    pub batch_size: usize,
    /// Evaluate on at most this many images of the split (the first ones); 0 = all.
    pub max_images: usize,
}

impl Default for RetrievalEvalConfig {
    fn default() -> Self {
        RetrievalEvalConfig {
            batch_size: 64,
            max_images: 0,
        }
    }
}

impl RetrievalEvalConfig {
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut rules = Rules::new(prefix);
        rules.need(self.batch_size > 0, "batch_size", "must be at least 1");
        rules.into_vec()
    }
}
