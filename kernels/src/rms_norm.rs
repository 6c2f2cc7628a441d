//! RMSNorm over the last dim with a backward for the input and the weight: candle's
//! `candle_nn::ops::rms_norm` (and `RmsNorm` on contiguous input) has no `bwd`, so gradients
//! through it are dropped silently (DESIGN.md, "Rules of the house").
//!
//! Forward (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization"), per row of D:
//!   r = 1 / sqrt(mean(x^2) + eps),  y = x * r * w.
//! Backward, with g = dy * w and x̂ = x * r:
//!   dx = r * (g - x̂ * mean(g * x̂)) = r * g - x * r^3 * sum(dy * w * x) / D,
//!   dw = sum over rows of dy * x̂.
//! Both by custom ops (dx per row; dw a deterministic column reduction) that have no backward
//! of their own: a second derivative is an error, not a silent zero.
//!
//! CPU: f32 and f64 (bf16/f16 computed in f32), any strides, rows in parallel. CUDA (`cuda`
//! feature): the same, one block per row; dw by a deterministic two-pass column sum
//! (`crate::cuda::rms_norm`, `kernels/cuda/rms_norm.cu`).

use crate::cpu::{self, Elem};
use crate::simd::{self, multiversion, Real};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

const NAME: &str = "rms_norm";

/// RMSNorm over the last dim, differentiable in `x` and `weight`.
/// x: (…, D), weight: (D) -> (…, D), same dtype. An error if weight is not (D).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    crate::check_rank(NAME, x)?;
    crate::check_param(NAME, x, weight, "weight")?;
    x.apply_op2(weight, RmsNorm { eps })
}

/// 1 / sqrt(mean(x^2) + eps) for one row.
#[inline(always)]
fn rstd<T: Real>(x: &[T], eps: T) -> T {
    let n = T::from_f64(x.len() as f64);
    T::ONE / (simd::sum_map(x, |v| v * v) / n + eps).sqrt()
}

multiversion! {
    /// One block of rows: y = x * r * w.
    fn fwd_block<T: Real>(x: &[T], w: &[T], y: &mut [T], d: usize, eps: T) {
        for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let r = rstd(x, eps);
            for ((o, &v), &w) in y.iter_mut().zip(x).zip(w) {
                *o = v * r * w;
            }
        }
    }
}

multiversion! {
    /// One block of rows: dx = r * dy * w - x * r^3 * sum(dy * w * x) / D.
    fn dx_block<T: Real>(x: &[T], w: &[T], dy: &[T], dx: &mut [T], d: usize, eps: T) {
        let n = T::from_f64(d as f64);
        let rows = x.chunks_exact(d).zip(dy.chunks_exact(d));
        for ((x, dy), dx) in rows.zip(dx.chunks_exact_mut(d)) {
            let r = rstd(x, eps);
            let s = simd::sum_map3(dy, w, x, |a, b, c| a * b * c);
            let c = r * r * r * s / n;
            for (((o, &v), &g), &w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                *o = r * g * w - v * c;
            }
        }
    }
}

multiversion! {
    /// One block of rows, accumulated into acc (D): acc += dy * x * r.
    fn dw_block<T: Real>(x: &[T], dy: &[T], acc: &mut [T], d: usize, eps: T) {
        for (x, dy) in x.chunks_exact(d).zip(dy.chunks_exact(d)) {
            let r = rstd(x, eps);
            for ((a, &v), &g) in acc.iter_mut().zip(x).zip(dy) {
                *a += g * v * r;
            }
        }
    }
}

/// RMSNorm forward: (x, weight) -> y.
struct RmsNorm {
    eps: f64,
}

fn fwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "weight", l2, &[d])?;
    let (x, w) = (T::load(NAME, s1, l1)?, T::load(NAME, s2, l2)?);
    let mut y = vec![T::ZERO; x.len()];
    let eps = T::from_f64(eps);
    cpu::par_rows(&mut y, d, |r0, out| {
        fwd_block(&x[r0 * d..r0 * d + out.len()], &w, out, d, eps)
    });
    Ok((T::store(y, s1.dtype()), l1.shape().clone()))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "cotyle-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(NAME, s1.dtype() => fwd(s1, l1, s2, l2, self.eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::rms_norm((s1, l1), (s2, l2), self.eps)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let dx = match x.track_op() {
            true => Some(x.apply_op3(w, dy, RmsNormGradX { eps })?),
            false => None,
        };
        let dw = match w.track_op() {
            true => Some(x.apply_op2(dy, RmsNormGradW { eps })?),
            false => None,
        };
        Ok((dx, dw))
    }
}

/// (x, weight, dy) -> dx.
struct RmsNormGradX {
    eps: f64,
}

fn grad_x<T: Elem>(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "weight", l2, &[d])?;
    cpu::expect_dims(NAME, "the output gradient", l3, l1.dims())?;
    let (x, w, dy) = (
        T::load(NAME, s1, l1)?,
        T::load(NAME, s2, l2)?,
        T::load(NAME, s3, l3)?,
    );
    let mut dx = vec![T::ZERO; x.len()];
    let eps = T::from_f64(eps);
    cpu::par_rows(&mut dx, d, |r0, out| {
        let rows = r0 * d..r0 * d + out.len();
        dx_block(&x[rows.clone()], &w, &dy[rows], out, d, eps)
    });
    Ok((T::store(dx, s1.dtype()), l1.shape().clone()))
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "cotyle-rms-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let args = ((s1, l1), (s2, l2), (s3, l3));
        cpu::by_precision!(NAME, s1.dtype() => grad_x(args.0, args.1, args.2, self.eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::rms_norm_grad_x((s1, l1), (s2, l2), (s3, l3), self.eps)
    }
}

/// (x, dy) -> dw (D).
struct RmsNormGradW {
    eps: f64,
}

fn grad_w<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "the output gradient", l2, l1.dims())?;
    let (x, dy) = (T::load(NAME, s1, l1)?, T::load(NAME, s2, l2)?);
    let n_rows = x.len().checked_div(d).unwrap_or(0);
    let eps = T::from_f64(eps);
    let dw = cpu::par_col_sums(n_rows, d, d, |r0, rows, acc| {
        let r = r0 * d..(r0 + rows) * d;
        dw_block(&x[r.clone()], &dy[r], acc, d, eps)
    });
    Ok((T::store(dw, s1.dtype()), Shape::from_dims(&[d])))
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "cotyle-rms-norm-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(NAME, s1.dtype() => grad_w(s1, l1, s2, l2, self.eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::rms_norm_grad_w((s1, l1), (s2, l2), self.eps)
    }
}
