//! Fused differentiable ops for cotyle as candle `CustomOp`s, with a forward *and* a backward
//! (DESIGN.md, "Layout": `kernels/`; issue 3). candle's own fused ops (`softmax_last_dim`,
//! `rms_norm`, `layer_norm`, RoPE, sdpa) have no backward and drop gradients silently, and
//! its slow compositions are slow; models use these ops instead.
//!
//! Here now (CPU only: f32 and f64, bf16/f16 computed in f32; any strides; rows in parallel
//! on candle's CPU thread pool, or rayon's inside a rayon pool; loops auto-vectorised, with
//! AVX2 and AVX-512F builds picked at run time):
//! - [`softmax_last_dim`]: softmax over the last dim; gradient for x.
//! - [`rms_norm`]: RMSNorm; gradients for x and the weight.
//! - [`layer_norm`]: LayerNorm with or without bias; gradients for x, weight and bias.
//! - [`silu`], [`gelu_tanh`] (GELU, tanh approximation) and [`swiglu`] (silu(gate) * up):
//!   elementwise; gradients for every input.
//! - [`rope`]: rotary embedding over (B, H, T, D), half-rotation or interleaved
//!   ([`RopeLayout`]); position offsets by slicing cos/sin; gradient for x (none for cos/sin).
//! - [`vq`]: vector quantisation, not differentiable: [`vq::nearest_code`] (argmax of the
//!   cosine against an L2-normalised codebook, blocked, never forming the (N, K) scores) and
//!   [`vq::code_histogram`] (codebook usage).
//! - [`adamw_step`]: the AdamW update of one parameter and its moments, in place (two
//!   passes, no temporaries); the optimizer in `trainer/src/train/optim.rs` drives it.
//! - [`attention`]: fused scaled dot-product attention over (B, H, T, D), flash-attention
//!   style (never forming the (B, H, Tq, Tk) scores), causal (bottom-right aligned, for KV
//!   caches) and/or an additive mask, grouped-query kv heads ([`AttentionOpts`]); gradients
//!   for q, k and v.
//! - [`attention_packed`]: the same attention straight from one fused q/k/v projection,
//!   qkv (B, T, (H + 2 Hkv) D) -> (B, T, H D), with optional RoPE on q and k inside; one op
//!   forward and one backward returning dqkv, so no graph nodes split and merge the heads.
//! - [`linear`]: y = x Wᵀ + b (torch.nn.Linear's (out, in) weight), matmuls by candle's own
//!   gemm / cuBLAS, one op forward and one backward; gradients for x, weight and bias.
//! - [`reference`]: the same ops composed of slow candle tensor ops (tests, benchmarks).
//!
//! Results do not depend on the thread count or on the SIMD build (fixed blocking and lane
//! splits; both tested). Backward passes are custom ops too; most have no backward of their own, so a
//! second derivative is an error, never a silent zero (RoPE's backward, a rotation, and
//! SwiGLU's gradient for `up`, SwiGLU itself, have one).
//!
//! CUDA (the `cuda` feature): every op above runs on CUDA tensors too, forward and backward,
//! from `kernels/cuda/*.cu` compiled at run time by NVRTC for the GPU at hand (`cuda/`); f32,
//! f64, bf16 and f16 (AdamW: f32 and f64, as on the CPU), any strides, reproducible run to run
//! (no float atomics). Attention takes head widths up to 128 on CUDA (an error beyond).
//!
//! Still to come (issue 3): `trainer bench block`.

mod activation;
mod adamw;
mod attention;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod layer_norm;
mod linear;
pub mod reference;
mod rms_norm;
mod rope;
mod simd;
mod softmax;
pub mod vq;
#[cfg(target_arch = "x86_64")]
mod vq_x86;

pub use activation::{gelu_tanh, silu, swiglu};
pub use adamw::{adamw_step, AdamWStep};
pub use attention::{attention, attention_packed, AttentionOpts};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use rms_norm::rms_norm;
pub use rope::{rope, RopeLayout};
pub use softmax::softmax_last_dim;

use candle_core::{bail, Result, Tensor};

/// Errors unless `x` has at least one dim (the ops work along the last one).
pub(crate) fn check_rank(op: &str, x: &Tensor) -> Result<()> {
    if x.rank() == 0 {
        bail!("{op}: x must have at least one dim, got a scalar");
    }
    Ok(())
}

/// Errors unless `a` and `b` (named `a_name`, `b_name` in the message) share dtype and device.
pub(crate) fn check_same_kind(
    op: &str,
    (a_name, a): (&str, &Tensor),
    (b_name, b): (&str, &Tensor),
) -> Result<()> {
    if a.dtype() != b.dtype() {
        bail!(
            "{op}: {a_name} has dtype {:?} but {b_name} has dtype {:?}",
            a.dtype(),
            b.dtype()
        );
    }
    if !a.device().same_device(b.device()) {
        bail!("{op}: {a_name} and {b_name} are on different devices");
    }
    Ok(())
}

/// Errors unless the per-feature parameter `p` (named `what`) is (D) for x: (…, D), with
/// x's dtype and device. The message names both shapes.
pub(crate) fn check_param(op: &str, x: &Tensor, p: &Tensor, what: &str) -> Result<()> {
    let d = x.dims()[x.rank() - 1];
    if p.dims() != [d] {
        bail!(
            "{op}: {what} has shape {:?} but x has shape {:?}; {what} must be [{d}] (the last dim of x)",
            p.dims(),
            x.dims()
        );
    }
    check_same_kind(op, (what, p), ("x", x))
}
