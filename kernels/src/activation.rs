//! Elementwise activations with a backward: SiLU, GELU with the tanh approximation, and
//! SwiGLU. candle's `silu`/`gelu` are scalar loops over libm `exp`/`tanh`; these compute in
//! one vectorised pass with the crate's branch-free `exp` (simd.rs).
//!
//! Formulas, with sigma(z) = 1 / (1 + e^-z):
//! - SiLU (Elfwing et al. 2018; Ramachandran et al. 2017 "Swish"): y = x * sigma(x),
//!   dy/dx = s * (1 + x * (1 - s)) with s = sigma(x).
//! - GELU, tanh approximation (Hendrycks & Gimpel 2016, eq. in section 2; PyTorch
//!   `gelu(approximate="tanh")`): y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
//!   Since 0.5 (1 + tanh(u)) = sigma(2u), we compute y = x * s with s = sigma(2u), which
//!   has no cancellation for negative x; dy/dx = s + 2 x s (1 - s) u'(x),
//!   u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
//! - SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): y = silu(gate) * up;
//!   d gate = dy * up * silu'(gate), d up = dy * silu(gate).
//!
//! sigma and 1 - sigma both come from e = exp(-|z|) (never overflows), so they are accurate
//! at both tails and every gradient is finite for finite inputs.
//!
//! Backward passes are custom ops: d x of SiLU/GELU and d gate of SwiGLU have no backward of
//! their own (a second derivative is an error, not a silent zero); d up of SwiGLU is SwiGLU
//! itself applied to (gate, dy), so it is differentiable.
//!
//! CPU: f32 and f64 (bf16/f16 computed in f32), any strides, any rank (scalars too),
//! blocks of elements in parallel. CUDA (`cuda` feature): the same, elementwise kernels
//! (`crate::cuda::silu_gelu` and friends, `kernels/cuda/activation.cu`).

use crate::cpu::{self, Elem};
use crate::simd::{multiversion, Real};
use candle_core::backend::BackendStorage;
use candle_core::Tensor;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape};

/// SiLU (swish), differentiable. x: any shape -> same shape and dtype.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(Unary(Act::Silu))
}

/// GELU with the tanh approximation (PyTorch `approximate="tanh"`), differentiable.
/// x: any shape -> same shape and dtype.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(Unary(Act::GeluTanh))
}

/// SwiGLU: silu(gate) * up, differentiable in both. gate, up: the same shape and dtype ->
/// that shape. An error naming both shapes when they differ.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    check_same(gate, up)?;
    gate.apply_op2(up, SwiGlu)
}

/// Errors unless `up` has the shape, dtype and device of `gate`.
fn check_same(gate: &Tensor, up: &Tensor) -> Result<()> {
    if gate.dims() != up.dims() {
        bail!(
            "swiglu: gate has shape {:?} but up has shape {:?}; they must be equal",
            gate.dims(),
            up.dims()
        );
    }
    crate::check_same_kind("swiglu", ("gate", gate), ("up", up))
}

/// Which unary activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Silu,
    GeluTanh,
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Silu => "silu",
            Act::GeluTanh => "gelu_tanh",
        }
    }
}

/// (sigma(z), 1 - sigma(z)), both accurate at either tail: from e = exp(-|z|) <= 1.
#[inline(always)]
fn sigmoid_pair<T: Real>(z: T) -> (T, T) {
    let pos = z > T::ZERO;
    let nz = if pos { T::ZERO - z } else { z };
    let e = nz.exp();
    let q = T::ONE / (T::ONE + e);
    let eq = e * q;
    if pos {
        (q, eq)
    } else {
        (eq, q)
    }
}

/// sqrt(2 / pi) and the cubic coefficient of the tanh-GELU.
const GELU_C: f64 = 0.797_884_560_802_865_4;
const GELU_A: f64 = 0.044_715;

/// (s, 1 - s) for GELU at x: s = sigma(2u), u = c (x + a x^3).
#[inline(always)]
fn gelu_s<T: Real>(x: T) -> (T, T) {
    let (c2, a) = (T::from_f64(2.0 * GELU_C), T::from_f64(GELU_A));
    sigmoid_pair(c2 * (x + a * x * x * x))
}

