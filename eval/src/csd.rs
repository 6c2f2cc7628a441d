//! The CSD style descriptor (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion
//! Models", arXiv 2404.01292; github.com/learn2phoenix/CSD, `CSD/model.py`, `CSD_CLIP`), the
//! style embedding of the evaluation (DESIGN.md, "Evaluation"): the OpenAI CLIP ViT-L/14
//! visual tower (Radford et al. 2021, "Learning Transferable Visual Models From Natural
//! Language Supervision"; github.com/openai/CLIP, `clip/model.py`, `VisionTransformer`)
//! without its projection `proj`, then two bias-free heads, each L2-normalised:
//!
//! ```text
//! images (B, 3, S, S), CLIP-normalised (preprocess.rs)
//!  -> conv1 (patch p, stride p, no bias) as a linear map of flattened patches -> (B, g², C)
//!  -> [class_embedding; patches] + positional_embedding -> ln_pre          -> (B, g²+1, C)
//!  -> `layers` x ResidualAttentionBlock:
//!       x += out_proj(MHA(ln_1(x)))   (in_proj: one fused q/k/v matrix (3C, C), scale 1/√D)
//!       x += c_proj(QuickGELU(c_fc(ln_2(x))))   QuickGELU(x) = x·sigmoid(1.702 x)
//!  -> ln_post(class token) = feature                                       -> (B, C)
//!  -> style = normalize(feature @ last_layer_style),  content = normalize(feature @
//!     last_layer_content)   (both (C, out) matrices, `x @ W`)              -> (B, out) each
//! ```
//!
//! LayerNorm eps 1e-5 (torch's default, CLIP's `LayerNorm`). In CSD both heads start as
//! copies of CLIP's `proj` (`copy.deepcopy(self.backbone.proj)`) and are then trained;
//! `backbone.proj` is set to None, so checkpoints do not hold it (one that does loads; it is
//! ignored).
//!
//! Tensor names are CSD's `state_dict` without DataParallel's `module.` prefix
//! (`scripts/convert_csd.py` writes them): `backbone.conv1.weight`,
//! `backbone.transformer.resblocks.N.attn.in_proj_weight`, ..., `last_layer_style`,
//! `last_layer_content`; [`param_shapes`] lists them all. Every op keeps gradients (the
//! `kernels` ops and candle ops with a backward), so over a `VarMap` the model is trainable,
//! for an offline descriptor; over a safetensors file nothing is recorded.

mod config;
mod preprocess;
mod resample;

use std::path::Path;

use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::AttentionOpts;

pub use config::CsdConfig;
pub use preprocess::{
    batch, center_crop_offset, preprocess, preprocess_batch, resize_and_crop, resized_dims,
    CLIP_MEAN, CLIP_STD,
};
pub use resample::resize_bicubic;

/// The prefix of the CLIP tower's tensors.
pub const BACKBONE: &str = "backbone";
/// The style head (C, out), applied as `feature @ W`.
pub const STYLE_HEAD: &str = "last_layer_style";
/// The content head (C, out), applied as `feature @ W`.
pub const CONTENT_HEAD: &str = "last_layer_content";
/// Every LayerNorm of the tower (torch's default, kept by CLIP).
pub const LN_EPS: f64 = 1e-5;
/// QuickGELU(x) = x * sigmoid(QUICK_GELU * x) (CLIP's `QuickGELU`).
const QUICK_GELU: f64 = 1.702;
/// Colour channels of the input.
const IN_CHANNELS: usize = 3;
/// The prefix DataParallel adds to every name; [`Csd::from_safetensors`] drops it.
const DATA_PARALLEL_PREFIX: &str = "module.";

/// Every tensor the model reads, `(name, shape)`: the backbone in CLIP's `state_dict` order,
/// then the two heads.
pub fn param_shapes(cfg: &CsdConfig) -> Vec<(String, Vec<usize>)> {
    let (c, p, m) = (cfg.width, cfg.patch_size, cfg.mlp_width);
    let b = |n: &str| format!("{BACKBONE}.{n}");
    let mut out = vec![
        (b("class_embedding"), vec![c]),
        (b("positional_embedding"), vec![cfg.tokens(), c]),
        (b("conv1.weight"), vec![c, IN_CHANNELS, p, p]),
        (b("ln_pre.weight"), vec![c]),
        (b("ln_pre.bias"), vec![c]),
    ];
    for i in 0..cfg.layers {
        let r = |n: &str| b(&format!("transformer.resblocks.{i}.{n}"));
        out.extend([
            (r("attn.in_proj_weight"), vec![3 * c, c]),
            (r("attn.in_proj_bias"), vec![3 * c]),
            (r("attn.out_proj.weight"), vec![c, c]),
            (r("attn.out_proj.bias"), vec![c]),
            (r("ln_1.weight"), vec![c]),
            (r("ln_1.bias"), vec![c]),
            (r("mlp.c_fc.weight"), vec![m, c]),
            (r("mlp.c_fc.bias"), vec![m]),
            (r("mlp.c_proj.weight"), vec![c, m]),
            (r("mlp.c_proj.bias"), vec![c]),
            (r("ln_2.weight"), vec![c]),
            (r("ln_2.bias"), vec![c]),
        ]);
    }
    out.extend([
        (b("ln_post.weight"), vec![c]),
        (b("ln_post.bias"), vec![c]),
        (STYLE_HEAD.to_string(), vec![c, cfg.out_dim]),
        (CONTENT_HEAD.to_string(), vec![c, cfg.out_dim]),
    ]);
    out
}

