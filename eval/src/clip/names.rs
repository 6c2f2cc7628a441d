//! The one table from the CSD model's tensor names (OpenAI CLIP's `VisionTransformer`,
//! github.com/openai/CLIP `clip/model.py`, as `csd.rs` reads them) to the Hugging Face
//! `CLIPModel` names (transformers, `models/clip/modeling_clip.py`), so that CLIP's image tower
//! is `csd::Csd` over an HF checkpoint rather than a second copy of the ViT (DESIGN.md, "Rules
//! of the house": where names differ, one table in one file maps them).
//!
//! The two towers compute the same function: HF's `CLIPVisionEmbeddings` is OpenAI's `conv1`
//! (no bias) + class token + positions, `pre_layrnorm`/`post_layernorm` are `ln_pre`/`ln_post`,
//! each `CLIPEncoderLayer` is a `ResidualAttentionBlock` (pre-LN, scale 1/√D, QuickGELU, LN eps
//! 1e-5), and the pooled output is `post_layernorm` of the class token. Three differences in
//! storage only:
//!
//! - OpenAI fuses q, k, v into `attn.in_proj_{weight,bias}` (rows [q | k | v]); HF keeps
//!   `self_attn.{q,k,v}_proj`: the adapter concatenates them along rows.
//! - OpenAI's `proj` is (C, P) applied as `x @ proj`; HF's `visual_projection.weight` is an
//!   `nn.Linear` weight (P, C): CSD's style head is read as its transpose, so `Csd::style` is
//!   CLIP's L2-normalised image embedding. The content head is the same matrix (unused).
//! - The rest is renamed one to one (the table below).

use candle_core::{bail, DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::csd::{BACKBONE, CONTENT_HEAD, STYLE_HEAD};

/// CSD name (under `backbone.`) -> HF name, one to one.
const TOWER: [(&str, &str); 7] = [
    ("class_embedding", "vision_model.embeddings.class_embedding"),
    (
        "positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
    ),
    (
        "conv1.weight",
        "vision_model.embeddings.patch_embedding.weight",
    ),
    ("ln_pre.weight", "vision_model.pre_layrnorm.weight"),
    ("ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("ln_post.weight", "vision_model.post_layernorm.weight"),
    ("ln_post.bias", "vision_model.post_layernorm.bias"),
];

/// CSD name under `backbone.transformer.resblocks.N.` -> HF name under
/// `vision_model.encoder.layers.N.`, one to one.
const BLOCK: [(&str, &str); 10] = [
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
];

/// CSD's fused attention input (under a block) -> HF's suffix of the q, k, v projections.
const FUSED: [(&str, &str); 2] = [
    ("attn.in_proj_weight", "weight"),
    ("attn.in_proj_bias", "bias"),
];

/// The HF projection CSD's heads are read from, transposed.
const PROJECTION: &str = "visual_projection.weight";

/// Where a CSD tensor comes from in an HF checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The same tensor under another name.
    Renamed(String),
    /// Rows [q | k | v] of three tensors.
    Fused([String; 3]),
    /// The transpose of a 2-D tensor.
    Transposed(String),
}

/// The HF source of the CSD tensor `name`, or None for a name the CSD tower does not read.
pub fn source(name: &str) -> Option<Source> {
    if name == STYLE_HEAD || name == CONTENT_HEAD {
        return Some(Source::Transposed(PROJECTION.into()));
    }
    let rest = name.strip_prefix(BACKBONE)?.strip_prefix('.')?;
    if let Some((_, hf)) = TOWER.iter().find(|(csd, _)| *csd == rest) {
        return Some(Source::Renamed(hf.to_string()));
    }
    let rest = rest.strip_prefix("transformer.resblocks.")?;
    let (layer, inner) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = |s: &str| format!("vision_model.encoder.layers.{layer}.{s}");
    if let Some((_, hf_name)) = BLOCK.iter().find(|(csd, _)| *csd == inner) {
        return Some(Source::Renamed(hf(hf_name)));
    }
    let (_, suffix) = FUSED.iter().find(|(csd, _)| *csd == inner)?;
    Some(Source::Fused(
        ["q_proj", "k_proj", "v_proj"].map(|p| hf(&format!("self_attn.{p}.{suffix}"))),
    ))
}

/// A [`SimpleBackend`] answering the CSD names out of a `VarBuilder` over an HF checkpoint
/// (rooted where `vision_model.` resolves). Missing or misshapen tensors are errors naming the
/// HF tensor (the inner builder's own errors).
pub struct HfVisionNames<'a> {
    hf: VarBuilder<'a>,
}

impl<'a> HfVisionNames<'a> {
    pub fn new(hf: VarBuilder<'a>) -> Self {
        HfVisionNames { hf }
    }

    /// A `VarBuilder` with the CSD names over `hf`, in `hf`'s dtype and device.
    pub fn var_builder(hf: VarBuilder<'a>) -> VarBuilder<'a> {
        let (dtype, device) = (hf.dtype(), hf.device().clone());
        VarBuilder::from_backend(Box::new(HfVisionNames::new(hf)), dtype, device)
    }
}

impl SimpleBackend for HfVisionNames<'_> {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let dims = s.dims().to_vec();
        let t = match source(name) {
            Some(Source::Renamed(hf)) => self.hf.get(dims, &hf)?,
            Some(Source::Fused(parts)) => {
                let mut part = dims.clone();
                if part.is_empty() || !part[0].is_multiple_of(3) {
                    bail!("clip: {name} must have a multiple of 3 rows, asked for {dims:?}");
                }
                part[0] /= 3;
                let parts = parts
                    .iter()
                    .map(|hf| self.hf.get(part.clone(), hf))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
            Some(Source::Transposed(hf)) => {
                let &[r, c] = dims.as_slice() else {
                    bail!("clip: {name} must be 2-D, asked for {dims:?}");
                };
                self.hf.get((c, r), &hf)?.t()?.contiguous()?
            }
            None => bail!("clip: the CSD tensor {name} has no Hugging Face CLIP name"),
        };
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        bail!("clip: {name} can only be read with its shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match source(name) {
            Some(Source::Renamed(hf)) | Some(Source::Transposed(hf)) => {
                self.hf.contains_tensor(&hf)
            }
            Some(Source::Fused(parts)) => parts.iter().all(|hf| self.hf.contains_tensor(hf)),
            None => false,
        }
    }
}
