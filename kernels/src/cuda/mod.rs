//! CUDA forward passes of the ops (issue 3), behind the `cuda` feature: the `cuda_fwd` of every
//! `CustomOp` (forward and backward ops alike) delegates here, and `vq` calls in directly.
//! Kernels are `kernels/cuda/*.cu`, compiled at run time by NVRTC ([`nvrtc`]).
//!
//! This file is the plumbing every op shares, as `cpu.rs` is for the CPU path: the storage
//! dtypes and their working precision (f32, f64; bf16/f16 computed in f32), inputs as dense
//! row-major device buffers (a view when the layout is contiguous, else a compacted copy made
//! by candle's own strided-copy kernel), outputs, kernel names and launch shapes.
//!
//! Reproducibility: every reduction has a fixed order that depends only on the shape (block
//! sizes are picked from the row length; column sums use fixed row chunks and a second pass,
//! never float atomics), so results are identical run to run. They are close to, not
//! bit-identical with, the CPU path (other summation orders, fused multiply-adds); VQ scores
//! are the exception: the same sequential, unfused sums as the CPU, so indices and scores match
//! exactly; and so is AdamW (`InplaceOp2`s, their `cuda_fwd` also here): the same unfused
//! elementwise formula, so the same bits.

mod activation;
mod adamw;
mod attention;
mod layer_norm;
mod linear;
mod norm;
mod nvrtc;
mod rms_norm;
mod rope;
mod softmax;
pub(crate) mod vq;

pub(crate) use activation::{silu_gelu, silu_gelu_grad, swiglu, swiglu_dgate};
pub(crate) use adamw::{adamw_apply, adamw_moments};
pub(crate) use attention::{
    attention, attention_bwd, attention_packed, attention_packed_bwd, PackedRope,
    Params as AttentionParams, Saved as AttentionSaved,
};
pub(crate) use layer_norm::{layer_norm, layer_norm_grad_wb, layer_norm_grad_x};
pub(crate) use linear::{linear_add_bias, linear_col_sums, linear_concat};
pub(crate) use rms_norm::{rms_norm, rms_norm_grad_w, rms_norm_grad_x};
pub(crate) use rope::rope;
pub(crate) use softmax::{softmax, softmax_bwd};

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::{CudaDType, CudaDevice, WrapErr};
use candle_core::{bail, CudaStorage, DType, Layout, Result, Shape, WithDType};
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use half::{bf16, f16};
use std::ops::Range;

/// A storage element type the float kernels take, with the type they compute in.
pub(crate) trait Float: CudaDType + DeviceRepr + WithDType {
    /// f32 for f32, bf16 and f16; f64 for f64 (as the CPU path).
    type Work: CudaDType + DeviceRepr + WithDType;
}

impl Float for f32 {
    type Work = f32;
}
impl Float for f64 {
    type Work = f64;
}
impl Float for bf16 {
    type Work = f32;
}
impl Float for f16 {
    type Work = f32;
}

/// Calls `f::<T>(args)` with T the storage type of `dtype` (f32, f64, bf16, f16); any other
/// dtype is an error naming the op `name`.
macro_rules! by_dtype {
    ($name:expr, $dtype:expr => $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::F64 => $f::<f64>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($arg),*),
            candle_core::DType::F16 => $f::<half::f16>($($arg),*),
            d => candle_core::bail!(
                "{}: dtype {d:?} is not supported on CUDA (f32, f64, bf16, f16)",
                $name
            ),
        }
    };
}
pub(crate) use by_dtype;

/// The kernel `{root}_{dtype}` for storage type T (the suffixes of `FOR_FLOATS` in common.cuh).
pub(crate) fn kernel<T: WithDType>(root: &str) -> String {
    format!("{root}_{}", T::DTYPE.as_str())
}

/// An input as a dense row-major buffer of its layout's shape.
pub(crate) enum Dense<'a, T> {
    /// The storage itself, when the layout is contiguous: no copy.
    View(&'a CudaSlice<T>, Range<usize>),
    /// A compacted copy (strided, transposed or broadcast input).
    Copy(CudaStorage),
}

impl<T: CudaDType> Dense<'_, T> {
    /// The elements, in row-major order of the layout's shape.
    pub(crate) fn view(&self) -> Result<CudaView<'_, T>> {
        Ok(match self {
            Dense::View(s, r) => s.slice(r.clone()),
            Dense::Copy(s) => s.as_cuda_slice::<T>()?.as_view(),
        })
    }
}

/// `s` seen through `l` as a dense buffer of T: borrowed when `l` is contiguous, else copied by
/// candle's strided-copy kernel (the same one `Tensor::contiguous` runs). An error if `s` does
/// not hold T.
pub(crate) fn dense<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<Dense<'a, T>> {
    let slice = s.as_cuda_slice::<T>()?;
    Ok(match l.contiguous_offsets() {
        Some((a, b)) => Dense::View(slice, a..b),
        None => {
            // SAFETY: every element is written by the copy below.
            let mut dst = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
            s.copy_strided_src(&mut dst, 0, l)?;
            Dense::Copy(dst)
        }
    })
}

