//! The AdamW update (Loshchilov & Hutter; PyTorch's `torch.optim.AdamW`) as two in-place
//! ops per parameter, so a step allocates nothing and reads each buffer once or twice,
//! instead of the dozen whole-tensor temporaries a composition of tensor ops makes
//! (candle_nn's `AdamW` does that, single-threaded per op).
//!
//! For a parameter p with gradient g (scaled by `grad_scale`, which is how global-norm
//! clipping is applied without a scaled copy of g), step t >= 1:
//!   m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
//!   p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//!
//! The moments live in one tensor per parameter, `moments`: (2, numel) in the parameter's
//! dtype (row 0 = m, row 1 = v), contiguous; the optimizer owns it and checkpoints it.
//! The parameter must be contiguous (a `Var` is); the gradient may have any strides.
//! CPU: f32 and f64, parallel over fixed blocks (results do not depend on the thread count).
//! CUDA (`cuda` feature): f32 and f64, elementwise (`crate::cuda::adamw_moments`,
//! `kernels/cuda/adamw.cu`), the same constants and unfused operations in the same order, so
//! the same bits as the CPU.

use crate::cpu::{self, Elem};
use crate::simd::multiversion;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Tensor};

const NAME: &str = "adamw";

/// Elements per parallel task.
const BLOCK: usize = 1 << 14;

/// The hyper-parameters of one AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The step number, from 1 (bias correction).
    pub step: u64,
    /// Multiplies the gradient first (global-norm clipping); 1 otherwise.
    pub grad_scale: f64,
}

/// Updates `param` and its `moments` (2, numel) in place with gradient `grad` (param's shape).
pub fn adamw_step(param: &Tensor, grad: &Tensor, moments: &Tensor, s: &AdamWStep) -> Result<()> {
    if s.step == 0 {
        bail!("{NAME}: steps count from 1 (bias correction divides by 1 - beta^step)");
    }
    if grad.dims() != param.dims() {
        bail!(
            "{NAME}: gradient shape {:?} differs from the parameter's {:?}",
            grad.dims(),
            param.dims()
        );
    }
    let n = param.elem_count();
    if moments.dims() != [2, n] {
        bail!(
            "{NAME}: moments have shape {:?}, expected [2, {n}] for a parameter of shape {:?}",
            moments.dims(),
            param.dims()
        );
    }
    crate::check_same_kind(NAME, ("param", param), ("grad", grad))?;
    crate::check_same_kind(NAME, ("param", param), ("moments", moments))?;
    moments.inplace_op2(grad, &Moments(*s))?;
    param.inplace_op2(moments, &Apply(*s))
}

/// (moments, g) -> moments with m, v advanced.
struct Moments(AdamWStep);

/// (param, moments) -> param advanced.
struct Apply(AdamWStep);

multiversion! {
    fn moments_block<T: Real>(m: &mut [T], v: &mut [T], g: &[T], k: &[T]) {
        // k = [b1, 1 - b1, b2, 1 - b2, grad_scale]
        for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
            let g = g * k[4];
            *m = k[0] * *m + k[1] * g;
            *v = k[2] * *v + k[3] * (g * g);
        }
    }
}

multiversion! {
    fn apply_block<T: Real>(p: &mut [T], m: &[T], v: &[T], k: &[T]) {
        // k = [1 - lr wd, lr / (1 - b1^t), 1 / (1 - b2^t), eps]
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            *p = *p * k[0] - k[1] * m / ((v * k[2]).sqrt() + k[3]);
        }
    }
}

/// The contiguous elements of a storage that a kernel updates in place.
fn slice_mut<'a, T: InPlace>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [T]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{NAME}: the {what} must be contiguous");
    };
    match T::storage_mut(s) {
        Some(v) => Ok(&mut v[a..b]),
        None => bail!("{NAME}: the {what} has an unsupported dtype"),
    }
}

