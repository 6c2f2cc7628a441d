//! Parameter names, shapes and seeded initial values of the MMDiT, named as a diffusers
//! `QwenImageTransformer2DModel` checkpoint (the table in `mmdit.rs`). Values as DiT's
//! `initialize_weights` (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers",
//! section 3.2 and the reference `models.py`): every Linear weight xavier-uniform, biases 0,
//! the timestep MLP's weights N(0, 0.02^2), RMSNorm gains 1; with `zero_init` (adaLN-Zero)
//! every modulation Linear (`*_mod.1`, `norm_out.linear`) and `proj_out` are 0, so the initial
//! model outputs exactly 0. Each tensor draws from its own stream (`models::init`).
//!
//! Also the two fixed (untrained) tables: the sinusoidal timestep features and the 2D sin-cos
//! positions of the image tokens.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};

use super::MmditConfig;
use crate::models::init::tensor_rng;

/// Dimensions of the sinusoidal timestep features (diffusers `Timesteps(num_channels=256)`).
pub const TIME_DIM: usize = 256;
/// Std of the timestep MLP's weights (DiT).
const TIME_STD: f32 = 0.02;

/// The names of one stream's tensors inside a block (diffusers `QwenImageTransformerBlock`):
/// [`IMG`] and [`TXT`], shared by the model and [`param_shapes`].
pub(super) struct StreamNames {
    pub(super) modulation: &'static str,
    pub(super) q: &'static str,
    pub(super) k: &'static str,
    pub(super) v: &'static str,
    pub(super) norm_q: &'static str,
    pub(super) norm_k: &'static str,
    pub(super) out: &'static str,
    pub(super) mlp: &'static str,
}

pub(super) const IMG: StreamNames = StreamNames {
    modulation: "img_mod.1",
    q: "attn.to_q",
    k: "attn.to_k",
    v: "attn.to_v",
    norm_q: "attn.norm_q",
    norm_k: "attn.norm_k",
    out: "attn.to_out.0",
    mlp: "img_mlp",
};

pub(super) const TXT: StreamNames = StreamNames {
    modulation: "txt_mod.1",
    q: "attn.add_q_proj",
    k: "attn.add_k_proj",
    v: "attn.add_v_proj",
    norm_q: "attn.norm_added_q",
    norm_k: "attn.norm_added_k",
    out: "attn.to_add_out",
    mlp: "txt_mlp",
};

/// How one parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Zeros,
    Ones,
    /// U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (`torch.nn.init.xavier_uniform_`).
    Xavier,
    /// N(0, std^2).
    Normal(f32),
}

/// Every parameter with its initialiser, in checkpoint order.
fn params(cfg: &MmditConfig) -> Vec<(String, Vec<usize>, Init)> {
    let (c, f, d, t) = (
        cfg.hidden_size,
        cfg.mlp_hidden(),
        cfg.head_dim(),
        cfg.text_dim,
    );
    let modulation = if cfg.zero_init {
        Init::Zeros
    } else {
        Init::Xavier
    };
    let mut out = Vec::new();
    // Every Linear has a bias, and every bias starts at 0 (DiT's `_basic_init`).
    let mut linear = |name: &str, inp: usize, outp: usize, w: Init| {
        out.push((format!("{name}.weight"), vec![outp, inp], w));
        out.push((format!("{name}.bias"), vec![outp], Init::Zeros));
    };
    linear("img_in", cfg.patch_dim(), c, Init::Xavier);
    linear("txt_in", t, c, Init::Xavier);
    let te = "time_text_embed.timestep_embedder";
    linear(
        &format!("{te}.linear_1"),
        TIME_DIM,
        c,
        Init::Normal(TIME_STD),
    );
    linear(&format!("{te}.linear_2"), c, c, Init::Normal(TIME_STD));
    for i in 0..cfg.depth {
        for s in [&IMG, &TXT] {
            let n = |suffix: &str| format!("transformer_blocks.{i}.{suffix}");
            linear(&n(s.modulation), c, 6 * c, modulation);
            for proj in [s.q, s.k, s.v] {
                linear(&n(proj), c, c, Init::Xavier);
            }
            linear(&n(s.out), c, c, Init::Xavier);
            linear(&n(&format!("{}.net.0.proj", s.mlp)), c, f, Init::Xavier);
            linear(&n(&format!("{}.net.2", s.mlp)), f, c, Init::Xavier);
        }
    }
    linear("norm_out.linear", c, 2 * c, modulation);
    let proj_out = if cfg.zero_init {
        Init::Zeros
    } else {
        Init::Xavier
    };
    linear("proj_out", c, cfg.patch_dim(), proj_out);
    // The RMSNorm gains, after the Linears: txt_norm (text_dim) and the per-head qk-norms.
    out.push(("txt_norm.weight".into(), vec![t], Init::Ones));
    for i in 0..cfg.depth {
        for s in [&IMG, &TXT] {
            for norm in [s.norm_q, s.norm_k] {
                let name = format!("transformer_blocks.{i}.{norm}.weight");
                out.push((name, vec![d], Init::Ones));
            }
        }
    }
    out
}

