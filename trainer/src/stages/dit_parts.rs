//! The models of the DiT stage, built once from the config (and a checkpoint's trained
//! tensors): the frozen style codebook of stage 1 (images -> code indices -> style
//! embeddings), the text branch (templated prompt with the style embeddings scattered in ->
//! conditioning tokens) and the MMDiT. Training, evaluation and `trainer generate` start here.
//!
//! Names in `model.safetensors`: the MMDiT's parameters under `dit.` (diffusers' Qwen-Image
//! names), the LM's under `text.` when it trains (HF Qwen2 names), EMA copies under `ema.`.
//! The frozen codebook is not saved: the config names its checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::codebook_parts::CodebookParts;
use super::dit_config::StyleInjection;
use super::dit_flow::{velocity, FlowConfig};
use super::dit_text::{Encoded, PromptTemplate};
use crate::config::load_stage_text;
use crate::config::stages::{CodebookConfig, DitConfig};
use crate::models::mmdit::{self, Mmdit};
use crate::models::qwen2;
use crate::models::style_text::StyleTextEncoder;
use crate::models::vae::Vae;
use crate::models::varmap_from;
use crate::train::checkpoint::{self, restore};
use data::config::DataConfig;

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
    /// What the MMDiT's output stands for (`velocity` turns it into one).
    pub flow: FlowConfig,
    /// The frozen autoencoder of a latent-space config (None: pixel space).
    pub vae: Option<Vae>,
    /// How the style reaches the DiT (`text.inject`).
    inject: StyleInjection,
    /// The loader's normalisation, undone before the VAE sees an image.
    data: DataConfig,
    /// Every trainable variable under its checkpoint name.
    varmap: VarMap,
}

/// A trained DiT checkpoint loaded for sampling.
pub struct LoadedDit {
    pub parts: DitParts,
    /// The checkpoint's resolved config (with `codebook` as actually loaded).
    pub config: DitConfig,
    pub checkpoint: PathBuf,
    pub step: u64,
    /// Whether the MMDiT runs on the checkpoint's EMA weights.
    pub ema: bool,
}

