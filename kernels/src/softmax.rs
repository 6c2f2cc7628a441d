//! Softmax over the last dim with a backward: candle's `candle_nn::ops::softmax_last_dim` has
//! no `bwd`, so gradients through it are dropped silently (DESIGN.md, "Rules of the house").
//!
//! Forward (numerically stable): y = exp(x - max(x)) / sum(exp(x - max(x))), per row.
//! Backward (the softmax Jacobian-vector product): dx = y * (dy - sum(dy * y)), per row,
//! computed by a second custom op from the saved output y; that op has no backward of its
//! own (a second derivative is an error, not a silent zero).
//!
//! CPU: f32 and f64 (bf16/f16 computed in f32), any strides, rows in parallel, a vectorised
//! `exp` for f32. CUDA (`cuda` feature): the same dtypes and any strides, one block per row
//! (`crate::cuda::softmax`, `kernels/cuda/softmax.cu`).

use crate::cpu::{self, Elem};
use crate::simd::{self, multiversion};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

const NAME: &str = "softmax_last_dim";

/// Softmax over the last dim, differentiable. x: (…, D) -> (…, D), same dtype.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    crate::check_rank(NAME, x)?;
    x.apply_op1(Softmax)
}

struct Softmax;

multiversion! {
    /// One block of rows: y = exp(x - max) / sum.
    fn fwd_block<T: Real>(x: &[T], y: &mut [T], d: usize) {
        for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let m = simd::max(x);
            for (o, &v) in y.iter_mut().zip(x) {
                *o = (v - m).exp();
            }
            let inv = T::ONE / simd::sum_map(y, |v| v);
            for o in y.iter_mut() {
                *o = *o * inv;
            }
        }
    }
}

multiversion! {
    /// One block of rows: dx = y * (dy - sum(dy * y)).
    fn bwd_block<T: Real>(y: &[T], dy: &[T], dx: &mut [T], d: usize) {
        let rows = y.chunks_exact(d).zip(dy.chunks_exact(d));
        for ((y, dy), dx) in rows.zip(dx.chunks_exact_mut(d)) {
            let s = simd::sum_map2(y, dy, |a, b| a * b);
            for ((o, &a), &b) in dx.iter_mut().zip(y).zip(dy) {
                *o = a * (b - s);
            }
        }
    }
}

fn fwd<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let d = cpu::last_dim(NAME, l)?;
    let x = T::load(NAME, s, l)?;
    let mut y = vec![T::ZERO; x.len()];
    cpu::par_rows(&mut y, d, |r0, out| {
        fwd_block(&x[r0 * d..r0 * d + out.len()], out, d)
    });
    Ok((T::store(y, s.dtype()), l.shape().clone()))
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "cotyle-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(NAME, s.dtype() => fwd(s, l))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::softmax(s, l)
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        Ok(Some(res.apply_op2(grad_res, SoftmaxBackward)?))
    }
}

/// (y, dy) -> dx for the softmax above; y is the forward's output.
struct SoftmaxBackward;

fn bwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "the output gradient", l2, l1.dims())?;
    let (y, dy) = (T::load(NAME, s1, l1)?, T::load(NAME, s2, l2)?);
    let mut dx = vec![T::ZERO; y.len()];
    cpu::par_rows(&mut dx, d, |r0, out| {
        let rows = r0 * d..r0 * d + out.len();
        bwd_block(&y[rows.clone()], &dy[rows], out, d)
    });
    Ok((T::store(dx, s1.dtype()), l1.shape().clone()))
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "cotyle-softmax-last-dim-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(NAME, s1.dtype() => bwd(s1, l1, s2, l2))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::softmax_bwd(s1, l1, s2, l2)
    }
}
