//! LayerNorm over the last dim, with or without bias, with a backward for the input, the
//! weight and the bias: candle's `candle_nn::ops::layer_norm` (and `LayerNorm` on contiguous
//! input) has no `bwd`, so gradients through it are dropped silently (DESIGN.md).
//!
//! Forward (Ba, Kiros & Hinton 2016, "Layer Normalization"; PyTorch `nn.LayerNorm`), per row
//! of D, biased variance computed in two passes for stability:
//!   mu = mean(x),  r = 1 / sqrt(mean((x - mu)^2) + eps),  x̂ = (x - mu) * r,  y = x̂ * w + b.
//! Backward, with g = dy * w:
//!   dx = r * (g - mean(g) - x̂ * mean(g * x̂)),
//!   dw = sum over rows of dy * x̂,  db = sum over rows of dy.
//! Both by custom ops (dx per row; dw and db one deterministic column reduction) that have no
//! backward of their own: a second derivative is an error, not a silent zero.
//!
//! CPU: f32 and f64 (bf16/f16 computed in f32), any strides, rows in parallel. CUDA (`cuda`
//! feature): the same, one block per row; dw and db by a deterministic two-pass column sum
//! (`crate::cuda::layer_norm`, `kernels/cuda/layer_norm.cu`).

use crate::cpu::{self, Elem};
use crate::simd::{self, multiversion, Real};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::borrow::Cow;

const NAME: &str = "layer_norm";

/// LayerNorm over the last dim, differentiable in `x`, `weight` and `bias`.
/// x: (…, D), weight: (D), bias: (D) or none -> (…, D), same dtype.
/// An error if weight or bias is not (D).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    crate::check_rank(NAME, x)?;
    crate::check_param(NAME, x, weight, "weight")?;
    match bias {
        Some(b) => {
            crate::check_param(NAME, x, b, "bias")?;
            x.apply_op3(weight, b, LayerNorm { eps })
        }
        None => x.apply_op2(weight, LayerNormNoBias { eps }),
    }
}

/// (mean, 1 / sqrt(var + eps)) of one row.
#[inline(always)]
fn stats<T: Real>(x: &[T], eps: T) -> (T, T) {
    let n = T::from_f64(x.len() as f64);
    let mu = simd::sum_map(x, |v| v) / n;
    let var = simd::sum_map(x, |v| (v - mu) * (v - mu)) / n;
    (mu, T::ONE / (var + eps).sqrt())
}

multiversion! {
    /// One block of rows: y = (x - mu) * r * w + b.
    fn fwd_block<T: Real>(x: &[T], w: &[T], b: &[T], y: &mut [T], d: usize, eps: T) {
        for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let (mu, r) = stats(x, eps);
            for (((o, &v), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *o = (v - mu) * r * w + b;
            }
        }
    }
}

multiversion! {
    /// One block of rows: dx = r * (g - mean(g) - x̂ * mean(g * x̂)), g = dy * w.
    fn dx_block<T: Real>(x: &[T], w: &[T], dy: &[T], dx: &mut [T], d: usize, eps: T) {
        let n = T::from_f64(d as f64);
        let rows = x.chunks_exact(d).zip(dy.chunks_exact(d));
        for ((x, dy), dx) in rows.zip(dx.chunks_exact_mut(d)) {
            let (mu, r) = stats(x, eps);
            let mean_g = simd::sum_map2(dy, w, |a, b| a * b) / n;
            let mean_gx = r * simd::sum_map3(dy, w, x, |a, b, c| a * b * (c - mu)) / n;
            for (((o, &v), &g), &w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                *o = r * (g * w - mean_g - (v - mu) * r * mean_gx);
            }
        }
    }
}

multiversion! {
    /// One block of rows, accumulated into acc (2 * D): acc[..D] += dy * x̂, acc[D..] += dy.
    fn dwb_block<T: Real>(x: &[T], dy: &[T], acc: &mut [T], d: usize, eps: T) {
        let (acc_w, acc_b) = acc.split_at_mut(d);
        for (x, dy) in x.chunks_exact(d).zip(dy.chunks_exact(d)) {
            let (mu, r) = stats(x, eps);
            for ((a, &v), &g) in acc_w.iter_mut().zip(x).zip(dy) {
                *a += g * (v - mu) * r;
            }
            for (a, &g) in acc_b.iter_mut().zip(dy) {
                *a += g;
            }
        }
    }
}

type Arg<'a> = (&'a CpuStorage, &'a Layout);

fn fwd<T: Elem>(x: Arg, w: Arg, b: Option<Arg>, eps: f64) -> Result<(CpuStorage, Shape)> {
    let ((s1, l1), (s2, l2)) = (x, w);
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "weight", l2, &[d])?;
    let b = match b {
        Some((s3, l3)) => {
            cpu::expect_dims(NAME, "bias", l3, &[d])?;
            T::load(NAME, s3, l3)?
        }
        None => Cow::Owned(vec![T::ZERO; d]),
    };
    let (x, w) = (T::load(NAME, s1, l1)?, T::load(NAME, s2, l2)?);
    let mut y = vec![T::ZERO; x.len()];
    let eps = T::from_f64(eps);
    cpu::par_rows(&mut y, d, |r0, out| {
        fwd_block(&x[r0 * d..r0 * d + out.len()], &w, &b, out, d, eps)
    });
    Ok((T::store(y, s1.dtype()), l1.shape().clone()))
}

