//! `MmditConfig`: the shape of the stage-2 diffusion transformer, an MMDiT in the layout of
//! Qwen-Image (diffusers `QwenImageTransformer2DModel`; DESIGN.md, "Style-conditioned
//! diffusion transformer").
//!
//! Presets: [`MmditConfig::tiny`] (tests, CI; also the `Default`), [`MmditConfig::demo`] (the
//! 2-core demo at 64 px) and [`MmditConfig::full`] (Qwen-Image's 20B transformer over 16-channel
//! VAE latents of 1024 px images). The width of the conditioning tokens may be left at 0 in a
//! stage config; the stage then takes it from the text encoder it conditions on.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmditConfig {
    /// Channels of the input and of the predicted velocity: 3 for pixels, the VAE's latent
    /// channels (16 for Qwen-Image) for latents.
    pub in_channels: usize,
    /// Side of a square patch: one image token per patch_size x patch_size pixels/latents.
    pub patch_size: usize,
    /// Width of both streams (diffusers `num_attention_heads * attention_head_dim`).
    pub hidden_size: usize,
    /// Double-stream blocks (diffusers `num_layers`).
    pub depth: usize,
    /// Attention heads; the head width is hidden_size / num_heads.
    pub num_heads: usize,
    /// Width of the GELU-tanh MLPs as a multiple of hidden_size (diffusers `FeedForward` mult).
    pub mlp_ratio: f64,
    /// Width of the conditioning (text) tokens, the text encoder's hidden size (diffusers
    /// `joint_attention_dim`); 0: from the text encoder.
    pub text_dim: usize,
    /// Side of the square input in pixels/latents; sets the fixed position table.
    pub sample_size: usize,
    /// Epsilon of every LayerNorm and RMSNorm.
    pub norm_eps: f64,
    /// adaLN-Zero (DiT): the modulation layers and the output projection start at zero, so the
    /// initial model predicts exactly 0 and every block starts as the identity.
    pub zero_init: bool,
}

impl Default for MmditConfig {
    fn default() -> Self {
        MmditConfig::tiny()
    }
}

impl MmditConfig {
    /// Tests and CI: 32 px RGB, patches of 2 (256 image tokens), 4 blocks of width 128.
    pub fn tiny() -> Self {
        MmditConfig {
            in_channels: 3,
            patch_size: 2,
            hidden_size: 128,
            depth: 4,
            num_heads: 4,
            mlp_ratio: 4.0,
            text_dim: 64,
            sample_size: 32,
            norm_eps: 1e-6,
            zero_init: true,
        }
    }

    /// The 2-core demo (configs/dit.yaml): 64 px RGB, patches of 8 (64 image tokens), 4
    /// blocks of width 128 with 4 heads of 32; the text width is the text encoder's.
    pub fn demo() -> Self {
        MmditConfig {
            patch_size: 8,
            hidden_size: 128,
            depth: 4,
            num_heads: 4,
            text_dim: 0,
            sample_size: 64,
            ..MmditConfig::tiny()
        }
    }

    /// Qwen-Image's transformer (`Qwen/Qwen-Image` transformer/config.json): 60 blocks of
    /// width 3072 (24 heads of 128), patches of 2 over 16-channel latents of 1024 px images
    /// (128 x 128), conditioned on Qwen2.5-VL-7B hidden states (3584).
    pub fn full() -> Self {
        MmditConfig {
            in_channels: 16,
            patch_size: 2,
            hidden_size: 3072,
            depth: 60,
            num_heads: 24,
            mlp_ratio: 4.0,
            text_dim: 3584,
            sample_size: 128,
            norm_eps: 1e-6,
            zero_init: true,
        }
    }

    /// A preset by name: `tiny`, `demo` or `full`.
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "tiny" => MmditConfig::tiny(),
            "demo" => MmditConfig::demo(),
            "full" => MmditConfig::full(),
            other => bail!("unknown model preset `{other}` (tiny, demo, full)"),
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads.max(1)
    }

    /// Width of the MLPs: int(hidden_size * mlp_ratio), as diffusers' `FeedForward`.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Features of one patch: in_channels * patch_size^2.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.patch_size * self.patch_size
    }

    /// Image tokens per side: sample_size / patch_size.
    pub fn grid(&self) -> usize {
        self.sample_size / self.patch_size.max(1)
    }

    /// Rules beyond the types, as `(key, message)`. A zero text_dim is allowed here (the stage
    /// fills it from the text encoder); [`MmditConfig::check_resolved`] refuses it.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut r = crate::config::rules::Rules::new(prefix);
        let (c, h, p) = (self.hidden_size, self.num_heads, self.patch_size);
        r.need(self.in_channels > 0, "in_channels", "must be at least 1");
        r.need(p > 0, "patch_size", "must be at least 1");
        r.need(self.depth > 0, "depth", "must be at least 1");
        r.need(
            c > 0 && c.is_multiple_of(4),
            "hidden_size",
            "must be a positive multiple of 4 (the 2D sin-cos position table)",
        );
        r.need(
            h > 0 && c.is_multiple_of(h.max(1)),
            "num_heads",
            format!("must divide hidden_size {c}"),
        );
        r.need(
            self.head_dim() > 0 && self.head_dim().is_multiple_of(2),
            "num_heads",
            format!("gives a head width {} that is not even", self.head_dim()),
        );
        r.need(
            self.mlp_ratio > 0.0 && self.mlp_hidden() > 0,
            "mlp_ratio",
            "must give an MLP of at least 1 unit",
        );
        r.need(
            self.sample_size > 0 && self.sample_size.is_multiple_of(p.max(1)),
            "sample_size",
            format!("must be a positive multiple of patch_size {p}"),
        );
        r.need(self.norm_eps > 0.0, "norm_eps", "must be positive");
        r.into_vec()
    }

    /// Errors unless the config is valid with text_dim set.
    pub fn check_resolved(&self) -> Result<()> {
        let mut p = self.problems("model");
        if self.text_dim == 0 {
            p.push(("model.text_dim".into(), "is not set".into()));
        }
        if !p.is_empty() {
            let lines: Vec<String> = p.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("invalid MMDiT config: {}", lines.join("; "));
        }
        Ok(())
    }
}
