//! The two models of the codebook stage, built once from the config (and a checkpoint's
//! trained tensors): the vision encoder that extracts patch features and the style codebook
//! on top. Training, evaluation and `trainer extract` all start here, so a checkpoint is
//! always read back the way it was written.
//!
//! Names in `model.safetensors`: the style codebook's parameters under `style.` and, when
//! the encoder trains, the encoder's under `visual.` (the Hugging Face names). A frozen
//! encoder is not saved: it is a function of its config (seeded init, or `encoder.weights`),
//! which the checkpoint's `config.yaml` records; for the paper's tower that saves 1.3 GB a
//! checkpoint.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::config::stages::CodebookConfig;
use crate::models;
use crate::models::codebook::{self, StyleCodebook};
use crate::models::vision::{self, VisionEncoder};
use crate::train::checkpoint::restore;

/// Prefix of the style codebook's tensors in checkpoints.
pub const STYLE: &str = "style";

/// Mixed into `train.seed` for the codebook's init, so it draws a stream of its own
/// ("STYLE" in ASCII).
const STYLE_SEED: u64 = 0x53_54_59_4c_45;

pub struct CodebookParts {
    pub encoder: VisionEncoder,
    pub codebook: StyleCodebook,
    /// Every trainable variable, under its checkpoint name.
    varmap: VarMap,
}

impl CodebookParts {
    /// Fresh parameters from `train.seed`, or the `trained` tensors of a checkpoint (which
    /// must hold every trainable parameter, with its shape).
    pub fn build(cfg: &CodebookConfig, trained: Option<&HashMap<String, Tensor>>) -> Result<Self> {
        let dev = Device::Cpu;
        let seed = cfg.train.seed;
        let enc_cfg = &cfg.encoder.vision;
        let mut encoder_tensors = if cfg.encoder.weights.is_empty() {
            vision::init_tensors(enc_cfg, seed)?
        } else {
            load_weights(&cfg.encoder.weights)?
        };
        let enc_dim = enc_cfg.out_hidden_size;
        let mut style_tensors: HashMap<String, Tensor> =
            codebook::init_tensors(&cfg.codebook, enc_dim, seed ^ STYLE_SEED)?
                .into_iter()
                .map(|(k, v)| (format!("{STYLE}.{k}"), v))
                .collect();
        if let Some(trained) = trained {
            restore(&mut style_tensors, trained, "style codebook")?;
            if cfg.encoder.trainable {
                restore(&mut encoder_tensors, trained, "trainable encoder")?;
            }
        }
        let mut trainable_tensors = style_tensors;
        if cfg.encoder.trainable {
            trainable_tensors.extend(encoder_tensors.drain());
        }
        let varmap = models::varmap_from(trainable_tensors)?;
        let trainable = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        // A frozen encoder is built from plain tensors: no Var, so no graph is recorded.
        let enc_vb = if cfg.encoder.trainable {
            trainable.pp(vision::PREFIX)
        } else {
            VarBuilder::from_tensors(encoder_tensors, DType::F32, &dev).pp(vision::PREFIX)
        };
        let encoder = VisionEncoder::new(enc_cfg, enc_vb).context("building the vision encoder")?;
        let codebook = StyleCodebook::new(&cfg.codebook, enc_dim, trainable.pp(STYLE))
            .context("building the style codebook")?;
        Ok(CodebookParts {
            encoder,
            codebook,
            varmap,
        })
    }

    /// The trainable variables with their checkpoint names.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let vars = self.varmap.data().lock().expect("varmap lock");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// What a checkpoint's `model.safetensors` holds: every trainable tensor.
    pub fn trained_tensors(&self) -> HashMap<String, Tensor> {
        self.named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// The codebook's raw parameter (K, Dc), for dead-code re-initialisation.
    pub fn codebook_var(&self) -> Result<Var> {
        let name = format!("{STYLE}.{}", codebook::EMBEDDING);
        let vars = self.varmap.data().lock().expect("varmap lock");
        vars.get(&name)
            .cloned()
            .with_context(|| format!("no `{name}` among the trainable variables"))
    }

    /// images: (B, 3, S, S) -> encoder features (B, N, E); no graph when the encoder is
    /// frozen.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.encoder.forward(images)?)
    }
}

/// The tensors of safetensors files (a sharded checkpoint: all shards), as f32.
fn load_weights(files: &[std::path::PathBuf]) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for f in files {
        let ts = candle_core::safetensors::load(f, &Device::Cpu)
            .with_context(|| format!("reading encoder weights {}", f.display()))?;
        for (k, t) in ts {
            out.insert(k, t.to_dtype(DType::F32)?);
        }
    }
    Ok(out)
}
