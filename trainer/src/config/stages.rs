//! One config struct per stage, and the registry that maps a stage name to its struct so that
//! `trainer config show|check` can resolve any config file.
//!
//! A config file names its stage with a top-level `stage:` key (else the file name is used:
//! `codebook.yaml` is a codebook config). The key is read before the typed load and written
//! back into the resolved YAML, so the structs themselves only hold their sections.
//!
//! Each stage has `data` and `train` sections; the codebook stage adds `encoder`, `codebook`,
//! `loss` and `eval`, the AR stage `model` and `sample` (defined beside their code); the DiT
//! sections arrive with that stage. The offline descriptor (`descriptor`) adds `model`,
//! `synth`, `loss` and `eval`.

use serde::{Deserialize, Serialize};

use data::config::DataConfig;
use data::synth::generate::SynthConfig;

use super::Validate;
use crate::models::codebook::StyleCodebookConfig;
use crate::models::mmdit::MmditConfig;
use crate::models::qwen2::Qwen2Config;
use crate::models::vae::VaeConfig;
use crate::sample::SamplingConfig;
use crate::stages::ar_data::IndexDataConfig;
use crate::stages::codebook_config::{EncoderConfig, RetrievalEvalConfig};
use crate::stages::codebook_loss::LossConfig;
use crate::stages::descriptor_config::DescriptorLossConfig;
use crate::stages::dit_config::{DitSampleConfig, TextBranchConfig};
use crate::stages::dit_flow::FlowConfig;
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

/// Stage 2: the style-conditioned diffusion transformer (DESIGN.md, "Style-conditioned
/// diffusion transformer"): an MMDiT conditioned on a VLM-style text branch into which the
/// frozen stage-1 codebook's style embeddings are scattered, trained by rectified flow
/// matching on same-style pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DitConfig {
    pub data: DataConfig,
    pub train: TrainConfig,
    /// The stage-1 checkpoint (`step-N`, `final` or a run folder) whose style embeddings
    /// condition the DiT.
    pub codebook: std::path::PathBuf,
    pub text: TextBranchConfig,
    pub model: MmditConfig,
    /// The frozen autoencoder of a latent-space config; absent: the DiT works on pixels.
    pub vae: Option<VaeConfig>,
    pub flow: FlowConfig,
    /// EMA decay of the DiT's weights (0 = no EMA).
    pub ema_decay: f64,
    pub sample: DitSampleConfig,
}

impl Default for DitConfig {
    fn default() -> Self {
        DitConfig {
            data: DataConfig::default(),
            train: TrainConfig::default(),
            codebook: "checkpoints/codebook/demo".into(),
            text: TextBranchConfig::default(),
            model: MmditConfig::default(),
            vae: None,
            flow: FlowConfig::default(),
            ema_decay: 0.999,
            sample: DitSampleConfig::default(),
        }
    }
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

/// The offline style descriptor of the evaluation (issue 7, item 2; `trainer eval
/// train-descriptor`): a small CSD (`eval::csd`) trained with a supervised-contrastive style
/// loss on synthetic styles disjoint from every stage's. Defaults and rules live in
/// `stages/descriptor_config.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DescriptorConfig {
    /// `root` empty (the default): the command synthesises `synth` into `RUN/synth`.
    pub data: DataConfig,
    pub train: TrainConfig,
    /// The descriptor's shape (CSD's layout, small).
    pub model: eval::CsdConfig,
    /// The synthetic styles it learns from (`first_style` far from every stage's ids).
    pub synth: SynthConfig,
    pub loss: DescriptorLossConfig,
    pub eval: RetrievalEvalConfig,
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
        out.extend(self.text.problems("text"));
        out.extend(self.model.problems("model"));
        if let Some(v) = &self.vae {
            out.extend(v.problems("vae"));
        }
        out.extend(self.flow.problems("flow"));
        out.extend(self.sample.problems("sample"));
        if !(0.0..1.0).contains(&self.ema_decay) {
            out.push(("ema_decay".into(), "must be within [0, 1)".into()));
        }
        // Pixels (3 channels) at the loader's size, or latents of an 8x VAE.
        let down = if self.model.in_channels == 3 { 1 } else { 8 };
        if self.model.sample_size * down != self.data.image_size as usize {
            out.push((
                "model.sample_size".into(),
                format!(
                    "is {} but data.image_size is {}: the DiT denoises the loader's images \
                     (pixels: the same size; latents of an 8x VAE: an eighth)",
                    self.model.sample_size, self.data.image_size
                ),
            ));
        }
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
impl Validate for DescriptorConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        common(&self.data, &self.train, out);
        out.extend(self.problems());
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

/// `trainer generate`'s pipeline file (`configs/pipeline.yaml`): the three trained stages it
/// chains, so its flags stay short. Sampling settings come from the checkpoints' own configs
/// (the DiT's `sample:`, the AR's `sample:`); the command's flags override them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Stage 2, the style-conditioned DiT (`step-N`, `final` or a run folder).
    pub dit: std::path::PathBuf,
    /// Stage 3, the style generator; only `--code` needs it. Empty: none.
    pub ar: std::path::PathBuf,
    /// Stage 1, the style codebook. Empty: the one the DiT was trained with (its config
    /// names it). Another must have the same width and image size, and the AR's vocabulary
    /// and sequence length.
    pub codebook: std::path::PathBuf,
    /// Sample with the DiT's EMA weights (where the checkpoint has them).
    pub ema: bool,
    /// What `trainer pipeline` runs (`cmd/pipeline.rs`); `trainer generate` ignores it.
    pub run: PipelineRunConfig,
}

/// `run:` the stage configs `trainer pipeline` chains and where it writes. Point `dit:` and
/// `ar:` above at `OUT/runs/{dit,ar}/final` so `trainer generate` finds what it made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineRunConfig {
    /// Everything goes under here: synth/, runs/{codebook,ar,dit,descriptor}, generate/, eval/.
    pub out: std::path::PathBuf,
    pub synth: std::path::PathBuf,
    pub codebook: std::path::PathBuf,
    pub ar: std::path::PathBuf,
    pub dit: std::path::PathBuf,
    pub descriptor: std::path::PathBuf,
    pub eval: std::path::PathBuf,
    /// Codes and prompts of the generated contact sheet.
    pub codes: Vec<u64>,
    pub prompts: Vec<String>,
}

impl Default for PipelineRunConfig {
    fn default() -> Self {
        PipelineRunConfig {
            out: "out/pipeline".into(),
            synth: "configs/synth.yaml".into(),
            codebook: "configs/codebook.yaml".into(),
            ar: "configs/ar.yaml".into(),
            dit: "configs/dit.yaml".into(),
            descriptor: "configs/descriptor.yaml".into(),
            eval: "configs/eval.yaml".into(),
            codes: vec![1234, 99, 7, 2024],
            prompts: vec![
                "a large circle".into(),
                "two stars and a small heart".into(),
                "a triangle above a square".into(),
            ],
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            dit: "out/pipeline/runs/dit/final".into(),
            ar: "out/pipeline/runs/ar/final".into(),
            codebook: std::path::PathBuf::new(),
            ema: true,
            run: PipelineRunConfig::default(),
        }
    }
}

impl Validate for PipelineConfig {
    fn validate(&self, out: &mut Vec<(String, String)>) {
        if self.dit.as_os_str().is_empty() {
            out.push(("dit".into(), "must name the DiT checkpoint".into()));
        }
    }
}

/// Every stage a config file can name.
pub const STAGES: &[&str] = &[
    "codebook",
    "dit",
    "ar",
    "synth",
    "pipeline",
    "descriptor",
    "eval",
];
