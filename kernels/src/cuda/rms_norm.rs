//! CUDA RMSNorm and its backward (`kernels/cuda/rms_norm.cu`; the formulas are in
//! `crate::rms_norm`): forward and dx with one block per row, dw as a deterministic column sum
//! (r per row, per-chunk partials, chunk sums in order; no float atomics); the launches are
//! `rows_op` and `norm.rs`, shared with softmax and LayerNorm.

use super::norm::{self, ParamGrad};
use super::{by_dtype, nvrtc, rows_of, rows_op};
use crate::cpu::expect_dims;
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Layout, Result, Shape};

const NAME: &str = "rms_norm";

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// (x (…, D), weight (D)) -> y (…, D).
pub(crate) fn rms_norm(x: Arg, w: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    let (_, d) = rows_of(x.1);
    expect_dims(NAME, "weight", w.1, &[d])?;
    by_dtype!(NAME, x.0.dtype() => rows_op(NAME, nvrtc::RMS_NORM, "rms_norm", &[x, w], Some(eps)))
}

/// (x (…, D), weight (D), dy (…, D)) -> dx (…, D).
pub(crate) fn rms_norm_grad_x(x: Arg, w: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    norm::grad_x(NAME, nvrtc::RMS_NORM, "rms_norm_dx", (x, w, dy), eps)
}

/// (x (…, D), dy (…, D)) -> dw (D).
pub(crate) fn rms_norm_grad_w(x: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    const GRAD_W: ParamGrad = ParamGrad {
        op: NAME,
        prog: nvrtc::RMS_NORM,
        kernels: ["rms_norm_rstd", "rms_norm_dw_partial", "rms_norm_dw_finish"],
        stats_per_row: 1, // r
        params: 1,
    };
    GRAD_W.run(x, dy, eps)
}
