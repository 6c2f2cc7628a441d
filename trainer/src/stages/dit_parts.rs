//! The models of the DiT stage, built once from the config (and a checkpoint's trained
//! tensors): the frozen style codebook of stage 1 (images -> code indices -> style
//! embeddings), the text branch (templated prompt with the style embeddings scattered in ->
//! conditioning tokens) and the MMDiT. Training, evaluation and `trainer generate` start here.
//!
//! Names in `model.safetensors`: the MMDiT's parameters under `dit.` (diffusers' Qwen-Image
//! names), the LM's under `text.` when it trains (HF Qwen2 names), EMA copies under `ema.`.
//! The frozen codebook is not saved: the config names its checkpoint.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::codebook_parts::CodebookParts;
use super::dit_text::{Encoded, PromptTemplate};
use crate::config::load_stage_text;
use crate::config::stages::{CodebookConfig, DitConfig};
use crate::models::mmdit::{self, Mmdit};
use crate::models::qwen2;
use crate::models::style_text::StyleTextEncoder;
use crate::models::varmap_from;
use crate::train::checkpoint::{self, restore};

/// Checkpoint prefixes.
pub const DIT: &str = "dit";
pub const TEXT: &str = "text";
pub const EMA: &str = "ema";

/// Mixed into `train.seed` for the LM's init ("TEXT").
const TEXT_SEED: u64 = 0x54_45_58_54;

pub struct DitParts {
    /// Stage 1, frozen.
    pub codebook: CodebookParts,
    pub text: StyleTextEncoder,
    pub dit: Mmdit,
    pub template: PromptTemplate,
    /// Every trainable variable under its checkpoint name.
    varmap: VarMap,
}

/// The stage-1 checkpoint `path` names and its config.
pub fn load_codebook(path: &std::path::Path) -> Result<(CodebookParts, CodebookConfig)> {
    let dir = checkpoint::checkpoint_dir(path).context("the `codebook` checkpoint")?;
    let ck = checkpoint::load(&dir)?;
    let cfg: CodebookConfig =
        load_stage_text(&ck.config_yaml, &dir.join("config.yaml"), "codebook")
            .map_err(|p| anyhow::anyhow!("{p}"))?;
    let parts = CodebookParts::build(&cfg, Some(&ck.model))
        .with_context(|| format!("loading the style codebook {}", dir.display()))?;
    Ok((parts, cfg))
}

/// `cfg` with what 0 leaves to the data filled in: the LM's vocabulary (the tokenizer's) and
/// context (the longest templated prompt of `datasets`), and the DiT's text width (the LM's).
pub fn resolve(cfg: &DitConfig, datasets: &[&data::Dataset]) -> Result<DitConfig> {
    let mut cfg = cfg.clone();
    let dir = checkpoint::checkpoint_dir(&cfg.codebook).context("the `codebook` checkpoint")?;
    let text = std::fs::read_to_string(dir.join("config.yaml"))
        .with_context(|| format!("reading {}", dir.join("config.yaml").display()))?;
    let cb: CodebookConfig = load_stage_text(&text, &dir.join("config.yaml"), "codebook")
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let size = cb.data.image_size as usize;
    let template =
        PromptTemplate::from_file(&cfg.text.tokenizer, cb.encoder.vision.tokens(size, size))?;
    let lm = &mut cfg.text.lm;
    if lm.vocab_size == 0 {
        lm.vocab_size = template.vocab_size();
    }
    if lm.max_position_embeddings == 0 {
        let mut longest = template.length("")?;
        for ds in datasets {
            for item in &ds.items {
                longest = longest.max(template.length(&item.prompt)?);
            }
        }
        lm.max_position_embeddings = longest;
    }
    if cfg.model.text_dim == 0 {
        cfg.model.text_dim = lm.hidden_size;
    }
    cfg.text.lm.check_resolved()?;
    cfg.model.check_resolved()?;
    Ok(cfg)
}