/// Mutable access to a storage holding exactly this element type.
trait InPlace: Elem {
    fn storage_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

impl InPlace for f32 {
    fn storage_mut(s: &mut CpuStorage) -> Option<&mut [f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl InPlace for f64 {
    fn storage_mut(s: &mut CpuStorage) -> Option<&mut [f64]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// The constants of `moments_block`, in f64 (rounded to the working precision by the caller,
/// the same way on CPU and CUDA).
fn moments_consts(s: &AdamWStep) -> [f64; 5] {
    [s.beta1, 1.0 - s.beta1, s.beta2, 1.0 - s.beta2, s.grad_scale]
}

/// The constants of `apply_block`, in f64, as `moments_consts`.
fn apply_consts(s: &AdamWStep) -> [f64; 4] {
    let t = s.step as i32;
    [
        1.0 - s.lr * s.weight_decay,
        s.lr / (1.0 - s.beta1.powi(t)),
        1.0 / (1.0 - s.beta2.powi(t)),
        s.eps,
    ]
}

fn moments<T: InPlace>(
    s: &AdamWStep,
    st: &mut CpuStorage,
    l: &Layout,
    gs: &CpuStorage,
    gl: &Layout,
) -> Result<()> {
    let g = T::load(NAME, gs, gl)?;
    let mv = slice_mut::<T>(st, l, "moments")?;
    let (m, v) = mv.split_at_mut(g.len());
    let k = moments_consts(s).map(T::from_f64);
    let tasks: Vec<_> = m.chunks_mut(BLOCK).zip(v.chunks_mut(BLOCK)).collect();
    cpu::par_tasks(tasks, |i, (m, v)| {
        let g = &g[i * BLOCK..i * BLOCK + m.len()];
        moments_block(m, v, g, &k)
    });
    Ok(())
}

fn apply<T: InPlace>(
    s: &AdamWStep,
    ps: &mut CpuStorage,
    pl: &Layout,
    ms: &CpuStorage,
    ml: &Layout,
) -> Result<()> {
    let mv = T::load(NAME, ms, ml)?;
    let p = slice_mut::<T>(ps, pl, "parameter")?;
    let (m, v) = mv.split_at(p.len());
    let k = apply_consts(s).map(T::from_f64);
    cpu::par_tasks(p.chunks_mut(BLOCK).collect(), |i, p| {
        let r = i * BLOCK..i * BLOCK + p.len();
        apply_block(p, &m[r.clone()], &v[r], &k)
    });
    Ok(())
}

/// f32 or f64 only: an optimizer step in bf16/f16 would lose the small updates.
fn precision(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        d => bail!("{NAME}: parameters must be f32 or f64 (master weights), got {d:?}"),
    }
}

/// The `InplaceOp2` of one pass: candle's name for it, the operand whose dtype is the master
/// weights' (checked by `precision`), the CPU function and the CUDA one, and the constants
/// (`moments_consts` or `apply_consts` of the step) the CUDA pass takes.
macro_rules! pass_op {
    // The storage `s1` or `s2` names (macro hygiene: the names must come from this body).
    (@master s1, $s1:ident, $s2:ident) => { $s1 };
    (@master s2, $s1:ident, $s2:ident) => { $s2 };
    ($op:ident, $name:literal, master: $master:ident, cpu: $cpu:ident,
     cuda: $cuda:ident($consts:ident)) => {
        impl InplaceOp2 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &mut CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
            ) -> Result<()> {
                let dtype = pass_op!(@master $master, s1, s2).dtype();
                precision(dtype)?;
                cpu::by_precision!(NAME, dtype => $cpu(&self.0, s1, l1, s2, l2))
            }

            #[cfg(feature = "cuda")]
            fn cuda_fwd(
                &self,
                s1: &mut candle_core::CudaStorage,
                l1: &Layout,
                s2: &candle_core::CudaStorage,
                l2: &Layout,
            ) -> Result<()> {
                precision(pass_op!(@master $master, s1, s2).dtype())?;
                crate::cuda::$cuda(&$consts(&self.0), s1, l1, s2, l2)
            }
        }
    };
}

// Moments: the gradient (s2) sets the precision; Apply: the parameter (s1).
pass_op!(Moments, "cotyle-adamw-moments", master: s2, cpu: moments,
         cuda: adamw_moments(moments_consts));
pass_op!(Apply, "cotyle-adamw-apply", master: s1, cpu: apply, cuda: adamw_apply(apply_consts));

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// PyTorch's AdamW, written out in f64 for one parameter over `steps` steps.
    fn expected(p0: &[f64], grads: &[Vec<f64>], s: &AdamWStep) -> Vec<f64> {
        let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; p0.len()], vec![0.0; p0.len()]);
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..p.len() {
                let g = g[i] * s.grad_scale;
                m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * g;
                v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
                let mh = m[i] / (1.0 - s.beta1.powi(t));
                let vh = v[i] / (1.0 - s.beta2.powi(t));
                p[i] = p[i] * (1.0 - s.lr * s.weight_decay) - s.lr * mh / (vh.sqrt() + s.eps);
            }
        }
        p
    }

    #[test]
    fn matches_the_formula_over_steps_and_blocks() -> Result<()> {
        let dev = &Device::Cpu;
        // More elements than one block, and not a multiple of it.
        let n = BLOCK * 2 + 37;
        let p0: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).sin()).collect();
        let grads: Vec<Vec<f64>> = (0..3)
            .map(|k| {
                (0..n)
                    .map(|i| ((i * (k + 2)) as f64 * 0.11).cos())
                    .collect()
            })
            .collect();
        let base = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step: 0,
            grad_scale: 0.5,
        };
        let p = Var::from_vec(p0.clone(), n, dev)?;
        let mom = Tensor::zeros((2, n), DType::F64, dev)?;
        for (t, g) in grads.iter().enumerate() {
            let g = Tensor::from_vec(g.clone(), n, dev)?;
            let s = AdamWStep {
                step: t as u64 + 1,
                ..base
            };
            adamw_step(&p, &g, &mom, &s)?;
        }
        let got = p.flatten_all()?.to_vec1::<f64>()?;
        let want = expected(&p0, &grads, &base);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-12, "element {i}: {a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn strided_gradient_is_read_through_its_layout() -> Result<()> {
        let dev = &Device::Cpu;
        let p = Var::zeros((3, 5), DType::F32, dev)?;
        let g = Tensor::arange(0f32, 15., dev)?.reshape((5, 3))?.t()?;
        let mom = Tensor::zeros((2, 15), DType::F32, dev)?;
        let s = AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            grad_scale: 1.0,
        };
        adamw_step(&p, &g, &mom, &s)?;
        // At step 1 the update is -lr * sign(g) (up to eps): g = 0 leaves p at 0.
        let want = g.contiguous()?.sign()?.affine(-0.1, 0.)?;
        let diff = (p.as_tensor() - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "max difference {diff}");
        // m after one step is (1 - b1) g, read from row 0 of the moments.
        let m = mom.get(0)?.reshape((3, 5))?;
        let diff = (m - (g * 0.1)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_named() -> Result<()> {
        let dev = &Device::Cpu;
        let p = Var::zeros(4, DType::F32, dev)?;
        let s = AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            grad_scale: 1.0,
        };
        let g = Tensor::zeros(4, DType::F32, dev)?;
        let e = adamw_step(&p, &g, &Tensor::zeros((2, 3), DType::F32, dev)?, &s).unwrap_err();
        assert!(e.to_string().contains("expected [2, 4]"), "{e}");
        let e = adamw_step(
            &p,
            &Tensor::zeros(5, DType::F32, dev)?,
            &Tensor::zeros((2, 4), DType::F32, dev)?,
            &s,
        )
        .unwrap_err();
        assert!(e.to_string().contains("gradient shape"), "{e}");
        let e = adamw_step(
            &p,
            &g,
            &Tensor::zeros((2, 4), DType::F32, dev)?,
            &AdamWStep { step: 0, ..s },
        )
        .unwrap_err();
        assert!(e.to_string().contains("from 1"), "{e}");
        let pb = Var::zeros(4, DType::BF16, dev)?;
        let e = adamw_step(
            &pb,
            &g.to_dtype(DType::BF16)?,
            &Tensor::zeros((2, 4), DType::BF16, dev)?,
            &s,
        )
        .unwrap_err();
        assert!(e.to_string().contains("f32 or f64"), "{e}");
        Ok(())
    }
}
