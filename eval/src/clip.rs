//! CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision"; github.com/openai/CLIP) for two of the evaluation's scores (DESIGN.md,
//! "Evaluation"; issue 7 item 3): **CLIP-T**, the cosine of an image's and its prompt's CLIP
//! embeddings, and a **quality** score after CLIP-IQA (Wang et al. 2023), the softmax
//! probability of "Good photo." over "Bad photo." (formulas in `score.rs`). Inference only.
//!
//! ```text
//! images (any size) -> csd::preprocess (CLIP's resize, crop, mean/std)      -> (B, 3, S, S)
//!   -> the ViT tower = csd::Csd over the HF names (names.rs), its style head
//!      = visual_projection, L2-normalised                                  -> (B, P)
//! prompts -> ClipTokenizer ([BOS, .., EOS, 0..], context_length)           -> (B, 77)
//!   -> TextTower (causal, pooled at argmax(ids) = EOS, text_projection),
//!      L2-normalised                                                       -> (B, P)
//! ```
//!
//! Weights are a Hugging Face `CLIPModel` safetensors file (`openai/clip-vit-large-patch14`'s
//! `model.safetensors`), read with the names as they are: `vision_model.*`,
//! `visual_projection.weight`, `text_model.*`, `text_projection.weight`, `logit_scale`
//! ([`param_shapes`]); a missing or misshapen tensor is an error naming it. The image tower is
//! `eval::csd`'s OpenAI-layout ViT through one name table rather than a second copy of it.

mod config;
pub mod names;
mod score;
mod text;
mod tokenizer;

use std::path::Path;

use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::csd::{l2_normalize, preprocess_batch, Csd};

pub use config::{param_shapes, ClipConfig, ClipTextConfig, ClipVisionConfig};
pub use score::{antonym_probability, mean, pair_cosines, unit_rows, QUALITY_PROMPTS};
pub use text::{eos_positions, TextTower};
pub use tokenizer::{ClipTokenizer, BOS, EOS, PAD_ID};

/// Images or prompts per forward pass in [`Clip`], bounding memory for large evaluations.
pub const DEFAULT_BATCH: usize = 16;

/// CLIP's two towers and its temperature.
#[derive(Debug, Clone)]
pub struct ClipModel {
    cfg: ClipConfig,
    vision: Csd,
    text: TextTower,
    /// `logit_scale`, a scalar (log of the temperature).
    logit_scale: Tensor,
}

impl ClipModel {
    /// The model from `vb` rooted at an HF `CLIPModel` checkpoint's names. An error listing
    /// the config's problems, or naming a missing or misshapen tensor.
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("clip config: {}", list.join("; "));
        }
        let vision = Csd::new(
            &cfg.csd_config(),
            names::HfVisionNames::var_builder(vb.clone()),
        )?;
        Ok(ClipModel {
            cfg: cfg.clone(),
            vision,
            text: TextTower::new(&cfg.text, cfg.projection_dim, &vb)?,
            logit_scale: vb.get((), "logit_scale")?,
        })
    }

    /// Weights memory-mapped from HF safetensors files (one, or the shards of one model),
    /// cast to `dtype` on `device`; other tensors in the files are ignored. Errors name the
    /// files and, for a missing or misshapen tensor, the tensor.
    pub fn from_safetensors<P: AsRef<Path>>(
        cfg: &ClipConfig,
        paths: &[P],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect();
        let at = || format!("CLIP weights {}", names.join(", "));
        // SAFETY: the files are mapped read-only and must not change while the model lives,
        // the contract of every mmaped safetensors load (as the trainer's VAE).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(paths, dtype, device) }
            .map_err(|e| e.context(at()))?;
        ClipModel::new(cfg, vb).map_err(|e| e.context(at()))
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.vision.device()
    }

    /// The image tower (CSD's structure, the HF weights).
    pub fn vision(&self) -> &Csd {
        &self.vision
    }

    pub fn text(&self) -> &TextTower {
        &self.text
    }

    /// exp(logit_scale): the factor on cosines in CLIP's logits (100 for OpenAI's models).
    pub fn logit_scale(&self) -> Result<f64> {
        self.logit_scale
            .to_dtype(DType::F64)?
            .exp()?
            .to_scalar::<f64>()
    }

    /// L2-normalised image embeddings. pixels: (B, 3, S, S) preprocessed (CLIP
    /// normalisation, S = vision.image_size) -> (B, P).
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision.style(pixels)
    }

    /// L2-normalised text embeddings. ids: (B, T) -> (B, P).
    pub fn text_embeds(&self, ids: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.text.embed(ids)?)
    }
}