/// Every parameter: (full diffusers name, shape).
#[cfg_attr(not(test), allow(dead_code))] // the tests count parameters with it
pub fn param_shapes(cfg: &MmditConfig) -> Vec<(String, Vec<usize>)> {
    params(cfg).into_iter().map(|(n, s, _)| (n, s)).collect()
}

/// Parameters that cannot change the output: the last block's text-stream outputs (its text
/// queries, `to_add_out` and `txt_mlp`), which Qwen-Image computes and then discards. They
/// stay in the checkpoint (every block has the same tensors, so real weights load as they are)
/// and get no gradient: [`super::Mmdit::forward`] skips them.
pub fn unused_params(cfg: &MmditConfig) -> Vec<String> {
    let Some(last) = cfg.depth.checked_sub(1) else {
        return Vec::new();
    };
    let n = |s: &str| format!("transformer_blocks.{last}.{s}");
    let t: &StreamNames = &TXT;
    let mut out = vec![n(&format!("{}.weight", t.norm_q))];
    for l in [
        t.q.to_string(),
        t.out.to_string(),
        format!("{}.net.0.proj", t.mlp),
        format!("{}.net.2", t.mlp),
    ] {
        out.push(n(&format!("{l}.weight")));
        out.push(n(&format!("{l}.bias")));
    }
    out
}

/// Seeded initial values (f32, CPU) of every parameter, named as [`param_shapes`]. Trainable
/// build: `VarBuilder::from_varmap(&models::varmap_from(init_tensors(..)?)?, dtype, dev)`.
pub fn init_tensors(cfg: &MmditConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    params(cfg)
        .into_iter()
        .map(|(name, shape, init)| {
            let n: usize = shape.iter().product();
            let mut rng = tensor_rng(seed, &name);
            let t = match init {
                Init::Zeros => Tensor::zeros(shape, DType::F32, &dev)?,
                Init::Ones => Tensor::ones(shape, DType::F32, &dev)?,
                Init::Xavier => {
                    let a = (6.0 / (shape[0] + shape[1]) as f64).sqrt() as f32;
                    let v: Vec<f32> = (0..n).map(|_| rng.range_f32(-a, a)).collect();
                    Tensor::from_vec(v, shape, &dev)?
                }
                Init::Normal(std) => {
                    let v: Vec<f32> = (0..n).map(|_| std * rng.normal()).collect();
                    Tensor::from_vec(v, shape, &dev)?
                }
            };
            Ok((name, t))
        })
        .collect()
}

/// Sinusoidal timestep features as diffusers `Timesteps(256, flip_sin_to_cos=True,
/// downscale_freq_shift=0, scale=1000)`: t (B) -> (B, 256) f32, [cos(a_i) | sin(a_i)] with
/// a_i = 1000 t exp(-ln(10000) i / 128), i < 128.
pub fn timestep_embedding(t: &Tensor) -> Result<Tensor> {
    let b = t.dims1()?;
    let half = TIME_DIM / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32).ln() * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let a = (t
        .to_dtype(DType::F32)?
        .reshape((b, 1))?
        .broadcast_mul(&freqs)?
        * 1000.0)?;
    Tensor::cat(&[a.cos()?, a.sin()?], 1)
}

/// MAE/DiT `get_2d_sincos_pos_embed(dim, grid)`, computed in f64: (grid^2, dim) row-major, token
/// m = row * grid + col; the first dim/2 features embed the column, the rest the row, each as
/// [sin(pos w_j) | cos(pos w_j)] with w_j = 10000^(-j / (dim/4)), j < dim/4.
pub fn pos_embed_2d(dim: usize, grid: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let mut out = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col as f64, row as f64] {
                let angles = (0..quarter).map(|j| pos / 10000f64.powf(j as f64 / quarter as f64));
                let angles: Vec<f64> = angles.collect();
                out.extend(angles.iter().map(|a| a.sin() as f32));
                out.extend(angles.iter().map(|a| a.cos() as f32));
            }
        }
    }
    out
}
