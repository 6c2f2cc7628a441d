//! CUDA LayerNorm (with or without bias) and its backward (`kernels/cuda/layer_norm.cu`; the
//! formulas are in `crate::layer_norm`): forward and dx with one block per row; dw and db as
//! one deterministic column sum over 2D columns ((mu, r) per row, per-chunk partials, chunk
//! sums in order; no float atomics).

use super::{
    by_dtype, col_chunks, cols_config, dense, empty, kernel, nvrtc, output, rows_config, rows_of,
    u32_arg, wrap, Float,
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
    let func = nvrtc::function(dev, nvrtc::LAYER_NORM, &kernel::<T>("layer_norm_dx"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&w).arg(&dy).arg(&mut dx).arg(&d32).arg(&eps);
    // SAFETY: matches `layer_norm_dx_*`; x, dy, dx hold rows * d, w holds d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, dx, l1.shape()))
}

/// (x (…, D), dy (…, D)) -> (2, D): row 0 is dw, row 1 is db.
pub(crate) fn layer_norm_grad_wb(x: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    expect_dims(NAME, "the output gradient", dy.1, x.1.dims())?;
    by_dtype!(NAME, x.0.dtype() => grad_wb(x, dy, eps))
}

fn grad_wb<T: Float>((s1, l1): Arg, (s2, l2): Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    let shape = Shape::from_dims(&[2, d]);
    if rows * d == 0 {
        // No rows: the sums are empty, dw and db are zero.
        return Ok((empty(dev, &shape, s1.dtype())?, shape));
    }
    let (x, dy) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (x, dy) = (x.view()?, dy.view()?);
    let (d32, rows32) = (u32_arg(NAME, "D", d)?, u32_arg(NAME, "rows", rows)?);
    let width32 = u32_arg(NAME, "2 * D", 2 * d)?;
    let (chunks, per) = col_chunks(rows);
    let (chunks32, per32) = (chunks as u32, per as u32);

    let mut stats = output::<T::Work>(dev, 2 * rows)?;
    {
        let func = nvrtc::function(dev, nvrtc::LAYER_NORM, &kernel::<T>("layer_norm_stats"))?;
        let mut b = func.builder();
        b.arg(&x).arg(&mut stats).arg(&d32).arg(&eps);
        // SAFETY: matches `layer_norm_stats_*`; x holds rows * d, stats holds 2 * rows.
        unsafe { b.launch(rows_config(NAME, rows, d)?) }.w()?;
    }
    let mut partial = output::<T::Work>(dev, chunks * 2 * d)?;
    {
        let name = kernel::<T>("layer_norm_dwb_partial");
        let func = nvrtc::function(dev, nvrtc::LAYER_NORM, &name)?;
        let mut b = func.builder();
        b.arg(&x).arg(&dy).arg(&stats).arg(&mut partial);
        b.arg(&rows32).arg(&d32).arg(&per32);
        // SAFETY: matches `layer_norm_dwb_partial_*`; partial holds chunks * 2d, all written.
        unsafe { b.launch(cols_config(2 * d, chunks)) }.w()?;
    }
    let mut dwb = output::<T>(dev, 2 * d)?;
    {
        let name = kernel::<T>("layer_norm_dwb_finish");
        let func = nvrtc::function(dev, nvrtc::LAYER_NORM, &name)?;
        let mut b = func.builder();
        b.arg(&partial).arg(&mut dwb).arg(&chunks32).arg(&width32);
        // SAFETY: matches `layer_norm_dwb_finish_*`; dwb holds 2d.
        unsafe { b.launch(cols_config(2 * d, 1)) }.w()?;
    }
    Ok(wrap(dev, dwb, &shape))
}
