//! The launch glue LayerNorm and RMSNorm share (`layer_norm.rs`, `rms_norm.rs`): the input
//! gradient with one block per row, and the parameter gradients as one deterministic column
//! sum (per-row statistics, per-chunk partials, chunk sums in order; no float atomics), with
//! the kernels of `ROW_NORM_DX`, `ROW_NORM_STATS`, `ROW_NORM_PARTIAL` and `COL_SUMS_FINISH`
//! in common.cuh.

use super::{
    by_dtype, col_chunks, cols_config, dense, empty, kernel, nvrtc, output, rows_config, rows_of,
    rows_op, u32_arg, wrap, Float,
};
use crate::cpu::expect_dims;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};
use cudarc::driver::PushKernelArg;

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// (x (…, D), weight (D), dy (…, D)) -> dx (…, D) with kernel `root` of `prog` (a
/// `ROW_NORM_DX`); `op` names the op in errors.
pub(super) fn grad_x(
    op: &str,
    prog: nvrtc::Program,
    root: &str,
    (x, w, dy): (Arg, Arg, Arg),
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let (_, d) = rows_of(x.1);
    expect_dims(op, "weight", w.1, &[d])?;
    expect_dims(op, "the output gradient", dy.1, x.1.dims())?;
    by_dtype!(op, x.0.dtype() => rows_op(op, prog, root, &[x, w, dy], Some(eps)))
}

/// The parameter gradients of a row norm: (x (…, D), dy (…, D)) -> (D) for one parameter,
/// (P, D) for P, one row each.
pub(super) struct ParamGrad {
    /// The op, for errors.
    pub(super) op: &'static str,
    pub(super) prog: nvrtc::Program,
    /// Kernel roots: the statistics of each row (`ROW_NORM_STATS`), the per-chunk partials of
    /// the P * D columns (`ROW_NORM_PARTIAL`), their sums (`COL_SUMS_FINISH`).
    pub(super) kernels: [&'static str; 3],
    /// Statistics per row, in the working precision.
    pub(super) stats_per_row: usize,
    /// P.
    pub(super) params: usize,
}

impl ParamGrad {
    pub(super) fn run(&self, x: Arg, dy: Arg, eps: f64) -> Result<(CudaStorage, Shape)> {
        expect_dims(self.op, "the output gradient", dy.1, x.1.dims())?;
        by_dtype!(self.op, x.0.dtype() => col_sums(self, x, dy, eps))
    }
}

fn col_sums<T: Float>(
    g: &ParamGrad,
    (s1, l1): Arg,
    (s2, l2): Arg,
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let op = g.op;
    let [stats_root, partial_root, finish_root] = g.kernels;
    let dev = s1.device();
    let (rows, d) = rows_of(l1);
    let (shape, width) = match g.params {
        1 => (Shape::from_dims(&[d]), d),
        p => (Shape::from_dims(&[p, d]), p * d),
    };
    if rows * d == 0 {
        // No rows: the sums are empty, the gradients are zero.
        return Ok((empty(dev, &shape, s1.dtype())?, shape));
    }
    let (x, dy) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (x, dy) = (x.view()?, dy.view()?);
    let (d32, rows32) = (u32_arg(op, "D", d)?, u32_arg(op, "rows", rows)?);
    let width32 = match g.params {
        1 => d32,
        p => u32_arg(op, &format!("{p} * D"), width)?,
    };
    let (chunks, per) = col_chunks(rows);
    let (chunks32, per32) = (chunks as u32, per as u32);

    let mut stats = output::<T::Work>(dev, g.stats_per_row * rows)?;
    {
        let func = nvrtc::function(dev, g.prog, &kernel::<T>(stats_root))?;
        let mut b = func.builder();
        b.arg(&x).arg(&mut stats).arg(&d32).arg(&eps);
        // SAFETY: a `ROW_NORM_STATS` kernel; x holds rows * d, stats the kernel's per-row
        // values for each row.
        unsafe { b.launch(rows_config(op, rows, d)?) }.w()?;
    }
    let mut partial = output::<T::Work>(dev, chunks * width)?;
    {
        let func = nvrtc::function(dev, g.prog, &kernel::<T>(partial_root))?;
        let mut b = func.builder();
        b.arg(&x).arg(&dy).arg(&stats).arg(&mut partial);
        b.arg(&rows32).arg(&d32).arg(&per32);
        // SAFETY: a `ROW_NORM_PARTIAL` kernel; partial holds chunks * width, all written.
        unsafe { b.launch(cols_config(width, chunks)) }.w()?;
    }
    let mut out = output::<T>(dev, width)?;
    {
        let func = nvrtc::function(dev, g.prog, &kernel::<T>(finish_root))?;
        let mut b = func.builder();
        b.arg(&partial).arg(&mut out).arg(&chunks32).arg(&width32);
        // SAFETY: a `COL_SUMS_FINISH` kernel; out holds width.
        unsafe { b.launch(cols_config(width, 1)) }.w()?;
    }
    Ok(wrap(dev, out, &shape))
}
