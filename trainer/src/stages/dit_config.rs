//! The DiT stage's own config sections (`data` and `train` are shared; the model's shape is
//! `models::mmdit::MmditConfig` and the objective `stages::dit_flow::FlowConfig`): where the
//! style codebook comes from, the text branch, EMA, and how samples are drawn.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::rules::Rules;
use crate::models::qwen2::Qwen2Config;

/// `text:` the text branch, a VLM's language model (DESIGN.md, "Style-conditioned diffusion
/// transformer").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextBranchConfig {
    /// A Hugging Face `tokenizer.json` (for the synthetic data: `trainer data tokenizer`).
    pub tokenizer: PathBuf,
    /// The language model's shape; `vocab_size` 0 = the tokenizer's, `max_position_embeddings`
    /// 0 = the longest templated prompt of the data. `hidden_size` must be the codebook's
    /// encoder width: the style embeddings go in at the LM's width.
    pub lm: Qwen2Config,
    /// Safetensors with HF `Qwen2ForCausalLM` names; empty: seeded random weights.
    pub weights: Vec<PathBuf>,
    /// The paper freezes the pretrained LM; from-scratch configs train it.
    pub trainable: bool,
    /// How the style reaches the DiT: through the LM as image features (the paper), or
    /// `direct`, beside the LM's prompt states (the ablation of the text-branch injection).
    pub inject: StyleInjection,
}

/// `text.inject`: whether the style embeddings go through the language model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StyleInjection {
    /// In place of the image-placeholder embeddings, read by the LM (CoTyle Sec. 3.2).
    #[default]
    TextBranch,
    /// The LM reads the prompt alone; its outputs at the placeholders are replaced by the
    /// style embeddings.
    Direct,
}

impl Default for TextBranchConfig {
    fn default() -> Self {
        TextBranchConfig {
            tokenizer: PathBuf::from("configs/tokenizers/synth.json"),
            lm: Qwen2Config::tiny(),
            weights: Vec::new(),
            trainable: true,
            inject: StyleInjection::TextBranch,
        }
    }
}

/// `sample:` how the stage's evaluation and `trainer generate` draw images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DitSampleConfig {
    /// Euler steps on the flow ODE.
    pub steps: usize,
    /// Shift of the sampling schedule (SD3's resolution shift; 1 = linear).
    pub shift: f64,
    /// Classifier-free guidance on the style (1 = none).
    pub guidance: f64,
    /// Rescale the guided velocity to the conditional one's norm.
    pub rescale: bool,
}

impl Default for DitSampleConfig {
    fn default() -> Self {
        DitSampleConfig {
            steps: 20,
            shift: 1.0,
            guidance: 3.0,
            rescale: true,
        }
    }
}

impl TextBranchConfig {
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = self.lm.problems(&format!("{prefix}.lm"));
        let mut r = Rules::new(prefix);
        r.need(
            !self.tokenizer.as_os_str().is_empty(),
            "tokenizer",
            "must name a tokenizer.json",
        );
        out.extend(r.into_vec());
        out
    }
}

impl DitSampleConfig {
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut r = Rules::new(prefix);
        r.need(self.steps > 0, "steps", "must be at least 1");
        r.need(self.shift > 0.0, "shift", "must be positive");
        r.need(self.guidance.is_finite(), "guidance", "must be a number");
        r.into_vec()
    }
}
