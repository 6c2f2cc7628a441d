//! `CsdConfig`: the shape of the CSD style descriptor (Somepalli et al. 2024, "Measuring Style
//! Similarity in Diffusion Models", arXiv 2404.01292; github.com/learn2phoenix/CSD,
//! `CSD/model.py`): an OpenAI CLIP `VisionTransformer` (Radford et al. 2021, "Learning
//! Transferable Visual Models From Natural Language Supervision"; github.com/openai/CLIP,
//! `clip/model.py`) without its projection, and two bias-free heads. Field names follow
//! CLIP's constructor (`input_resolution` -> `image_size`, `vision_width` -> `width`, ...).
//! Defaults are [`CsdConfig::vit_l14`], the published CSD model; [`CsdConfig::tiny`] is a
//! CPU test preset.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsdConfig {
    /// Side of the square input in pixels (CLIP `input_resolution`).
    pub image_size: usize,
    /// Side of a square patch in pixels (the stride and kernel of `conv1`).
    pub patch_size: usize,
    /// Width of the transformer (CLIP `vision_width`); also the backbone's feature width.
    pub width: usize,
    /// Residual attention blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Width of each block's QuickGELU MLP (`c_fc` out, `c_proj` in); 4 x width in CLIP.
    pub mlp_width: usize,
    /// Width of the style and content descriptors (the columns of `last_layer_*`).
    pub out_dim: usize,
}

impl Default for CsdConfig {
    fn default() -> Self {
        CsdConfig::vit_l14()
    }
}

impl CsdConfig {
    /// The published CSD model: CLIP ViT-L/14 at 224 px (16 x 16 patches + a class token,
    /// width 1024, 24 blocks of 16 heads, MLP 4096), heads 1024 -> 768.
    pub fn vit_l14() -> Self {
        CsdConfig {
            image_size: 224,
            patch_size: 14,
            width: 1024,
            layers: 24,
            heads: 16,
            mlp_width: 4096,
            out_dim: 768,
        }
    }

    /// Tiny CPU preset for tests: 32 px images -> 4 x 4 patches of 8 px + a class token,
    /// width 32, 2 blocks of 4 heads (head width 8), MLP 128 (4 x width, as CLIP), heads
    /// 32 -> 24. The layout `scripts/convert_csd.py --make-tiny-pickle` writes.
    pub fn tiny() -> Self {
        CsdConfig {
            image_size: 32,
            patch_size: 8,
            width: 32,
            layers: 2,
            heads: 4,
            mlp_width: 128,
            out_dim: 24,
        }
    }

    /// Patches per side: image_size / patch_size.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Tokens per image: grid^2 patches + the class token (rows of `positional_embedding`).
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Per-head width: width / heads.
    pub fn head_dim(&self) -> usize {
        self.width / self.heads.max(1)
    }

    /// Rules beyond the types, as `(key, message)`; empty when the config is usable.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut need = |ok: bool, k: &str, msg: String| {
            if !ok {
                out.push((k.to_string(), msg));
            }
        };
        for (k, v) in [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("width", self.width),
            ("layers", self.layers),
            ("heads", self.heads),
            ("mlp_width", self.mlp_width),
            ("out_dim", self.out_dim),
        ] {
            need(v > 0, k, "must be at least 1".into());
        }
        if self.patch_size > 0 && self.image_size > 0 {
            need(
                self.image_size.is_multiple_of(self.patch_size),
                "image_size",
                format!(
                    "{} must be a multiple of patch_size {}",
                    self.image_size, self.patch_size
                ),
            );
        }
        if self.heads > 0 {
            need(
                self.width.is_multiple_of(self.heads),
                "heads",
                format!("{} does not divide width {}", self.heads, self.width),
            );
        }
        out
    }
}