/// CLIP's `LayerNorm` (weight and bias (C), eps 1e-5) on `kernels::layer_norm`.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
        })
    }

    /// x: (…, C) -> (…, C).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::layer_norm(x, &self.weight, Some(&self.bias), LN_EPS)
    }
}

/// `torch.nn.Linear`-shaped weight (out, in) and bias (out) under `vb` with names `w`, `b`.
fn linear_params(vb: &VarBuilder, inp: usize, out: usize, w: &str, b: &str) -> Result<[Tensor; 2]> {
    Ok([vb.get((out, inp), w)?, vb.get(out, b)?])
}

/// CLIP's `ResidualAttentionBlock`: pre-LN multi-head self-attention and QuickGELU MLP.
#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    /// `attn.in_proj_{weight,bias}`: (3C, C), (3C); rows [q | k | v], heads in order.
    in_proj: [Tensor; 2],
    /// `attn.out_proj.{weight,bias}`: (C, C), (C).
    out_proj: [Tensor; 2],
    ln_2: LayerNorm,
    /// `mlp.c_fc.{weight,bias}`: (M, C), (M).
    c_fc: [Tensor; 2],
    /// `mlp.c_proj.{weight,bias}`: (C, M), (C).
    c_proj: [Tensor; 2],
    heads: usize,
}

impl Block {
    fn new(cfg: &CsdConfig, vb: VarBuilder) -> Result<Self> {
        let (c, m) = (cfg.width, cfg.mlp_width);
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Block {
            ln_1: LayerNorm::new(vb.pp("ln_1"), c)?,
            in_proj: linear_params(&attn, c, 3 * c, "in_proj_weight", "in_proj_bias")?,
            out_proj: linear_params(&attn.pp("out_proj"), c, c, "weight", "bias")?,
            ln_2: LayerNorm::new(vb.pp("ln_2"), c)?,
            c_fc: linear_params(&mlp.pp("c_fc"), c, m, "weight", "bias")?,
            c_proj: linear_params(&mlp.pp("c_proj"), m, c, "weight", "bias")?,
            heads: cfg.heads,
        })
    }

    /// x: (B, T, C) -> (B, T, C).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let lin = |x: &Tensor, [w, b]: &[Tensor; 2]| kernels::linear(x, w, Some(b));
        // (B, T, 3C) is [q heads | k heads | v heads] per token, as nn.MultiheadAttention
        // splits its in_proj output; attention_packed takes that layout, scale 1/sqrt(D).
        let qkv = lin(&self.ln_1.forward(x)?, &self.in_proj)?;
        let o = kernels::attention_packed(
            &qkv,
            self.heads,
            self.heads,
            None,
            &AttentionOpts::default(),
        )?;
        let x = (x + lin(&o, &self.out_proj)?)?;
        let h = lin(&self.ln_2.forward(&x)?, &self.c_fc)?;
        &x + lin(&quick_gelu(&h)?, &self.c_proj)?
    }
}

/// CLIP's QuickGELU, x * sigmoid(1.702 x), of candle ops with a backward.
fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    x * candle_nn::ops::sigmoid(&(x * QUICK_GELU)?)?
}

/// Rows divided by their L2 norm (floored at 1e-12, as torch's `F.normalize`).
/// x: (B, D) -> (B, D).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

/// The CSD model: CLIP ViT visual tower without `proj`, style and content heads.
#[derive(Debug, Clone)]
pub struct Csd {
    cfg: CsdConfig,
    /// `conv1.weight` (C, 3, p, p), kept as loaded so a trainable build updates it.
    conv1: Tensor,
    /// (C).
    class_embedding: Tensor,
    /// (g² + 1, C).
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    blocks: Vec<Block>,
    ln_post: LayerNorm,
    /// (C, out).
    style: Tensor,
    /// (C, out).
    content: Tensor,
}

