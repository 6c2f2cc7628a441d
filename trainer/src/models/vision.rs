//! The vision encoder: a ViT in the layout of the Qwen2.5-VL vision tower (Bai et al. 2025,
//! "Qwen2.5-VL Technical Report", section 2.1; HF `transformers`
//! `Qwen2_5_VisionTransformerPretrainedModel` in `models/qwen2_5_vl/modeling_qwen2_5_vl.py`),
//! the frozen feature extractor of the style codebook (DESIGN.md, "Style codebook").
//!
//! images (B, 3, H, W), normalised -> patches of p x p (block order, see `layout.rs`) ->
//! patch embedding -> tokens reordered into window order -> `depth` pre-norm blocks
//! (RMSNorm, attention with 2D RoPE within windows or over the image, RMSNorm, SwiGLU MLP)
//! -> merger (RMSNorm, each m x m group of patches concatenated, Linear-GELU-Linear)
//! -> window order undone -> (B, (H/pm)(W/pm), out_hidden), tokens row-major over the grid.
//!
//! Differences from HF, none of which changes a result: images come as a batch of equal
//! sizes instead of a packed sequence with `grid_thw` (full attention is per image either
//! way); a still image's two temporal slices are one frame, so the Conv3d patch embedding is
//! the linear map of the kernel summed over time; windows are an additive block mask on one
//! fused attention instead of `cu_seqlens` splits.
//!
//! Frozen or trainable is the caller's `VarBuilder`: over plain tensors (`from_tensors`, a
//! safetensors file) no graph is recorded; over a `VarMap` every weight is a `Var`. Names
//! are the HF checkpoint's under `visual.` (the caller passes `vb.pp("visual")`).

mod config;
mod init;
mod layout;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::{AttentionOpts, RopeLayout};

pub use config::VisionConfig;
#[cfg_attr(not(test), allow(unused_imports))] // used by the codebook stage (issue 4)
pub use init::{init_tensors, param_shapes};
use layout::Layout;

use super::layers::{Linear, RmsNorm, SwiGluMlp};

/// The prefix of the tower's tensors in a Qwen2.5-VL checkpoint.
pub const PREFIX: &str = "visual";
/// Colour channels of the input (HF `in_channels`).
const IN_CHANNELS: usize = 3;
/// Every RMSNorm of the tower (fixed in HF's code, not in its config).
const NORM_EPS: f64 = 1e-6;

/// Multi-head self-attention with 2D rotary positions (HF `Qwen2_5_VLVisionAttention`).
#[derive(Debug)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Attention {
            qkv: Linear::new(vb.pp("qkv"), c, 3 * c, true)?,
            proj: Linear::new(vb.pp("proj"), c, c, true)?,
            heads: cfg.num_heads,
        })
    }

    /// x: (B, T, C) in window order, rotary tables `l.cos`/`l.sin` (T, D/2), mask (T, T)
    /// additive or None -> (B, T, C).
    fn forward(&self, x: &Tensor, l: &Layout, mask: Option<&Tensor>) -> Result<Tensor> {
        // (B, T, 3C) is HF's `reshape(seq, 3, heads, -1)` layout, [q heads | k heads | v heads]
        // per token: attention with RoPE on q and k in one op, -> (B, T, C).
        let opts = AttentionOpts {
            mask,
            ..Default::default()
        };
        let rope = Some((&l.cos, &l.sin, RopeLayout::Half));
        let qkv = self.qkv.forward(x)?;
        let o = kernels::attention_packed(&qkv, self.heads, self.heads, rope, &opts)?;
        self.proj.forward(&o)
    }
}

/// Pre-norm transformer block (HF `Qwen2_5_VLVisionBlock`).
#[derive(Debug)]
struct Block {
    norm1: RmsNorm,
    attn: Attention,
    norm2: RmsNorm,
    mlp: SwiGluMlp,
    /// Attends over the whole image (in `fullatt_block_indexes`) rather than within windows.
    full: bool,
}

impl Block {
    fn new(cfg: &VisionConfig, vb: VarBuilder, full: bool) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Block {
            norm1: RmsNorm::new(vb.pp("norm1"), c, NORM_EPS)?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            norm2: RmsNorm::new(vb.pp("norm2"), c, NORM_EPS)?,
            mlp: SwiGluMlp::new(vb.pp("mlp"), cfg.hidden_size, cfg.intermediate_size, true)?,
            full,
        })
    }

    /// x: (B, T, C) in window order -> (B, T, C).
    fn forward(&self, x: &Tensor, l: &Layout) -> Result<Tensor> {
        let mask = if self.full {
            None
        } else {
            l.window_mask.as_ref()
        };
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, l, mask)?)?;
        &x + self.mlp.forward(&self.norm2.forward(&x)?)?
    }
}

/// The patch merger (HF `Qwen2_5_VLPatchMerger`): RMSNorm, then each group of m x m
/// consecutive patches concatenated (m^2 C) -> Linear -> GELU -> Linear -> out_hidden.
#[derive(Debug)]
struct Merger {
    ln_q: RmsNorm,
    fc1: Linear,
    fc2: Linear,
    group: usize,
}

