//! CUDA vector quantisation (`kernels/cuda/vq.cu`; the method is in `crate::vq`): the nearest
//! code by dot product, tiled in shared memory with an argmax epilogue (never the (N, K)
//! scores), bit-identical to the CPU path; and codebook usage counts with integer atomics.

use super::{by_dtype, dense, elems_config, empty, kernel, nvrtc, output, u32_arg, Float};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{bail, CudaStorage, DType, Layout, Result, Shape};
use cudarc::driver::{LaunchConfig, PushKernelArg};

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// Rows of z and codes per block tile (BM, BK in vq.cu), and threads per block.
const TILE: usize = 64;
const THREADS: u32 = 256;

/// z: (N, D), codebook: (K, D) (shapes checked by the caller, 1 <= K < 2^32) -> (indices u32
/// (N), best scores (N) f32, or f64 for f64 inputs). `name` names the op in errors.
pub(crate) fn nearest_code(
    name: &str,
    z: Arg,
    c: Arg,
    nkd: (usize, usize, usize),
) -> Result<(CudaStorage, CudaStorage)> {
    by_dtype!(name, z.0.dtype() => nearest(name, z, c, nkd))
}

fn nearest<T: Float>(
    name: &str,
    (zs, zl): Arg,
    (cs, cl): Arg,
    (n, k, d): (usize, usize, usize),
) -> Result<(CudaStorage, CudaStorage)> {
    let dev = zs.device();
    let work = <T::Work as candle_core::WithDType>::DTYPE;
    if n == 0 || d == 0 {
        // No rows, or every score is the empty sum 0 and all codes tie: index 0, score 0.
        let shape = Shape::from_dims(&[n]);
        return Ok((empty(dev, &shape, DType::U32)?, empty(dev, &shape, work)?));
    }
    let (n32, k32, d32) = (
        u32_arg(name, "N", n)?,
        u32_arg(name, "K", k)?,
        u32_arg(name, "D", d)?,
    );
    let (z, c) = (dense::<T>(zs, zl)?, dense::<T>(cs, cl)?);
    let (z, c) = (z.view()?, c.view()?);

    // Split the codebook across blocks when there are too few row tiles to fill the GPU. Any
    // split gives the same result: the merge keeps the best score, lowest index first.
    let row_blocks = n.div_ceil(TILE);
    let tiles = k.div_ceil(TILE);
    let want = 2 * nvrtc::multiprocessors(dev)? as usize;
    let splits = want.div_ceil(row_blocks).clamp(1, tiles.min(65_535));
    let per_split = tiles.div_ceil(splits) * TILE;
    let splits = k.div_ceil(per_split);
    let cfg = LaunchConfig {
        grid_dim: (row_blocks as u32, splits as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let per32 = per_split as u32;
    let func = nvrtc::function(dev, nvrtc::VQ, &kernel::<T>("nearest_code"))?;

    let mut best = output::<T::Work>(dev, n)?;
    let mut idx = output::<u32>(dev, n)?;
    if splits == 1 {
        let final_out = 1i32;
        let mut b = func.builder();
        b.arg(&z).arg(&c).arg(&mut best).arg(&mut idx);
        b.arg(&n32).arg(&k32).arg(&d32).arg(&per32).arg(&final_out);
        // SAFETY: matches `nearest_code_*` in vq.cu; z holds n * d, c holds k * d, best and idx
        // hold n.
        unsafe { b.launch(cfg) }.w()?;
    } else {
        let mut pbest = output::<T::Work>(dev, splits * n)?;
        let mut pidx = output::<u32>(dev, splits * n)?;
        {
            let final_out = 0i32;
            let mut b = func.builder();
            b.arg(&z).arg(&c).arg(&mut pbest).arg(&mut pidx);
            b.arg(&n32).arg(&k32).arg(&d32).arg(&per32).arg(&final_out);
            // SAFETY: as above; the partials hold splits * n, each (split, row) written once.
            unsafe { b.launch(cfg) }.w()?;
        }
        let splits32 = splits as u32;
        let merge = nvrtc::function(dev, nvrtc::VQ, &kernel::<T>("nearest_code_merge"))?;
        let mut b = merge.builder();
        b.arg(&pbest).arg(&pidx).arg(&mut best).arg(&mut idx);
        b.arg(&n32).arg(&splits32);
        // SAFETY: matches `nearest_code_merge_*` in vq.cu.
        unsafe { b.launch(elems_config(n)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(idx, dev.clone()),
        CudaStorage::wrap_cuda_slice(best, dev.clone()),
    ))
}

/// indices: u32 or i64 (N), any strides -> counts: i64 (K). An index outside 0..k is an error
/// naming it and its (first such) position, as on the CPU.
pub(crate) fn code_histogram(name: &str, (s, l): Arg, k: usize) -> Result<CudaStorage> {
    match s.dtype() {
        DType::U32 => histogram::<u32>(name, (s, l), k, "code_histogram_u32"),
        DType::I64 => histogram::<i64>(name, (s, l), k, "code_histogram_i64"),
        d => bail!("{name}: indices must be u32 or i64, got {d:?}"),
    }
}

fn histogram<I>(name: &str, (s, l): Arg, k: usize, func_name: &str) -> Result<CudaStorage>
where
    I: candle_core::cuda_backend::CudaDType + cudarc::driver::DeviceRepr + Copy + Into<i128>,
{
    let dev = s.device();
    let n = l.shape().elem_count();
    if n == 0 {
        return empty(dev, &Shape::from_dims(&[k]), DType::I64);
    }
    let indices = dense::<I>(s, l)?;
    let indices = indices.view()?;
    if k == 0 {
        // Every index is outside an empty codebook; no counts to allocate.
        return Err(bad_index(dev, name, &indices, 0, k));
    }
    let mut counts = dev.alloc_zeros::<i64>(k)?;
    let mut first_bad = dev.clone_htod(&[u64::MAX])?;
    let (n64, k64) = (n as u64, k as u64);
    let func = nvrtc::function(dev, nvrtc::VQ, func_name)?;
    let mut b = func.builder();
    b.arg(&indices).arg(&mut counts).arg(&mut first_bad);
    b.arg(&n64).arg(&k64);
    // SAFETY: matches `code_histogram_*` in vq.cu; indices hold n, counts k, first_bad 1.
    unsafe { b.launch(elems_config(n)) }.w()?;
    let bad = dev.clone_dtoh(&first_bad)?[0];
    if bad != u64::MAX {
        return Err(bad_index(dev, name, &indices, bad as usize, k));
    }
    Ok(CudaStorage::wrap_cuda_slice(counts, dev.clone()))
}

/// The CPU path's error for the index at `pos`.
fn bad_index<I>(
    dev: &CudaDevice,
    name: &str,
    indices: &cudarc::driver::CudaView<'_, I>,
    pos: usize,
    k: usize,
) -> candle_core::Error
where
    I: cudarc::driver::DeviceRepr + Copy + Into<i128>,
{
    match dev.clone_dtoh(&indices.slice(pos..pos + 1)) {
        Ok(v) => candle_core::Error::Msg(format!(
            "{name}: index {} at position {pos} is outside the codebook of {k}",
            v[0].into()
        )),
        Err(e) => candle_core::Error::Msg(format!(
            "{name}: an index at position {pos} is outside the codebook of {k} ({e})"
        )),
    }
}