impl Csd {
    /// The model from `vb`, rooted where `backbone.` and `last_layer_*` resolve. An error
    /// listing the config's problems, or naming a missing or misshapen tensor.
    pub fn new(cfg: &CsdConfig, vb: VarBuilder) -> Result<Self> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("csd config: {}", list.join("; "));
        }
        let (c, p) = (cfg.width, cfg.patch_size);
        let bb = vb.pp(BACKBONE);
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(cfg, bb.pp("transformer").pp("resblocks").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Csd {
            cfg: cfg.clone(),
            conv1: bb.pp("conv1").get((c, IN_CHANNELS, p, p), "weight")?,
            class_embedding: bb.get(c, "class_embedding")?,
            positional_embedding: bb.get((cfg.tokens(), c), "positional_embedding")?,
            ln_pre: LayerNorm::new(bb.pp("ln_pre"), c)?,
            blocks,
            ln_post: LayerNorm::new(bb.pp("ln_post"), c)?,
            style: vb.get((c, cfg.out_dim), STYLE_HEAD)?,
            content: vb.get((c, cfg.out_dim), CONTENT_HEAD)?,
        })
    }

    /// Frozen weights from a safetensors file in our layout (`scripts/convert_csd.py`), cast
    /// to `dtype` on `device`. Names with DataParallel's `module.` prefix are accepted too;
    /// any other tensor (`backbone.proj`, extras) is ignored. Errors name the file and, for a
    /// missing or misshapen tensor, the tensor.
    pub fn from_safetensors(
        cfg: &CsdConfig,
        path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let at = || format!("CSD weights {}", path.display());
        let tensors = candle_core::safetensors::load(path, device).map_err(|e| e.context(at()))?;
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| match k.strip_prefix(DATA_PARALLEL_PREFIX) {
                Some(rest) => (rest.to_string(), v),
                None => (k, v),
            })
            .collect();
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        Csd::new(cfg, vb).map_err(|e| e.context(at()))
    }

    pub fn config(&self) -> &CsdConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.conv1.dtype()
    }

    pub fn device(&self) -> &Device {
        self.conv1.device()
    }

    /// The backbone's output, CSD's `feature` (CLIP's `ln_post` of the class token, no
    /// `proj`). images: (B, 3, S, S) preprocessed, S = image_size, cast to the weights'
    /// dtype -> (B, C). An error naming the shape for anything else.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let b = self.check_images(images)?;
        let (c, p, g) = (self.cfg.width, self.cfg.patch_size, self.cfg.grid());
        // (B, 3, g, p, g, p) -> (B, g, g, 3, p, p): each patch flattened as (channel, row,
        // column) like conv1's kernel, patches row-major as CLIP's `reshape(B, C, g*g)`.
        let patches = images
            .to_dtype(self.dtype())?
            .reshape(vec![b, IN_CHANNELS, g, p, g, p])?
            .permute(vec![0, 2, 4, 1, 3, 5])?
            .reshape((b, g * g, IN_CHANNELS * p * p))?;
        let kernel = self.conv1.reshape((c, IN_CHANNELS * p * p))?;
        let x = kernels::linear(&patches, &kernel, None)?;
        let cls = self
            .class_embedding
            .reshape((1, 1, c))?
            .broadcast_as((b, 1, c))?;
        let x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.positional_embedding)?;
        let mut x = self.ln_pre.forward(&x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.ln_post.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// (style, content) descriptors, each L2-normalised.
    /// images: (B, 3, S, S) preprocessed -> ((B, out), (B, out)).
    pub fn embed(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let f = self.features(images)?;
        Ok((self.head(&f, &self.style)?, self.head(&f, &self.content)?))
    }

    /// The style descriptor alone (the evaluation's embedding).
    /// images: (B, 3, S, S) preprocessed -> (B, out), L2-normalised.
    pub fn style(&self, images: &Tensor) -> Result<Tensor> {
        self.head(&self.features(images)?, &self.style)
    }

    /// normalize(feature @ W). feature: (B, C), w: (C, out) -> (B, out).
    fn head(&self, feature: &Tensor, w: &Tensor) -> Result<Tensor> {
        // kernels::linear takes nn.Linear's (out, in); Wᵀ is a view, no copy.
        l2_normalize(&kernels::linear(feature, &w.t()?, None)?)
    }

    /// B of valid images; errors name the shape and the rule broken.
    fn check_images(&self, images: &Tensor) -> Result<usize> {
        let s = self.cfg.image_size;
        match images.dims() {
            &[b, IN_CHANNELS, h, w] if h == s && w == s && b > 0 => Ok(b),
            dims => bail!(
                "csd: images must be (B, 3, {s}, {s}) with B >= 1 (preprocessed to \
                 image_size {s}), got shape {dims:?}"
            ),
        }
    }
}