multiversion! {
    /// y = act(x), elementwise.
    fn fwd_block<T: Real>(act: Act, x: &[T], y: &mut [T]) {
        match act {
            Act::Silu => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = v * sigmoid_pair(v).0;
                }
            }
            Act::GeluTanh => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = v * gelu_s(v).0;
                }
            }
        }
    }
}

multiversion! {
    /// dx = dy * act'(x), elementwise.
    fn grad_block<T: Real>(act: Act, x: &[T], dy: &[T], dx: &mut [T]) {
        match act {
            Act::Silu => {
                for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
                    let (s, sc) = sigmoid_pair(v);
                    *o = g * s * (T::ONE + v * sc);
                }
            }
            Act::GeluTanh => {
                let (c2, a3) = (T::from_f64(2.0 * GELU_C), T::from_f64(3.0 * GELU_A));
                for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
                    let (s, sc) = gelu_s(v);
                    *o = g * (s + v * s * sc * c2 * (T::ONE + a3 * v * v));
                }
            }
        }
    }
}

multiversion! {
    /// y = silu(gate) * up, elementwise.
    fn swiglu_block<T: Real>(gate: &[T], up: &[T], y: &mut [T]) {
        for ((o, &g), &u) in y.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid_pair(g).0 * u;
        }
    }
}

multiversion! {
    /// d gate = dy * up * silu'(gate), elementwise.
    fn swiglu_dgate_block<T: Real>(gate: &[T], up: &[T], dy: &[T], dx: &mut [T]) {
        for (((o, &g), &u), &d) in dx.iter_mut().zip(gate).zip(up).zip(dy) {
            let (s, sc) = sigmoid_pair(g);
            *o = d * u * s * (T::ONE + g * sc);
        }
    }
}

/// The elements of `out` in parallel, in fixed blocks (thread-count independent).
fn par_elems<T: Send>(out: &mut [T], f: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync) {
    cpu::par_rows(out, 1, |r0, blk| f(r0..r0 + blk.len(), blk));
}

/// act(x) forward.
struct Unary(Act);

fn unary_fwd<T: Elem>(act: Act, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = T::load(act.name(), s, l)?;
    let mut y = vec![T::ZERO; x.len()];
    par_elems(&mut y, |r, out| fwd_block(act, &x[r], out));
    Ok((T::store(y, s.dtype()), l.shape().clone()))
}

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        match self.0 {
            Act::Silu => "cotyle-silu",
            Act::GeluTanh => "cotyle-gelu-tanh",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(self.0.name(), s.dtype() => unary_fwd(self.0, s, l))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::silu_gelu(self.0.name(), self.0 == Act::GeluTanh, (s, l))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        Ok(Some(arg.apply_op2(grad_res, UnaryGrad(self.0))?))
    }
}

/// (x, dy) -> dx = dy * act'(x).
struct UnaryGrad(Act);

fn unary_grad<T: Elem>(
    act: Act,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    cpu::expect_dims(act.name(), "the output gradient", l2, l1.dims())?;
    let (x, dy) = (T::load(act.name(), s1, l1)?, T::load(act.name(), s2, l2)?);
    let mut dx = vec![T::ZERO; x.len()];
    par_elems(&mut dx, |r, out| {
        grad_block(act, &x[r.clone()], &dy[r], out)
    });
    Ok((T::store(dx, s1.dtype()), l1.shape().clone()))
}

