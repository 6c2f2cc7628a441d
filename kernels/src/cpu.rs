//! CPU plumbing shared by every op: reading a `CpuStorage` through its `Layout` as row-major
//! rows of the last dim (borrowed when contiguous, gathered through the strides otherwise,
//! converted to f32 for bf16/f16), writing results back in the input's dtype, and running a
//! kernel over blocks of rows in parallel.
//!
//! The blocks run on candle's own CPU pool (`candle_core::utils::barrier_pool`, the threads
//! that run candle 0.11's tensor ops; their workers spin briefly after each op, so they pick
//! our work up at once and never compete with a second pool for the cores: measured 15-20%
//! faster than rayon's global pool at 2 threads), or on the current rayon pool when called
//! from inside one.
//!
//! Parallel work is cut into fixed blocks of whole rows (about `TASK_ELEMS` elements each)
//! that depend only on the shape, never on the thread count, and column reductions (the
//! gradients of norm weights) add the block partials in block order, so every result is
//! bit-identical for any number of threads (DESIGN.md, "Determinism").

use crate::simd::Real;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Mutex;

/// Elements per parallel task (whole rows): large enough to hide the scheduling overhead.
const TASK_ELEMS: usize = 1 << 14;

/// Rows per parallel task for rows of `d` elements.
#[inline]
pub(crate) fn rows_per_task(d: usize) -> usize {
    (TASK_ELEMS / d.max(1)).max(1)
}

/// The precision a kernel computes in for a storage dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// f32, bf16, f16 (the halves are widened to f32 and narrowed back).
    F32,
    F64,
}

/// Which precision an op on `dtype` computes in; an error naming the op otherwise.
pub(crate) fn work(op: &str, dtype: DType) -> Result<Work> {
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => Ok(Work::F32),
        DType::F64 => Ok(Work::F64),
        d => bail!("{op}: dtype {d:?} is not supported on CPU (f32, f64, bf16, f16)"),
    }
}

/// Calls `f::<f32>(args)` or `f::<f64>(args)`, by the precision an op named `name` computes
/// in for `dtype` (see [`work`]); an unsupported dtype returns the error from the caller.
macro_rules! by_precision {
    ($name:expr, $dtype:expr => $f:ident($($arg:expr),* $(,)?)) => {
        match $crate::cpu::work($name, $dtype)? {
            $crate::cpu::Work::F32 => $f::<f32>($($arg),*),
            $crate::cpu::Work::F64 => $f::<f64>($($arg),*),
        }
    };
}
pub(crate) use by_precision;

/// Reading and writing storages in a working precision.
pub(crate) trait Elem: Real {
    /// The elements of `s` seen through `l`, in row-major order of `l`'s shape.
    fn load<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [Self]>>;
    /// A storage of `dtype` holding `v`.
    fn store(v: Vec<Self>, dtype: DType) -> CpuStorage;
}

fn borrow_or_gather<'a, T: Copy>(v: &'a [T], l: &Layout) -> Cow<'a, [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Cow::Borrowed(&v[a..b]),
        None => Cow::Owned(gather(v, l, |x| x)),
    }
}

impl Elem for f32 {
    fn load<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [f32]>> {
        Ok(match s {
            CpuStorage::F32(v) => borrow_or_gather(v, l),
            CpuStorage::BF16(v) => Cow::Owned(gather(v, l, bf16::to_f32)),
            CpuStorage::F16(v) => Cow::Owned(gather(v, l, f16::to_f32)),
            s => bail!("{op}: cannot read {:?} as f32", s.dtype()),
        })
    }

    fn store(v: Vec<f32>, dtype: DType) -> CpuStorage {
        match dtype {
            DType::BF16 => CpuStorage::BF16(v.into_iter().map(bf16::from_f32).collect()),
            DType::F16 => CpuStorage::F16(v.into_iter().map(f16::from_f32).collect()),
            _ => CpuStorage::F32(v),
        }
    }
}

impl Elem for f64 {
    fn load<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [f64]>> {
        match s {
            CpuStorage::F64(v) => Ok(borrow_or_gather(v, l)),
            s => bail!("{op}: cannot read {:?} as f64", s.dtype()),
        }
    }

    fn store(v: Vec<f64>, _dtype: DType) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

/// The elements of `src` seen through layout `l` (any strides, including 0 for broadcasts),
/// mapped by `f`, in row-major order. Rows of the last dim are copied as runs.
pub(crate) fn gather<S: Copy, T>(src: &[S], l: &Layout, f: impl Fn(S) -> T) -> Vec<T> {
    let (dims, stride) = (l.dims(), l.stride());
    let n = l.shape().elem_count();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = dims.len();
    if rank == 0 {
        out.push(f(src[l.start_offset()]));
        return out;
    }
    let (d, s) = (dims[rank - 1], stride[rank - 1]);
    let (outer, ostride) = (&dims[..rank - 1], &stride[..rank - 1]);
    let mut idx = vec![0usize; rank - 1];
    let mut base = l.start_offset();
    loop {
        if s == 1 {
            out.extend(src[base..base + d].iter().map(|&v| f(v)));
        } else {
            out.extend((0..d).map(|j| f(src[base + j * s])));
        }
        // Next outer multi-index, last axis fastest.
        let mut k = rank - 1;
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            idx[k] += 1;
            base += ostride[k];
            if idx[k] < outer[k] {
                break;
            }
            base -= idx[k] * ostride[k];
            idx[k] = 0;
        }
    }
}

