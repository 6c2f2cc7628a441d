//! One config struct per stage, and the registry that maps a stage name to its struct so that
//! `trainer config show|check` can resolve any config file.
//!
//! A config file names its stage with a top-level `stage:` key (else the file name is used:
//! `codebook.yaml` is a codebook config). The key is read before the typed load and written
//! back into the resolved YAML, so the structs themselves only hold their sections.
//!
//! Each stage has `data` and `train` sections; the codebook stage adds `encoder`, `codebook`,
//! `loss` and `eval`, the AR stage `model` and `sample` (defined beside their code); the DiT
//! sections arrive with that stage.

use serde::{Deserialize, Serialize};

use data::config::DataConfig;
use data::synth::generate::SynthConfig;

use super::Validate;
use crate::models::codebook::StyleCodebookConfig;
use crate::models::qwen2::Qwen2Config;
use crate::sample::SamplingConfig;
use crate::stages::ar_data::IndexDataConfig;
use crate::stages::codebook_config::{EncoderConfig, RetrievalEvalConfig};
use crate::stages::codebook_loss::LossConfig;
use crate::train::TrainConfig;

/// Stage 1: the discrete style codebook (DESIGN.md, "Style codebook").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodebookConfig {
    pub data: DataConfig,
    pub train: TrainConfig,
    pub encoder: EncoderConfig,
    pub codebook: StyleCodebookConfig,
    pub loss: LossConfig,
    pub eval: RetrievalEvalConfig,
}

/// Stage 2: the style-conditioned diffusion transformer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DitConfig {
    pub data: DataConfig,
    pub train: TrainConfig,
}

/// Stage 3: the autoregressive style generator (DESIGN.md, "Autoregressive style
/// generator"): a Qwen2 decoder trained on `trainer extract`'s index sequences, and how
/// `trainer sample-style` samples it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArConfig {
    pub data: IndexDataConfig,
    pub train: TrainConfig,
    pub model: Qwen2Config,
    pub sample: SamplingConfig,
}

/// `trainer data synth` from a file instead of flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthStageConfig {
    pub synth: SynthConfig,
}

fn common(data: &DataConfig, train: &TrainConfig, out: &mut Vec<(String, String)>) {
    out.extend(data.problems("data"));
    out.extend(train.problems("train"));
}

impl Validate for CodebookConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        common(&self.data, &self.train, out);
        out.extend(self.encoder.problems("encoder", self.data.image_size));
        out.extend(self.codebook.problems("codebook"));
        out.extend(self.loss.problems("loss"));
        out.extend(self.eval.problems("eval"));
    }
}
impl Validate for DitConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        common(&self.data, &self.train, out);
    }
}
impl Validate for ArConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        out.extend(self.data.problems("data"));
        out.extend(self.train.problems("train"));
        out.extend(self.model.problems("model"));
        out.extend(self.sample.problems("sample"));
    }
}
impl Validate for SynthStageConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        out.extend(
            self.synth
                .problems()
                .into_iter()
                .map(|(k, m)| (format!("synth.{k}"), m)),
        );
    }
}

/// Every stage a config file can name.
pub const STAGES: &[&str] = &["codebook", "dit", "ar", "synth"];