impl CustomOp2 for UnaryGrad {
    fn name(&self) -> &'static str {
        match self.0 {
            Act::Silu => "cotyle-silu-backward",
            Act::GeluTanh => "cotyle-gelu-tanh-backward",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(self.0.name(), s1.dtype() => unary_grad(self.0, (s1, l1), (s2, l2)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let gelu = self.0 == Act::GeluTanh;
        crate::cuda::silu_gelu_grad(self.0.name(), gelu, (s1, l1), (s2, l2))
    }
}

const SWIGLU: &str = "swiglu";

/// (gate, up) -> silu(gate) * up.
struct SwiGlu;

fn swiglu_fwd<T: Elem>(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    cpu::expect_dims(SWIGLU, "up", l2, l1.dims())?;
    let (g, u) = (T::load(SWIGLU, s1, l1)?, T::load(SWIGLU, s2, l2)?);
    let mut y = vec![T::ZERO; g.len()];
    par_elems(&mut y, |r, out| swiglu_block(&g[r.clone()], &u[r], out));
    Ok((T::store(y, s1.dtype()), l1.shape().clone()))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "cotyle-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu::by_precision!(SWIGLU, s1.dtype() => swiglu_fwd((s1, l1), (s2, l2)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::swiglu((s1, l1), (s2, l2))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dgate = match gate.track_op() {
            true => Some(gate.apply_op3(up, dy, SwiGluGradGate)?),
            false => None,
        };
        // d up = silu(gate) * dy: SwiGLU itself, so it has a backward of its own.
        let dup = match up.track_op() {
            true => Some(gate.apply_op2(dy, SwiGlu)?),
            false => None,
        };
        Ok((dgate, dup))
    }
}

/// (gate, up, dy) -> d gate = dy * up * silu'(gate).
struct SwiGluGradGate;

fn swiglu_dgate<T: Elem>(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    cpu::expect_dims(SWIGLU, "up", l2, l1.dims())?;
    cpu::expect_dims(SWIGLU, "the output gradient", l3, l1.dims())?;
    let (g, u, dy) = (
        T::load(SWIGLU, s1, l1)?,
        T::load(SWIGLU, s2, l2)?,
        T::load(SWIGLU, s3, l3)?,
    );
    let mut dx = vec![T::ZERO; g.len()];
    par_elems(&mut dx, |r, out| {
        swiglu_dgate_block(&g[r.clone()], &u[r.clone()], &dy[r], out)
    });
    Ok((T::store(dx, s1.dtype()), l1.shape().clone()))
}

impl CustomOp3 for SwiGluGradGate {
    fn name(&self) -> &'static str {
        "cotyle-swiglu-grad-gate"
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
        cpu::by_precision!(SWIGLU, s1.dtype() => swiglu_dgate(args.0, args.1, args.2))
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
        crate::cuda::swiglu_dgate((s1, l1), (s2, l2), (s3, l3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward and gradients of the three activations, as f32 bits, on the current build.
    fn bits() -> Vec<Vec<u32>> {
        let dev = &Device::Cpu;
        let vals: Vec<f32> = (0..3001).map(|i| ((i as f32) * 0.37).sin() * 9.0).collect();
        let x = Var::from_vec(vals.clone(), 3001, dev).unwrap();
        let u = Var::from_vec(vals.iter().rev().copied().collect(), 3001, dev).unwrap();
        let mut out = Vec::new();
        for y in [
            silu(&x).unwrap(),
            gelu_tanh(&x).unwrap(),
            swiglu(&x, &u).unwrap(),
        ] {
            let g = (&y * &y).unwrap().sum_all().unwrap().backward().unwrap();
            let mut ts = vec![y];
            ts.extend([&x, &u].iter().filter_map(|v| g.get(v).cloned()));
            for t in ts {
                let v = t.to_vec1::<f32>().unwrap();
                out.push(v.iter().map(|f| f.to_bits()).collect());
            }
        }
        out
    }

    #[test]
    fn every_simd_build_gives_identical_bits() {
        crate::simd::assert_builds_agree("activations", bits);
    }

    #[test]
    fn tails_are_finite_and_exact_in_f64() {
        for x in [-800.0f64, -60.0, -1e-3, 0.0, 1e-3, 60.0, 800.0] {
            let (s, sc) = sigmoid_pair(x);
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((s - want).abs() <= 1e-15 * want.max(1e-300), "sigma({x})");
            assert!((s + sc - 1.0).abs() < 1e-15, "1 - sigma({x})");
        }
    }
}