impl DitParts {
    /// `cfg` resolved (LM vocabulary and context, DiT text width); fresh trainable weights
    /// from `train.seed`, or the `trained` tensors of a checkpoint.
    pub fn build(cfg: &DitConfig, trained: Option<&HashMap<String, Tensor>>) -> Result<Self> {
        let dev = Device::Cpu;
        if cfg.model.in_channels != 3 {
            bail!(
                "model.in_channels {} means latent space, which needs a VAE: not implemented \
                 yet (pixel-space configs use 3 channels)",
                cfg.model.in_channels
            );
        }
        let (codebook, cb_cfg) = load_codebook(&cfg.codebook)?;
        if cb_cfg.data.image_size != cfg.data.image_size {
            bail!(
                "the codebook {} sees {} px images, data.image_size is {}: both stages must \
                 run at one size",
                cfg.codebook.display(),
                cb_cfg.data.image_size,
                cfg.data.image_size
            );
        }
        let width = cb_cfg.encoder.vision.out_hidden_size;
        if width != cfg.text.lm.hidden_size {
            bail!(
                "the codebook {} makes style embeddings of width {width}, the text LM's \
                 hidden_size is {}: they go in at the LM's width",
                cfg.codebook.display(),
                cfg.text.lm.hidden_size
            );
        }
        let size = cb_cfg.data.image_size as usize;
        let tokens = cb_cfg.encoder.vision.tokens(size, size);
        let template = PromptTemplate::from_file(&cfg.text.tokenizer, tokens)?;
        let seed = cfg.train.seed;
        let mut dit_t: HashMap<String, Tensor> =
            prefixed(mmdit::init_tensors(&cfg.model, seed)?, DIT);
        let mut lm_t = if cfg.text.weights.is_empty() {
            prefixed(qwen2::init_tensors(&tied(cfg), seed ^ TEXT_SEED)?, TEXT)
        } else {
            let mut out = HashMap::new();
            for f in &cfg.text.weights {
                let ts = candle_core::safetensors::load(f, &dev)
                    .with_context(|| format!("reading LM weights {}", f.display()))?;
                out.extend(ts.into_iter().map(|(k, v)| (format!("{TEXT}.{k}"), v)));
            }
            out
        };
        if let Some(trained) = trained {
            restore(&mut dit_t, trained, "MMDiT")?;
            if cfg.text.trainable {
                let mut fresh: HashMap<String, Tensor> =
                    prefixed(qwen2::init_tensors(&tied(cfg), 0)?, TEXT);
                restore(&mut fresh, trained, "trainable text LM")?;
                lm_t = fresh;
            }
        }
        let mut trainable = dit_t;
        if cfg.text.trainable {
            trainable.extend(lm_t.drain());
        }
        let varmap = varmap_from(trainable)?;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let text_vb = if cfg.text.trainable {
            vb.pp(TEXT)
        } else {
            VarBuilder::from_tensors(lm_t, DType::F32, &dev).pp(TEXT)
        };
        let text = StyleTextEncoder::new(&cfg.text.lm, text_vb).context("building the text LM")?;
        let dit = Mmdit::new(&cfg.model, vb.pp(DIT)).context("building the MMDiT")?;
        Ok(DitParts {
            codebook,
            text,
            dit,
            template,
            varmap,
        })
    }

    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let vars = self.varmap.data().lock().expect("varmap lock");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The MMDiT's variables only (what EMA averages).
    pub fn dit_vars(&self) -> Vec<(String, Var)> {
        let p = format!("{DIT}.");
        self.named_vars()
            .into_iter()
            .filter(|(k, _)| k.starts_with(&p))
            .collect()
    }

    pub fn trained_tensors(&self) -> HashMap<String, Tensor> {
        self.named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// Code indices of images (B, 3, S, S) under the frozen codebook -> (B, N) u32.
    pub fn style_indices(&self, images: &Tensor) -> Result<Tensor> {
        let v = self.codebook.features(images)?;
        Ok(self.codebook.codebook.quantize(&v)?.detach())
    }

    /// The DiT's conditioning: style indices (B, N) (rows with `drop_style` get zero
    /// embeddings: the unconditional style of classifier-free guidance) and prompts (an empty
    /// prompt is the unconditional one) -> (text (B, L, C), mask (B, L)).
    pub fn condition(
        &self,
        idx: &Tensor,
        drop_style: &[bool],
        prompts: &[&str],
    ) -> Result<(Tensor, Tensor)> {
        let style = self.codebook.codebook.embed_indices(idx)?.detach();
        let (b, n, c) = style.dims3()?;
        let keep: Vec<f32> = (0..b)
            .map(|i| {
                if drop_style.get(i).copied().unwrap_or(false) {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let keep = Tensor::from_vec(keep, (b, 1, 1), style.device())?;
        let style = style.broadcast_mul(&keep)?;
        let Encoded {
            ids,
            mask,
            style_at,
            prefix,
        } = self.template.encode(prompts, style.device())?;
        debug_assert_eq!(style.dims(), [b, n, c]);
        let text = self.text.forward(&ids, &style, style_at, prefix)?;
        let l = mask.dim(1)?;
        Ok((text, mask.narrow(1, prefix, l - prefix)?))
    }
}

/// `tensors` with `prefix.` before each name.
fn prefixed(tensors: HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect()
}

/// The LM config as the text encoder builds it (no output head).
fn tied(cfg: &DitConfig) -> qwen2::Qwen2Config {
    qwen2::Qwen2Config {
        tie_word_embeddings: true,
        ..cfg.text.lm.clone()
    }
}
