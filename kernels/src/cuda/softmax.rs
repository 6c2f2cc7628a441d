//! CUDA softmax over the last dim and its backward (`kernels/cuda/softmax.cu`; the formulas are
//! in `crate::softmax`). One block per row.

use super::{
    by_dtype, dense, empty, kernel, nvrtc, output, rows_config, rows_of, u32_arg, wrap, Float,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};
use cudarc::driver::PushKernelArg;

const NAME: &str = "softmax_last_dim";

/// x: (…, D) -> y: (…, D), same dtype.
pub(crate) fn softmax(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    by_dtype!(NAME, s.dtype() => fwd(s, l))
}

fn fwd<T: Float>(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = s.device();
    let (rows, d) = rows_of(l);
    if rows * d == 0 {
        return Ok((empty(dev, l.shape(), s.dtype())?, l.shape().clone()));
    }
    let cfg = rows_config(NAME, rows, d)?;
    let x = dense::<T>(s, l)?;
    let x = x.view()?;
    let mut y = output::<T>(dev, rows * d)?;
    let d32 = u32_arg(NAME, "D", d)?;
    let func = nvrtc::function(dev, nvrtc::SOFTMAX, &kernel::<T>("softmax"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&mut y).arg(&d32);
    // SAFETY: the argument list matches `softmax_*` in softmax.cu; x and y hold rows * d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, y, l.shape()))
}

/// (y, dy) -> dx, all (…, D); y is the forward's output.
pub(crate) fn softmax_bwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    crate::cpu::expect_dims(NAME, "the output gradient", l2, l1.dims())?;
    by_dtype!(NAME, s1.dtype() => bwd(s1, l1, s2, l2))
}

fn bwd<T: Float>(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    if rows * d == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let cfg = rows_config(NAME, rows, d)?;
    let (y, dy) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (y, dy) = (y.view()?, dy.view()?);
    let mut dx = output::<T>(dev, rows * d)?;
    let d32 = u32_arg(NAME, "D", d)?;
    let func = nvrtc::function(dev, nvrtc::SOFTMAX, &kernel::<T>("softmax_bwd"))?;
    let mut b = func.builder();
    b.arg(&y).arg(&dy).arg(&mut dx).arg(&d32);
    // SAFETY: the argument list matches `softmax_bwd_*` in softmax.cu; all hold rows * d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, dx, l1.shape()))
}