/// The stage-1 checkpoint `path` names and its config.
pub fn load_codebook(path: &Path) -> Result<(CodebookParts, CodebookConfig)> {
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
    /// Loads a DiT checkpoint (`step-N`, `final`, or a run folder: its `latest`) for
    /// sampling. `codebook` replaces the stage-1 checkpoint the config names (same width and
    /// image size, or `build` refuses it); `ema` runs the MMDiT on the EMA weights where the
    /// checkpoint has them.
    pub fn load(path: &Path, codebook: Option<&Path>, ema: bool) -> Result<LoadedDit> {
        let dir = checkpoint::checkpoint_dir(path).context("the DiT checkpoint")?;
        let ck = checkpoint::load(&dir)?;
        let mut config: DitConfig =
            load_stage_text(&ck.config_yaml, &dir.join("config.yaml"), "dit")
                .map_err(|p| anyhow::anyhow!("{p}"))?;
        if let Some(cb) = codebook {
            config.codebook = cb.to_path_buf();
        }
        let mut model = ck.model;
        let ema_prefix = format!("{EMA}.");
        let averaged: Vec<(String, Tensor)> = model
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&ema_prefix)?.to_string(), v.clone())))
            .collect();
        let use_ema = ema && !averaged.is_empty();
        if ema && !use_ema {
            tracing::info!(
                "{} has no EMA weights (ema_decay 0): sampling with the trained ones",
                dir.display()
            );
        }
        if use_ema {
            model.extend(averaged);
        }
        let parts = Self::build(&config, Some(&model))
            .with_context(|| format!("loading the DiT checkpoint {}", dir.display()))?;
        Ok(LoadedDit {
            parts,
            config,
            checkpoint: dir,
            step: ck.step,
            ema: use_ema,
        })
    }

    /// `cfg` resolved (LM vocabulary and context, DiT text width); fresh trainable weights
    /// from `train.seed`, or the `trained` tensors of a checkpoint.
    pub fn build(cfg: &DitConfig, trained: Option<&HashMap<String, Tensor>>) -> Result<Self> {
        let dev = Device::Cpu;
        let vae = space_of(cfg)?;
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
            flow: cfg.flow.clone(),
            vae,
            inject: cfg.text.inject,
            data: cfg.data.clone(),
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

    /// The flow velocity at x_t: (B, C, H, W), t: (B), conditioning (text, mask) from
    /// `condition` -> (B, C, H, W), whatever the MMDiT predicts (`flow.prediction`).
    pub fn velocity(
        &self,
        xt: &Tensor,
        t: &Tensor,
        text: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let pred = self.dit.forward(xt, t, text, Some(mask))?;
        velocity(&self.flow, pred, xt, t)
    }

    /// Loader images (B, 3, S, S) -> what the MMDiT denoises: the images themselves in pixel
    /// space, the VAE's scaled latents (B, z, S/f, S/f) in latent space.
    pub fn to_model_space(&self, images: &Tensor) -> Result<Tensor> {
        match &self.vae {
            None => Ok(images.clone()),
            Some(vae) => vae.encode(&unit_range(images, &self.data, false)?),
        }
    }

    /// The inverse of `to_model_space`: samples -> loader-normalised images (B, 3, S, S).
    pub fn to_images(&self, x: &Tensor) -> Result<Tensor> {
        match &self.vae {
            None => Ok(x.clone()),
            Some(vae) => unit_range(&vae.decode(x)?, &self.data, true),
        }
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
        let text = match self.inject {
            StyleInjection::TextBranch => self.text.forward(&ids, &style, style_at, prefix)?,
            StyleInjection::Direct => self.text.forward_direct(&ids, &style, style_at, prefix)?,
        };
        let l = mask.dim(1)?;
        Ok((text, mask.narrow(1, prefix, l - prefix)?))
    }
}

/// The frozen VAE a latent-space config names, after checking that the DiT's input fits
/// the space: 3 channels at the image size for pixels, the VAE's channels at the image size
/// over its down-scaling for latents.
fn space_of(cfg: &DitConfig) -> Result<Option<Vae>> {
    let (m, size) = (&cfg.model, cfg.data.image_size as usize);
    let Some(v) = &cfg.vae else {
        if m.in_channels != 3 || m.sample_size != size {
            bail!(
                "model.in_channels {} and model.sample_size {} do not fit {size} px RGB pixels \
                 (3 and {size}); latent space needs a `vae:` section",
                m.in_channels,
                m.sample_size
            );
        }
        return Ok(None);
    };
    let f = v.downscale();
    if m.in_channels != v.z_channels || m.sample_size * f != size {
        bail!(
            "model.in_channels {} and model.sample_size {} do not fit the VAE's latents of \
             {size} px images ({} channels, side {size}/{f})",
            m.in_channels,
            m.sample_size,
            v.z_channels
        );
    }
    Ok(Some(Vae::load(v, &Device::Cpu)?))
}

/// Loader normalisation (x - mean) / std <-> the [-1, 1] range the VAE works in, per channel:
/// images (B, 3, H, W) -> (B, 3, H, W); `inverse` goes from [-1, 1] back.
fn unit_range(x: &Tensor, data: &DataConfig, inverse: bool) -> Result<Tensor> {
    let dev = x.device();
    let std = Tensor::new(&data.std, dev)?.reshape((1, 3, 1, 1))?;
    let mean = Tensor::new(&data.mean, dev)?.reshape((1, 3, 1, 1))?;
    // pixels in [0, 1] = x std + mean; the VAE's range = 2 pixels - 1.
    Ok(if inverse {
        let pixels = x.affine(0.5, 0.5)?;
        pixels.broadcast_sub(&mean)?.broadcast_div(&std)?
    } else {
        x.broadcast_mul(&std)?
            .broadcast_add(&mean)?
            .affine(2.0, -1.0)?
    })
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