impl Merger {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let group = cfg.spatial_merge_size * cfg.spatial_merge_size;
        let merged = group * cfg.hidden_size;
        Ok(Merger {
            ln_q: RmsNorm::new(vb.pp("ln_q"), cfg.hidden_size, NORM_EPS)?,
            fc1: Linear::new(vb.pp("mlp.0"), merged, merged, true)?,
            fc2: Linear::new(vb.pp("mlp.2"), merged, cfg.out_hidden_size, true)?,
            group,
        })
    }

    /// x: (B, T, C) -> (B, T / m^2, out_hidden).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let x = self
            .ln_q
            .forward(x)?
            .reshape((b, t / self.group, self.group * c))?;
        // nn.GELU() is the exact (erf) GELU; candle's `gelu_erf` has a backward
        // (candle-core 0.11.1 backprop.rs, `UnaryOp::GeluErf`). kernels::gelu_tanh is not it.
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// The Qwen2.5-VL vision tower. Per-resolution constants (window order, rotary tables,
/// window mask) are built on first use of an image size and kept.
#[derive(Debug)]
pub struct VisionEncoder {
    cfg: VisionConfig,
    /// Conv3d kernel (C, 3, temporal, p, p), kept as loaded so a trainable build updates it.
    patch_embed: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    layouts: Mutex<HashMap<(usize, usize), Arc<Layout>>>,
}

impl VisionEncoder {
    /// The tower from `vb` (already at the `visual` prefix). An error listing the config's
    /// problems, or naming a missing or misshapen tensor.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let problems = cfg.problems("");
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("vision encoder config: {}", list.join("; "));
        }
        let p = cfg.patch_size;
        let patch_embed = vb.pp("patch_embed").pp("proj").get(
            (cfg.hidden_size, IN_CHANNELS, cfg.temporal_patch_size, p, p),
            "weight",
        )?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let full = cfg.fullatt_block_indexes.contains(&i);
                Block::new(cfg, vb.pp("blocks").pp(i), full)
            })
            .collect::<Result<_>>()?;
        Ok(VisionEncoder {
            cfg: cfg.clone(),
            patch_embed,
            blocks,
            merger: Merger::new(cfg, vb.pp("merger"))?,
            layouts: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.patch_embed.dtype()
    }

    pub fn device(&self) -> &Device {
        self.patch_embed.device()
    }

    /// images: (B, 3, H, W), normalised, H and W multiples of patch_size * spatial_merge_size
    /// -> (B, (H/pm)(W/pm), out_hidden), tokens row-major over the merged grid. Images are
    /// cast to the weights' dtype. An error naming the shape for anything else.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let (b, h, w) = self.check_images(images)?;
        let l = self.layout(h, w)?;
        let (p, m) = (self.cfg.patch_size, self.cfg.spatial_merge_size);
        let (uh, uw) = (l.units_h, l.units_w);
        // (B, 3, uh, m, p, uw, m, p) -> (B, uh, uw, m, m, 3, p, p): the HF processor's patch
        // order, each patch flattened as (channel, row, column) like the Conv3d kernel.
        let patches = images
            .to_dtype(self.dtype())?
            .reshape(vec![b, IN_CHANNELS, uh, m, p, uw, m, p])?
            .permute(vec![0, 2, 5, 3, 6, 1, 4, 7])?
            .reshape((b, uh * uw, m * m * IN_CHANNELS * p * p))?
            .index_select(&l.order, 1)?
            .reshape((b, uh * uw * m * m, IN_CHANNELS * p * p))?;
        // Both temporal slices of the kernel see the same frame: sum them (differentiable,
        // so a trainable kernel still gets its gradient). (C, 3, t, p, p) -> (C, 3 p p).
        let kernel = self
            .patch_embed
            .sum(2)?
            .reshape((self.cfg.hidden_size, IN_CHANNELS * p * p))?;
        let mut x = kernels::linear(&patches, &kernel, None)?;
        for block in &self.blocks {
            x = block.forward(&x, &l)?;
        }
        self.merger.forward(&x)?.index_select(&l.inverse, 1)
    }

    /// (B, H, W) of valid images; errors name the shape and the rule broken.
    fn check_images(&self, images: &Tensor) -> Result<(usize, usize, usize)> {
        let unit = self.cfg.token_px();
        let &[b, c, h, w] = images.dims() else {
            bail!(
                "vision encoder: images must be (B, 3, H, W), got shape {:?}",
                images.dims()
            );
        };
        if c != IN_CHANNELS {
            bail!(
                "vision encoder: images must have 3 channels (B, 3, H, W), got shape {:?}",
                images.dims()
            );
        }
        if h == 0 || w == 0 || !h.is_multiple_of(unit) || !w.is_multiple_of(unit) {
            bail!(
                "vision encoder: images of shape {:?}: height {h} and width {w} must be positive \
                 multiples of patch_size * spatial_merge_size = {unit}",
                images.dims()
            );
        }
        if b == 0 {
            bail!(
                "vision encoder: images of shape {:?}: the batch is empty",
                images.dims()
            );
        }
        Ok((b, h, w))
    }

    /// The constants for h x w images, built once.
    fn layout(&self, h: usize, w: usize) -> Result<Arc<Layout>> {
        let mut cache = self.layouts.lock().expect("layout cache lock poisoned");
        if let Some(l) = cache.get(&(h, w)) {
            return Ok(l.clone());
        }
        let l = Arc::new(Layout::new(&self.cfg, h, w, self.dtype(), self.device())?);
        cache.insert((h, w), l.clone());
        Ok(l)
    }
}
