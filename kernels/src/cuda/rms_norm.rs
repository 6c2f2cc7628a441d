//! CUDA RMSNorm and its backward (`kernels/cuda/rms_norm.cu`; the formulas are in
//! `crate::rms_norm`): forward and dx with one block per row, dw as a deterministic column sum
//! (r per row, per-chunk partials, chunk sums in order; no float atomics).

use super::{
    by_dtype, col_chunks, cols_config, dense, empty, kernel, nvrtc, output, rows_config, rows_of,
    u32_arg, wrap, Float,
};
use crate::cpu::expect_dims;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};
use cudarc::driver::PushKernelArg;

const NAME: &str = "rms_norm";

/// (x (…, D), weight (D)) -> y (…, D).
pub(crate) fn rms_norm(
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let (_, d) = rows_of(l1);
    expect_dims(NAME, "weight", l2, &[d])?;
    by_dtype!(NAME, s1.dtype() => fwd((s1, l1), (s2, l2), eps))
}

type Arg<'a> = (&'a CudaStorage, &'a Layout);

fn fwd<T: Float>((s1, l1): Arg, (s2, l2): Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    if rows * d == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let cfg = rows_config(NAME, rows, d)?;
    let (x, w) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (x, w) = (x.view()?, w.view()?);
    let mut y = output::<T>(dev, rows * d)?;
    let d32 = u32_arg(NAME, "D", d)?;
    let func = nvrtc::function(dev, nvrtc::RMS_NORM, &kernel::<T>("rms_norm"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&w).arg(&mut y).arg(&d32).arg(&eps);
    // SAFETY: matches `rms_norm_*` in rms_norm.cu; x, y hold rows * d, w holds d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, y, l1.shape()))
}

/// (x (…, D), weight (D), dy (…, D)) -> dx (…, D).
pub(crate) fn rms_norm_grad_x(x: Arg, w: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    let (_, d) = rows_of(x.1);
    expect_dims(NAME, "weight", w.1, &[d])?;
    expect_dims(NAME, "the output gradient", dy.1, x.1.dims())?;
    by_dtype!(NAME, x.0.dtype() => grad_x(x, w, dy, eps))
}

fn grad_x<T: Float>(
    (s1, l1): Arg,
    (s2, l2): Arg,
    (s3, l3): Arg,
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    if rows * d == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let cfg = rows_config(NAME, rows, d)?;
    let (x, w, dy) = (
        dense::<T>(s1, l1)?,
        dense::<T>(s2, l2)?,
        dense::<T>(s3, l3)?,
    );
    let (x, w, dy) = (x.view()?, w.view()?, dy.view()?);
    let mut dx = output::<T>(dev, rows * d)?;
    let d32 = u32_arg(NAME, "D", d)?;
    let func = nvrtc::function(dev, nvrtc::RMS_NORM, &kernel::<T>("rms_norm_dx"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&w).arg(&dy).arg(&mut dx).arg(&d32).arg(&eps);
    // SAFETY: matches `rms_norm_dx_*` in rms_norm.cu; x, dy, dx hold rows * d, w holds d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, dx, l1.shape()))
}

/// (x (…, D), dy (…, D)) -> dw (D).
pub(crate) fn rms_norm_grad_w(x: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    expect_dims(NAME, "the output gradient", dy.1, x.1.dims())?;
    by_dtype!(NAME, x.0.dtype() => grad_w(x, dy, eps))
}

fn grad_w<T: Float>((s1, l1): Arg, (s2, l2): Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    let shape = Shape::from_dims(&[d]);
    if rows * d == 0 {
        // No rows: the sum is empty, dw is zero.
        return Ok((empty(dev, &shape, s1.dtype())?, shape));
    }
    let (x, dy) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (x, dy) = (x.view()?, dy.view()?);
    let (d32, rows32) = (u32_arg(NAME, "D", d)?, u32_arg(NAME, "rows", rows)?);
    let (chunks, per) = col_chunks(rows);
    let (chunks32, per32) = (chunks as u32, per as u32);

    let mut r = output::<T::Work>(dev, rows)?;
    {
        let func = nvrtc::function(dev, nvrtc::RMS_NORM, &kernel::<T>("rms_norm_rstd"))?;
        let mut b = func.builder();
        b.arg(&x).arg(&mut r).arg(&d32).arg(&eps);
        // SAFETY: matches `rms_norm_rstd_*`; x holds rows * d, r holds rows.
        unsafe { b.launch(rows_config(NAME, rows, d)?) }.w()?;
    }
    let mut partial = output::<T::Work>(dev, chunks * d)?;
    {
        let name = kernel::<T>("rms_norm_dw_partial");
        let func = nvrtc::function(dev, nvrtc::RMS_NORM, &name)?;
        let mut b = func.builder();
        b.arg(&x).arg(&dy).arg(&r).arg(&mut partial);
        b.arg(&rows32).arg(&d32).arg(&per32);
        // SAFETY: matches `rms_norm_dw_partial_*`; partial holds chunks * d, all written.
        unsafe { b.launch(cols_config(d, chunks)) }.w()?;
    }
    let mut dw = output::<T>(dev, d)?;
    {
        let name = kernel::<T>("rms_norm_dw_finish");
        let func = nvrtc::function(dev, nvrtc::RMS_NORM, &name)?;
        let mut b = func.builder();
        b.arg(&partial).arg(&mut dw).arg(&chunks32).arg(&d32);
        // SAFETY: matches `rms_norm_dw_finish_*`; dw holds d.
        unsafe { b.launch(cols_config(d, 1)) }.w()?;
    }
    Ok(wrap(dev, dw, &shape))
}