/// A CLIP model with its tokenizer: the scores on images and prompts.
#[derive(Debug, Clone)]
pub struct Clip {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    batch: usize,
}

impl Clip {
    /// An error when the tokenizer's context length differs from the model's.
    pub fn new(model: ClipModel, tokenizer: ClipTokenizer) -> Result<Self> {
        let l = model.config().text.context_length;
        if tokenizer.context_length() != l {
            bail!(
                "clip: the tokenizer frames {} tokens, the model's text.context_length is {l}",
                tokenizer.context_length()
            );
        }
        Ok(Clip {
            model,
            tokenizer,
            batch: DEFAULT_BATCH,
        })
    }

    /// Weights (HF safetensors) and `tokenizer.json` from files; errors name the file.
    pub fn load(
        cfg: &ClipConfig,
        weights: &Path,
        tokenizer: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let model = ClipModel::from_safetensors(cfg, &[weights], dtype, device)?;
        Clip::new(
            model,
            ClipTokenizer::from_file(tokenizer, cfg.text.context_length)?,
        )
    }

    /// Images or prompts per forward pass (at least 1; default [`DEFAULT_BATCH`]).
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// L2-normalised embeddings of images of any size: images -> (N, P) f32. An error naming
    /// an image that cannot be preprocessed, or for none.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        if images.is_empty() {
            bail!("clip: no images");
        }
        let size = self.model.config().vision.image_size;
        let dev = self.model.device();
        let parts = images
            .chunks(self.batch)
            .enumerate()
            .map(|(c, chunk)| {
                let pixels = preprocess_batch(chunk, size, dev)
                    .map_err(|e| e.context(format!("clip: images from {}", c * self.batch)))?;
                self.model.image_embeds(&pixels)?.to_dtype(DType::F32)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)
    }

    /// L2-normalised embeddings of prompts: prompts -> (N, P) f32. An error for none.
    pub fn embed_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        if prompts.is_empty() {
            bail!("clip: no prompts");
        }
        let dev = self.model.device();
        let parts = prompts
            .chunks(self.batch)
            .map(|chunk| {
                let ids = self.tokenizer.encode_tensor(chunk, dev)?;
                self.model.text_embeds(&ids)?.to_dtype(DType::F32)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)
    }

    /// CLIP-T of each (image, prompt) pair: `cos(E_I(images[i]), E_T(prompts[i]))` in [-1, 1];
    /// [`mean`] of it is the reported figure. An error when the counts differ or are zero.
    pub fn clip_t(&self, images: &[RgbImage], prompts: &[&str]) -> Result<Vec<f64>> {
        if images.len() != prompts.len() {
            bail!(
                "clip-t: {} images but {} prompts; they are scored in pairs",
                images.len(),
                prompts.len()
            );
        }
        pair_cosines(&self.embed_images(images)?, &self.embed_prompts(prompts)?)
    }

    /// The mean CLIP-T over the pairs (the paper's figure).
    pub fn clip_t_mean(&self, images: &[RgbImage], prompts: &[&str]) -> Result<f64> {
        let scores = self.clip_t(images, prompts)?;
        mean(&scores).ok_or_else(|| candle_core::Error::msg("clip-t: no pairs"))
    }

    /// The CLIP-IQA-style quality of each image: P("Good photo." | image) against "Bad
    /// photo." under CLIP's logits, in [0, 1] (`score.rs`). An error for no images.
    pub fn quality(&self, images: &[RgbImage]) -> Result<Vec<f64>> {
        let text = self.embed_prompts(&QUALITY_PROMPTS)?;
        antonym_probability(
            &self.embed_images(images)?,
            &text.get(0)?,
            &text.get(1)?,
            self.model.logit_scale()?,
        )
    }
}