/// Size of the last dim of `l`, the row length every op works along; an error for a scalar.
pub(crate) fn last_dim(op: &str, l: &Layout) -> Result<usize> {
    match l.dims().last() {
        Some(&d) => Ok(d),
        None => bail!("{op}: expects a tensor with at least one dim, got a scalar"),
    }
}

/// Errors unless layout `l` (named `what`) has exactly `dims`.
pub(crate) fn expect_dims(op: &str, what: &str, l: &Layout, dims: &[usize]) -> Result<()> {
    if l.dims() != dims {
        bail!("{op}: {what} has shape {:?}, expected {:?}", l.dims(), dims);
    }
    Ok(())
}

/// Runs `f(i, &mut task_i)` for every task, in parallel: on candle's own CPU thread pool (the
/// threads that run candle's tensor ops, so the two never compete for cores), or on the
/// current rayon pool when called from inside one. A task is typically a block of output
/// rows, or several output slices cut the same way.
pub(crate) fn par_tasks<B: Send>(tasks: Vec<B>, f: impl Fn(usize, &mut B) + Sync) {
    if tasks.len() <= 1 || rayon::current_thread_index().is_some() {
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut b)| f(i, &mut b));
        return;
    }
    let tasks: Vec<Mutex<B>> = tasks.into_iter().map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
        for i in range {
            // Each task is visited once: the lock is never contended.
            let mut b = tasks[i].lock().unwrap_or_else(|e| e.into_inner());
            f(i, &mut b);
        }
    });
}

/// Runs `f(first_row, block)` over `out` cut into blocks of whole rows of `d`, in parallel.
/// `block` is the output rows `first_row..first_row + block.len() / d`.
pub(crate) fn par_rows<T: Send>(out: &mut [T], d: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.is_empty() || d == 0 {
        return;
    }
    let rpt = rows_per_task(d);
    let block = rpt * d;
    if out.len() <= block {
        f(0, out);
        return;
    }
    par_tasks(out.chunks_mut(block).collect(), |b, blk| f(b * rpt, blk));
}

/// Column sums over `n_rows` rows of `d`: `f(first_row, rows, acc)` adds the contributions
/// of rows `first_row..first_row + rows` into `acc` (length `width`, zeroed). Blocks run in
/// parallel; their partials are added in block order, so the result is deterministic.
pub(crate) fn par_col_sums<T: Real>(
    n_rows: usize,
    d: usize,
    width: usize,
    f: impl Fn(usize, usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::ZERO; width];
    if n_rows == 0 || width == 0 {
        return out;
    }
    let rpt = rows_per_task(d);
    let n_blocks = n_rows.div_ceil(rpt);
    if n_blocks == 1 {
        f(0, n_rows, &mut out);
        return out;
    }
    let mut partial = vec![T::ZERO; n_blocks * width];
    par_tasks(partial.chunks_mut(width).collect(), |b, acc| {
        f(b * rpt, rpt.min(n_rows - b * rpt), acc)
    });
    for p in partial.chunks_exact(width) {
        for (o, &v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp, Tensor};

    fn gathered(t: &Tensor) -> Vec<f32> {
        let (s, l) = t.storage_and_layout();
        match &*s {
            candle_core::Storage::Cpu(s) => f32::load("test", s, l).unwrap().into_owned(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn gather_follows_strides() -> Result<()> {
        let base = Tensor::arange(0f32, 60., &Device::Cpu)?.reshape((3, 4, 5))?;
        for view in [
            base.clone(),
            base.transpose(0, 2)?,
            base.narrow(2, 1, 3)?,
            base.i((.., 1..3, 2))?,
            base.i((1, .., ..))?.t()?,
            base.i((.., 0..1, 0..1))?.broadcast_as((3, 2, 4))?,
        ] {
            let want = view.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(gathered(&view), want, "layout {:?}", view.layout());
        }
        Ok(())
    }

    #[test]
    fn col_sums_are_independent_of_blocking() {
        let (n, d) = (1000usize, 40usize);
        let x: Vec<f64> = (0..n * d).map(|i| (i % 97) as f64).collect();
        let got = par_col_sums::<f64>(n, d, d, |r0, rows, acc| {
            for row in x[r0 * d..(r0 + rows) * d].chunks_exact(d) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
        });
        for (j, g) in got.iter().enumerate() {
            let want: f64 = (0..n).map(|r| x[r * d + j]).sum();
            assert_eq!(*g, want);
        }
    }
}
