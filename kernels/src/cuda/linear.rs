//! CUDA parts of the linear layer besides its matmuls (candle's cuBLAS calls, in
//! `crate::linear`): the bias add in place, the bias gradient as a deterministic two-pass column
//! sum (per-chunk partials, chunk sums in order; no float atomics), and the packing of the
//! gradients into one buffer (`kernels/cuda/linear.cu`).

use super::{
    by_dtype, col_chunks, cols_config, dense, elems_config, kernel, nvrtc, output, u32_arg, Float,
};
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};
use cudarc::driver::PushKernelArg;

const NAME: &str = "linear";

/// y (N, out), a dense buffer of its own, += bias (out) read through `bl`, in place.
pub(crate) fn linear_add_bias(
    y: &mut CudaStorage,
    b: &CudaStorage,
    bl: &Layout,
    out: usize,
) -> Result<()> {
    by_dtype!(NAME, y.dtype() => add_bias(y, b, bl, out))
}

fn add_bias<T: Float>(y: &mut CudaStorage, b: &CudaStorage, bl: &Layout, out: usize) -> Result<()> {
    let dev = y.device().clone();
    let ys = y.as_cuda_slice_mut::<T>()?;
    let n = ys.len();
    if n == 0 || out == 0 {
        return Ok(());
    }
    let b = dense::<T>(b, bl)?;
    let bv = b.view()?;
    let (n64, out32) = (n as u64, u32_arg(NAME, "out", out)?);
    let func = nvrtc::function(&dev, nvrtc::LINEAR, &kernel::<T>("linear_bias_add"))?;
    let mut bld = func.builder();
    bld.arg(ys).arg(&bv).arg(&n64).arg(&out32);
    // SAFETY: matches `linear_bias_add_*` in linear.cu; y holds n (a multiple of out), b out.
    unsafe { bld.launch(elems_config(n)) }.w()?;
    Ok(())
}

/// The column sums (out) of dy: (N, out) read through the 2-D layout `l`.
pub(crate) fn linear_col_sums(dy: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    by_dtype!(NAME, dy.dtype() => col_sums(dy, l))
}

fn col_sums<T: Float>(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    let dev = s.device();
    let (rows, out) = (l.dims()[0], l.dims()[1]);
    if rows * out == 0 {
        // No rows: the sums are empty, db is zero.
        return dev.zeros_impl(&Shape::from(out), s.dtype());
    }
    let dy = dense::<T>(s, l)?;
    let dy = dy.view()?;
    let (rows32, out32) = (u32_arg(NAME, "N", rows)?, u32_arg(NAME, "out", out)?);
    let (chunks, per) = col_chunks(rows);
    let (chunks32, per32) = (chunks as u32, per as u32);
    let mut partial = output::<T::Work>(dev, chunks * out)?;
    {
        let func = nvrtc::function(dev, nvrtc::LINEAR, &kernel::<T>("linear_db_partial"))?;
        let mut b = func.builder();
        b.arg(&dy)
            .arg(&mut partial)
            .arg(&rows32)
            .arg(&out32)
            .arg(&per32);
        // SAFETY: matches `linear_db_partial_*`; dy holds rows * out, partial chunks * out,
        // all written.
        unsafe { b.launch(cols_config(out, chunks)) }.w()?;
    }
    let mut db = output::<T>(dev, out)?;
    {
        let func = nvrtc::function(dev, nvrtc::LINEAR, &kernel::<T>("linear_db_finish"))?;
        let mut b = func.builder();
        b.arg(&partial).arg(&mut db).arg(&chunks32).arg(&out32);
        // SAFETY: matches `linear_db_finish_*`; db holds out.
        unsafe { b.launch(cols_config(out, 1)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(db, dev.clone()))
}

/// The dense buffers `parts`, one after the other, in one buffer (device-to-device copies on
/// candle's stream; a single part is returned as it is).
pub(crate) fn linear_concat(parts: Vec<CudaStorage>) -> Result<CudaStorage> {
    let Some(first) = parts.first() else {
        candle_core::bail!("{NAME}: no gradient to pack");
    };
    by_dtype!(NAME, first.dtype() => concat(parts))
}

fn concat<T: Float>(mut parts: Vec<CudaStorage>) -> Result<CudaStorage> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let dev = parts[0].device().clone();
    let mut total = 0;
    for p in &parts {
        total += p.as_cuda_slice::<T>()?.len();
    }
    if total == 0 {
        return dev.zeros_impl(&Shape::from(0), parts[0].dtype());
    }
    let mut all = output::<T>(&dev, total)?;
    let stream = dev.cuda_stream();
    let mut at = 0;
    for p in &parts {
        let s = p.as_cuda_slice::<T>()?;
        if !s.is_empty() {
            stream
                .memcpy_dtod(s, &mut all.slice_mut(at..at + s.len()))
                .w()?;
        }
        at += s.len();
    }
    Ok(CudaStorage::wrap_cuda_slice(all, dev))
}
