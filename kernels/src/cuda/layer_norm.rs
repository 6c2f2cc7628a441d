//! CUDA LayerNorm (with or without bias) and its backward (`kernels/cuda/layer_norm.cu`; the
//! formulas are in `crate::layer_norm`): forward and dx with one block per row; dw and db as
//! one deterministic column sum over 2D columns ((mu, r) per row, per-chunk partials, chunk
//! sums in order; no float atomics). The backward launches are `norm.rs`, shared with RMSNorm.

use super::norm::{self, ParamGrad};
use super::{
    by_dtype, dense, empty, kernel, nvrtc, output, rows_config, rows_of, u32_arg, wrap, Float,
};
use crate::cpu::expect_dims;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};
use cudarc::driver::PushKernelArg;

const NAME: &str = "layer_norm";

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// (x (…, D), weight (D), bias (D) or none) -> y (…, D).
pub(crate) fn layer_norm(x: Arg, w: Arg, b: Option<Arg>, eps: f64) -> Result<(CudaStorage, Shape)> {
    let (_, d) = rows_of(x.1);
    expect_dims(NAME, "weight", w.1, &[d])?;
    if let Some(b) = b {
        expect_dims(NAME, "bias", b.1, &[d])?;
    }
    by_dtype!(NAME, x.0.dtype() => fwd(x, w, b, eps))
}

fn fwd<T: Float>(
    (s1, l1): Arg,
    (s2, l2): Arg,
    b: Option<Arg>,
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    if rows * d == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let cfg = rows_config(NAME, rows, d)?;
    let (x, w) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    // Without a bias the kernel never reads its `b`; the weight stands in for the pointer.
    let bias = match b {
        Some((s3, l3)) => Some(dense::<T>(s3, l3)?),
        None => None,
    };
    let (x, w) = (x.view()?, w.view()?);
    let bv = match &bias {
        Some(b) => b.view()?,
        None => w.slice(..),
    };
    let has_bias = i32::from(bias.is_some());
    let mut y = output::<T>(dev, rows * d)?;
    let d32 = u32_arg(NAME, "D", d)?;
    let func = nvrtc::function(dev, nvrtc::LAYER_NORM, &kernel::<T>("layer_norm"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&w).arg(&bv).arg(&has_bias);
    b.arg(&mut y).arg(&d32).arg(&eps);
    // SAFETY: matches `layer_norm_*` in layer_norm.cu; x, y hold rows * d, w and b hold d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, y, l1.shape()))
}

/// (x (…, D), weight (D), dy (…, D)) -> dx (…, D).
pub(crate) fn layer_norm_grad_x(x: Arg, w: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    norm::grad_x(NAME, nvrtc::LAYER_NORM, "layer_norm_dx", (x, w, dy), eps)
}

/// (x (…, D), dy (…, D)) -> (2, D): row 0 is dw, row 1 is db.
pub(crate) fn layer_norm_grad_wb(x: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    const GRAD_WB: ParamGrad = ParamGrad {
        op: NAME,
        prog: nvrtc::LAYER_NORM,
        kernels: [
            "layer_norm_stats",
            "layer_norm_dwb_partial",
            "layer_norm_dwb_finish",
        ],
        stats_per_row: 2, // (mu, r)
        params: 2,
    };
    GRAD_WB.run(x, dy, eps)
}
