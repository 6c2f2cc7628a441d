//! `VisionConfig`: the shape of the Qwen2.5-VL vision tower (HF `Qwen2_5_VLVisionConfig`,
//! `configuration_qwen2_5_vl.py`; field names follow it so a checkpoint's `vision_config` maps
//! one to one). Defaults are a tiny CPU preset; [`VisionConfig::qwen2_5_vl_7b`] is the tower
//! the paper freezes (DESIGN.md, "Style codebook": 392 px -> 196 tokens x 3584).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionConfig {
    /// Transformer blocks.
    pub depth: usize,
    /// Width of the blocks.
    pub hidden_size: usize,
    pub num_heads: usize,
    /// Width of the SwiGLU MLP inside each block.
    pub intermediate_size: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Frames per patch of the Conv3d patch embedding; a still image repeats its one frame.
    pub temporal_patch_size: usize,
    /// Side of the square group of patches the merger folds into one output token.
    pub spatial_merge_size: usize,
    /// Side of an attention window in pixels (a multiple of patch_size * spatial_merge_size).
    pub window_size: usize,
    /// Blocks that attend over the whole image; the others attend within windows.
    pub fullatt_block_indexes: Vec<usize>,
    /// Width of the output tokens (the language model's width).
    pub out_hidden_size: usize,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// Std of the seeded random init of weight matrices (`init_tensors`), as HF's
    /// `initializer_range`.
    pub initializer_range: f64,
    /// Side of the square images the encoder is run at; the stage resizes to it.
    pub image_size: usize,
}

impl Default for VisionConfig {
    /// Tiny CPU preset: 64 px images -> 4x4 = 16 tokens of width 64, four 32 px windows,
    /// one windowed block and one full-attention block.
    fn default() -> Self {
        VisionConfig {
            depth: 2,
            hidden_size: 64,
            num_heads: 4,
            intermediate_size: 128,
            patch_size: 8,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 32,
            fullatt_block_indexes: vec![1],
            out_hidden_size: 64,
            rope_theta: 10000.0,
            initializer_range: 0.02,
            image_size: 64,
        }
    }
}

impl VisionConfig {
    #[cfg(test)]
    /// The vision tower of Qwen2.5-VL-7B-Instruct (its `config.json`, `vision_config`), at the
    /// paper's 392 px: a 28x28 patch grid, 14x14 = 196 output tokens of width 3584.
    pub fn qwen2_5_vl_7b() -> Self {
        VisionConfig {
            depth: 32,
            hidden_size: 1280,
            num_heads: 16,
            intermediate_size: 3420,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 112,
            fullatt_block_indexes: vec![7, 15, 23, 31],
            out_hidden_size: 3584,
            rope_theta: 10000.0,
            initializer_range: 0.02,
            image_size: 392,
        }
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Pixels per side of one output token: patch_size * spatial_merge_size.
    pub fn token_px(&self) -> usize {
        self.patch_size * self.spatial_merge_size
    }

    /// Output tokens for an image of h x w pixels (multiples of `token_px`).
    pub fn tokens(&self, h: usize, w: usize) -> usize {
        (h / self.token_px()) * (w / self.token_px())
    }

    /// Side of a window in merged units (HF's `vit_merger_window_size`).
    pub fn window_units(&self) -> usize {
        self.window_size / self.token_px().max(1)
    }

    /// Rules beyond the types, as `(key, message)`; `prefix` is this section's dotted key.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut rules = crate::config::rules::Rules::new(prefix);
        let mut need = |ok: bool, k: &str, msg: String| rules.need(ok, k, msg);
        for (k, v) in [
            ("depth", self.depth),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("out_hidden_size", self.out_hidden_size),
        ] {
            need(v > 0, k, "must be at least 1".into());
        }
        if self.num_heads > 0 {
            need(
                self.hidden_size.is_multiple_of(self.num_heads),
                "num_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_heads, self.hidden_size
                ),
            );
            // Half of each head rotates with the row and half with the column, each by pairs.
            need(
                self.head_dim().is_multiple_of(4),
                "num_heads",
                format!(
                    "head width hidden_size / num_heads = {} must be a multiple of 4 \
                     (2D rotary: pairs for rows and for columns)",
                    self.head_dim()
                ),
            );
        }
        let unit = self.token_px();
        if unit > 0 {
            need(
                self.window_size > 0 && self.window_size.is_multiple_of(unit),
                "window_size",
                format!(
                    "{} must be a positive multiple of patch_size * spatial_merge_size = {unit}",
                    self.window_size
                ),
            );
            need(
                self.image_size > 0 && self.image_size.is_multiple_of(unit),
                "image_size",
                format!(
                    "{} must be a positive multiple of patch_size * spatial_merge_size = {unit}",
                    self.image_size
                ),
            );
        }
        let mut seen = Vec::new();
        for &i in &self.fullatt_block_indexes {
            need(
                i < self.depth,
                "fullatt_block_indexes",
                format!("block {i} does not exist (depth {})", self.depth),
            );
            need(
                !seen.contains(&i),
                "fullatt_block_indexes",
                format!("block {i} is listed twice"),
            );
            seen.push(i);
        }
        need(
            self.rope_theta > 0.0 && self.rope_theta.is_finite(),
            "rope_theta",
            "must be a positive number".into(),
        );
        need(
            self.initializer_range > 0.0 && self.initializer_range.is_finite(),
            "initializer_range",
            "must be a positive number".into(),
        );
        rules.into_vec()
    }
}
