//! CUDA softmax over the last dim and its backward (`kernels/cuda/softmax.cu`; the formulas are
//! in `crate::softmax`). One block per row.

use super::{by_dtype, nvrtc, rows_op};
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Layout, Result, Shape};

const NAME: &str = "softmax_last_dim";

/// x: (…, D) -> y: (…, D), same dtype.
pub(crate) fn softmax(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    by_dtype!(NAME, s.dtype() => rows_op(NAME, nvrtc::SOFTMAX, "softmax", &[(s, l)], None))
}

/// (y, dy) -> dx, all (…, D); y is the forward's output.
pub(crate) fn softmax_bwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    crate::cpu::expect_dims(NAME, "the output gradient", l2, l1.dims())?;
    let (y, dy) = ((s1, l1), (s2, l2));
    by_dtype!(NAME, s1.dtype() => rows_op(NAME, nvrtc::SOFTMAX, "softmax_bwd", &[y, dy], None))
}
