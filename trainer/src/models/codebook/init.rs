//! Parameter names, shapes and seeded initial values of the style codebook. There is no
//! reference checkpoint for this part of CoTyle (arXiv 2511.10555), so the names are ours:
//!
//! ```text
//! proj.attn_norm.weight     (E)          RMSNorm gain before the projection's attention
//! proj.attn.qkv.{weight,bias}  (3E, E), (3E)   fused q|k|v, rows in that order
//! proj.attn.out.{weight,bias}  (E, E), (E)
//! proj.mlp_norm.weight      (E)
//! proj.mlp.wi.{weight,bias}    (2H, E), (2H)   GeGLU input: rows [a | b], a is gated
//! proj.mlp.wo.{weight,bias}    (Dc, H), (Dc)
//! codebook.embedding        (K, Dc)      raw rows; the model uses them L2-normalised
//! mirror.mlp_norm.weight    (Dc)
//! mirror.mlp.wi.{weight,bias}  (2H, Dc), (2H)
//! mirror.mlp.wo.{weight,bias}  (E, H), (E)
//! mirror.attn_norm.weight   (E)
//! mirror.attn.qkv.{weight,bias}, mirror.attn.out.{weight,bias}   as in proj
//! ```
//! (E encoder width, H `mlp_hidden`, K `codes`, Dc `code_dim`.)
//!
//! Values follow PyTorch's defaults for a model built from `nn.Linear` and `nn.RMSNorm`, as a
//! reference implementation would be: Linear weights and biases ~ U(-1/sqrt(fan_in),
//! 1/sqrt(fan_in)) (`kaiming_uniform_(a=sqrt(5))`), RMSNorm gains 1. Codebook rows are
//! uniformly random directions (normal draws, L2-normalised). Every tensor draws from its own
//! stream `tensor_rng(seed, name)`, so its values depend on the seed and its name
//! only (as `models/vision/init.rs`).

use std::collections::HashMap;

use crate::models::init::tensor_rng;
use candle_core::{DType, Device, Result, Tensor};

use super::StyleCodebookConfig;

/// Every parameter: (name, shape), in the order of the table above.
pub fn param_shapes(cfg: &StyleCodebookConfig, enc_dim: usize) -> Vec<(String, Vec<usize>)> {
    let (e, h, k, dc) = (enc_dim, cfg.mlp_hidden, cfg.codes, cfg.code_dim);
    let attn = |p: &str| {
        vec![
            (format!("{p}.attn_norm.weight"), vec![e]),
            (format!("{p}.attn.qkv.weight"), vec![3 * e, e]),
            (format!("{p}.attn.qkv.bias"), vec![3 * e]),
            (format!("{p}.attn.out.weight"), vec![e, e]),
            (format!("{p}.attn.out.bias"), vec![e]),
        ]
    };
    let mlp = |p: &str, inp: usize, out: usize| {
        vec![
            (format!("{p}.mlp_norm.weight"), vec![inp]),
            (format!("{p}.mlp.wi.weight"), vec![2 * h, inp]),
            (format!("{p}.mlp.wi.bias"), vec![2 * h]),
            (format!("{p}.mlp.wo.weight"), vec![out, h]),
            (format!("{p}.mlp.wo.bias"), vec![out]),
        ]
    };
    let mut out = attn("proj");
    out.extend(mlp("proj", e, dc));
    out.push(("codebook.embedding".to_string(), vec![k, dc]));
    out.extend(mlp("mirror", dc, e));
    out.extend(attn("mirror"));
    out
}

/// Seeded initial values (f32, CPU) of every parameter, named as [`param_shapes`]. Trainable
/// build: `VarBuilder::from_varmap(&models::varmap_from(init_tensors(..)?)?, dtype, dev)`.
pub fn init_tensors(
    cfg: &StyleCodebookConfig,
    enc_dim: usize,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    let shapes = param_shapes(cfg, enc_dim);
    // A layer's fan-in is its weight's row width; a bias takes its weight's.
    let fan_in: HashMap<&str, usize> = shapes
        .iter()
        .filter(|(_, s)| s.len() == 2)
        .map(|(n, s)| (n.strip_suffix(".weight").unwrap_or(n), s[1]))
        .collect();
    shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let mut rng = tensor_rng(seed, name);
            let t = if name.ends_with("norm.weight") {
                Tensor::ones(shape.as_slice(), DType::F32, &dev)?
            } else if name == "codebook.embedding" {
                let raw: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                Tensor::from_vec(unit_rows(&raw, shape[1])?, shape.as_slice(), &dev)?
            } else {
                let layer = name
                    .strip_suffix(".weight")
                    .or_else(|| name.strip_suffix(".bias"))
                    .unwrap_or(name);
                let bound = 1.0 / (fan_in.get(layer).copied().unwrap_or(1).max(1) as f32).sqrt();
                let v: Vec<f32> = (0..n).map(|_| rng.range_f32(-bound, bound)).collect();
                Tensor::from_vec(v, shape.as_slice(), &dev)?
            };
            Ok((name.clone(), t))
        })
        .collect()
}

/// Rows of width `d` scaled to unit L2 norm (a zero row, probability 0, is an error).
fn unit_rows(raw: &[f32], d: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(raw.len());
    for row in raw.chunks_exact(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            candle_core::bail!("codebook init: a zero row cannot be normalised");
        }
        out.extend(row.iter().map(|x| x / norm));
    }
    Ok(out)
}