/// An uninitialised device buffer of `n` elements, for a kernel to fill entirely.
pub(crate) fn output<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: callers launch a kernel that writes all n elements before the buffer is read.
    unsafe { dev.alloc::<T>(n) }
}

/// A kernel's output buffer as an op's result of `shape`.
pub(crate) fn wrap<T: CudaDType>(
    dev: &CudaDevice,
    out: CudaSlice<T>,
    shape: &Shape,
) -> (CudaStorage, Shape) {
    (
        CudaStorage::wrap_cuda_slice(out, dev.clone()),
        shape.clone(),
    )
}

/// The storage of an empty result (no kernel can be launched on zero elements).
pub(crate) fn empty(dev: &CudaDevice, shape: &Shape, dtype: DType) -> Result<CudaStorage> {
    dev.zeros_impl(shape, dtype)
}

/// `v` as a kernel's `unsigned int` argument, or an error naming `what` and the op.
pub(crate) fn u32_arg(op: &str, what: &str, v: usize) -> Result<u32> {
    match u32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("{op}: {what} = {v} is too large for the CUDA kernels (at most 2^32 - 1)"),
    }
}

/// Threads per block for one block per row of `d`: about 4 elements per thread, a multiple
/// of the warp size, 32 to 1024. Depends on `d` only, which fixes the reduction order.
pub(crate) fn row_threads(d: usize) -> u32 {
    (d.div_ceil(4).next_power_of_two().clamp(32, 1024)) as u32
}

/// One block of `row_threads(d)` threads per row, for `rows` rows.
pub(crate) fn rows_config(op: &str, rows: usize, d: usize) -> Result<LaunchConfig> {
    if rows > i32::MAX as usize {
        bail!("{op}: {rows} rows are too many for one CUDA launch (at most 2^31 - 1)");
    }
    Ok(LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (row_threads(d), 1, 1),
        shared_mem_bytes: 0,
    })
}

/// A row-wise op with one block per row: kernel `root` of `prog` for T, over the dense
/// `inputs` (the first is (…, D) and gives the rows and the result's shape), with the
/// arguments (each input, then the output (…, D), then D as `unsigned int`, then `eps` as
/// `double` when given). The kernel must take exactly those, reading rows * D or D elements
/// of each input and writing all rows * D of the output. No launch when there are no elements.
pub(crate) fn rows_op<T: Float>(
    op: &str,
    prog: nvrtc::Program,
    root: &str,
    inputs: &[(&CudaStorage, &Layout)],
    eps: Option<f64>,
) -> Result<(CudaStorage, Shape)> {
    let (s1, l1) = inputs[0];
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    if rows * d == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let cfg = rows_config(op, rows, d)?;
    let held = inputs.iter().map(|&(s, l)| dense::<T>(s, l));
    let held = held.collect::<Result<Vec<_>>>()?;
    let views = held.iter().map(Dense::view).collect::<Result<Vec<_>>>()?;
    let mut y = output::<T>(dev, rows * d)?;
    let d32 = u32_arg(op, "D", d)?;
    let func = nvrtc::function(dev, prog, &kernel::<T>(root))?;
    let mut b = func.builder();
    for v in &views {
        b.arg(v);
    }
    b.arg(&mut y).arg(&d32);
    if let Some(eps) = &eps {
        b.arg(eps);
    }
    // SAFETY: the argument list is the one documented above, which the caller's kernel takes;
    // y holds rows * d.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, y, l1.shape()))
}

/// A grid-stride launch over `n` elements (kernels loop while i < n).
pub(crate) fn elems_config(n: usize) -> LaunchConfig {
    const THREADS: usize = 256;
    let blocks = n.div_ceil(THREADS).clamp(1, 1 << 20);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Row chunks for the first pass of a deterministic column sum over `rows` rows: (chunks,
/// rows per chunk). At most 256 chunks, so the partials stay small; a function of `rows` only.
pub(crate) fn col_chunks(rows: usize) -> (usize, usize) {
    let per = rows.div_ceil(256).max(32);
    (rows.div_ceil(per).max(1), per)
}

/// Launch shape of the column-sum passes over `width` columns: one thread per column, and
/// `chunks` blocks along y for the first pass.
pub(crate) fn cols_config(width: usize, chunks: usize) -> LaunchConfig {
    const THREADS: usize = 256;
    LaunchConfig {
        grid_dim: (width.div_ceil(THREADS) as u32, chunks as u32, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// (rows, d) of a layout whose last dim is the row: rows = product of the others.
pub(crate) fn rows_of(l: &Layout) -> (usize, usize) {
    let d = l.dims().last().copied().unwrap_or(1);
    (l.shape().elem_count().checked_div(d).unwrap_or(0), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_shapes_depend_on_the_shape_only() {
        assert_eq!(row_threads(1), 32);
        assert_eq!(row_threads(64), 32);
        assert_eq!(row_threads(1024), 256);
        assert_eq!(row_threads(3584), 1024);
        assert_eq!(row_threads(1 << 20), 1024);
        assert_eq!(col_chunks(1), (1, 32));
        assert_eq!(col_chunks(100), (4, 32));
        let (c, per) = col_chunks(1_000_000);
        assert!(c <= 256 && c * per >= 1_000_000);
    }
}
