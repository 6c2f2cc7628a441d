//! Seeded random weights for the vision tower, with the HF checkpoint's tensor names, for tiny
//! configs trained from scratch (real configs load a checkpoint instead). As HF's
//! `PreTrainedModel._init_weights` for Qwen2.5-VL: weight matrices (and the Conv3d patch
//! kernel) ~ N(0, initializer_range^2), here truncated at two std so no draw is an outlier;
//! biases 0; RMSNorm gains 1.
//!
//! Every tensor draws from its own stream, `tensor_rng(seed, name)`: a tensor's
//! values depend only on the seed and its name, not on the order or the set of the others.

use std::collections::HashMap;

use crate::models::init::hf_init;
use candle_core::{Result, Tensor};

use super::{VisionConfig, PREFIX};

/// Every parameter of the tower: (full HF name under `visual.`, shape).
pub fn param_shapes(cfg: &VisionConfig) -> Vec<(String, Vec<usize>)> {
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let merged = c * cfg.spatial_merge_size * cfg.spatial_merge_size;
    let p = cfg.patch_size;
    let mut out = vec![(
        "patch_embed.proj.weight".to_string(),
        vec![c, super::IN_CHANNELS, cfg.temporal_patch_size, p, p],
    )];
    for i in 0..cfg.depth {
        let b = |s: &str| format!("blocks.{i}.{s}");
        out.extend([
            (b("norm1.weight"), vec![c]),
            (b("norm2.weight"), vec![c]),
            (b("attn.qkv.weight"), vec![3 * c, c]),
            (b("attn.qkv.bias"), vec![3 * c]),
            (b("attn.proj.weight"), vec![c, c]),
            (b("attn.proj.bias"), vec![c]),
            (b("mlp.gate_proj.weight"), vec![f, c]),
            (b("mlp.gate_proj.bias"), vec![f]),
            (b("mlp.up_proj.weight"), vec![f, c]),
            (b("mlp.up_proj.bias"), vec![f]),
            (b("mlp.down_proj.weight"), vec![c, f]),
            (b("mlp.down_proj.bias"), vec![c]),
        ]);
    }
    out.extend([
        ("merger.ln_q.weight".to_string(), vec![c]),
        ("merger.mlp.0.weight".to_string(), vec![merged, merged]),
        ("merger.mlp.0.bias".to_string(), vec![merged]),
        (
            "merger.mlp.2.weight".to_string(),
            vec![cfg.out_hidden_size, merged],
        ),
        ("merger.mlp.2.bias".to_string(), vec![cfg.out_hidden_size]),
    ]);
    out.into_iter()
        .map(|(name, shape)| (format!("{PREFIX}.{name}"), shape))
        .collect()
}

/// Seeded random weights (f32, CPU) for every parameter of the tower, named as the HF
/// checkpoint (`visual.blocks.0.attn.qkv.weight`, ...). Frozen build:
/// `VarBuilder::from_tensors(init_tensors(cfg, seed), dtype, dev).pp("visual")`; trainable:
/// the same through `models::varmap_from` and `VarBuilder::from_varmap`.
pub fn init_tensors(cfg: &VisionConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let std = cfg.initializer_range as f32;
    param_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let is_norm = |n: &str| n.contains("norm") || n.contains("ln_q");
            let t = hf_init(seed, &name, &shape, std, is_norm)?;
            Ok((name, t))
        })
        .collect()
}