fn fwd_any(x: Arg, w: Arg, b: Option<Arg>, eps: f64) -> Result<(CpuStorage, Shape)> {
    cpu::by_precision!(NAME, x.0.dtype() => fwd(x, w, b, eps))
}

/// dx, if x tracks gradients.
fn grad_x_of(x: &Tensor, w: &Tensor, dy: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    match x.track_op() {
        true => Ok(Some(x.apply_op3(w, dy, LayerNormGradX { eps })?)),
        false => Ok(None),
    }
}

/// (dw, db) as one (2, D) tensor.
fn grad_wb_of(x: &Tensor, dy: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op2(dy, LayerNormGradWB { eps })
}

/// LayerNorm forward with bias: (x, weight, bias) -> y.
struct LayerNorm {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "cotyle-layer-norm"
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
        fwd_any((s1, l1), (s2, l2), Some((s3, l3)), self.eps)
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
        crate::cuda::layer_norm((s1, l1), (s2, l2), Some((s3, l3)), self.eps)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad_x_of(x, w, dy, self.eps)?;
        if !(w.track_op() || b.track_op()) {
            return Ok((dx, None, None));
        }
        let dwb = grad_wb_of(x, dy, self.eps)?;
        let dw = w.track_op().then(|| dwb.get(0)).transpose()?;
        let db = b.track_op().then(|| dwb.get(1)).transpose()?;
        Ok((dx, dw, db))
    }
}

/// LayerNorm forward without bias: (x, weight) -> y.
struct LayerNormNoBias {
    eps: f64,
}

impl CustomOp2 for LayerNormNoBias {
    fn name(&self) -> &'static str {
        "cotyle-layer-norm-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fwd_any((s1, l1), (s2, l2), None, self.eps)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::layer_norm((s1, l1), (s2, l2), None, self.eps)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = grad_x_of(x, w, dy, self.eps)?;
        let dw = match w.track_op() {
            true => Some(grad_wb_of(x, dy, self.eps)?.get(0)?),
            false => None,
        };
        Ok((dx, dw))
    }
}

/// (x, weight, dy) -> dx.
struct LayerNormGradX {
    eps: f64,
}

fn grad_x<T: Elem>(x: Arg, w: Arg, dy: Arg, eps: f64) -> Result<(CpuStorage, Shape)> {
    let ((s1, l1), (s2, l2), (s3, l3)) = (x, w, dy);
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "weight", l2, &[d])?;
    cpu::expect_dims(NAME, "the output gradient", l3, l1.dims())?;
    let x = T::load(NAME, s1, l1)?;
    let (w, dy) = (T::load(NAME, s2, l2)?, T::load(NAME, s3, l3)?);
    let mut dx = vec![T::ZERO; x.len()];
    let eps = T::from_f64(eps);
    cpu::par_rows(&mut dx, d, |r0, out| {
        let rows = r0 * d..r0 * d + out.len();
        dx_block(&x[rows.clone()], &w, &dy[rows], out, d, eps)
    });
    Ok((T::store(dx, s1.dtype()), l1.shape().clone()))
}

impl CustomOp3 for LayerNormGradX {
    fn name(&self) -> &'static str {
        "cotyle-layer-norm-grad-x"
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
        let (x, w, dy) = ((s1, l1), (s2, l2), (s3, l3));
        cpu::by_precision!(NAME, s1.dtype() => grad_x(x, w, dy, self.eps))
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
        crate::cuda::layer_norm_grad_x((s1, l1), (s2, l2), (s3, l3), self.eps)
    }
}

/// (x, dy) -> (2, D): row 0 is dw, row 1 is db.
struct LayerNormGradWB {
    eps: f64,
}

fn grad_wb<T: Elem>(x: Arg, dy: Arg, eps: f64) -> Result<(CpuStorage, Shape)> {
    let ((s1, l1), (s2, l2)) = (x, dy);
    let d = cpu::last_dim(NAME, l1)?;
    cpu::expect_dims(NAME, "the output gradient", l2, l1.dims())?;
    let (x, dy) = (T::load(NAME, s1, l1)?, T::load(NAME, s2, l2)?);
    let n_rows = x.len().checked_div(d).unwrap_or(0);
    let eps = T::from_f64(eps);
    let dwb = cpu::par_col_sums(n_rows, d, 2 * d, |r0, rows, acc| {
        let r = r0 * d..(r0 + rows) * d;
        dwb_block(&x[r.clone()], &dy[r], acc, d, eps)
    });
    Ok((T::store(dwb, s1.dtype()), Shape::from_dims(&[2, d])))
}

impl CustomOp2 for LayerNormGradWB {
    fn name(&self) -> &'static str {
        "cotyle-layer-norm-grad-weight-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(NAME, s1.dtype() => grad_wb((s1, l1), (s2, l2), self.eps))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::layer_norm_grad_wb((s1, l1), (s2, l2), self.eps)
    }
}
