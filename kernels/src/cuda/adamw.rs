//! CUDA AdamW (`kernels/cuda/adamw.cu`; the formula is in `crate::adamw`): the two in-place
//! passes, elementwise, f32 and f64, with the CPU path's constants and its order of
//! operations, unfused, so the results match the CPU path bit for bit.

use super::{dense, elems_config, kernel, nvrtc};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaStorage, DType, Layout, Result, WithDType};
use cudarc::driver::{DeviceRepr, PushKernelArg};

const NAME: &str = "adamw";

/// The storage types the update runs in (the caller has already rejected the others).
trait Master: CudaDType + DeviceRepr + WithDType {}
impl Master for f32 {}
impl Master for f64 {}

macro_rules! by_master {
    ($dtype:expr => $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            d => bail!("{NAME}: parameters must be f32 or f64 (master weights), got {d:?}"),
        }
    };
}

/// The contiguous range of `l` in its storage, or an error naming `what`.
fn range(l: &Layout, what: &str) -> Result<(usize, usize)> {
    match l.contiguous_offsets() {
        Some(r) => Ok(r),
        None => bail!("{NAME}: the {what} must be contiguous"),
    }
}

/// moments (2, N) in place, with the gradient g (N, any strides); k as `crate::adamw`
/// computes it for the CPU: [b1, 1 - b1, b2, 1 - b2, grad_scale].
pub(crate) fn adamw_moments(
    k: &[f64; 5],
    s1: &mut CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<()> {
    by_master!(s1.dtype() => moments(k, s1, l1, s2, l2))
}

fn moments<T: Master>(
    k: &[f64; 5],
    s1: &mut CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<()> {
    let n = l2.shape().elem_count();
    let (a, b) = range(l1, "moments")?;
    if b - a != 2 * n {
        bail!(
            "{NAME}: moments of {} elements for a gradient of {n}",
            b - a
        );
    }
    if n == 0 {
        return Ok(());
    }
    let dev = s1.device().clone();
    let g = dense::<T>(s2, l2)?;
    let g = g.view()?;
    let mut mv = s1.as_cuda_slice_mut::<T>()?.slice_mut(a..b);
    let k = k.map(T::from_f64);
    let n64 = n as u64;
    let func = nvrtc::function(&dev, nvrtc::ADAMW, &kernel::<T>("adamw_moments"))?;
    let mut bld = func.builder();
    bld.arg(&mut mv).arg(&g).arg(&n64);
    bld.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]).arg(&k[4]);
    // SAFETY: matches `adamw_moments_*` in adamw.cu; mv holds 2n, g holds n.
    unsafe { bld.launch(elems_config(n)) }.w()?;
    Ok(())
}

/// The parameter (N, contiguous) in place, with its moments (2, N); k as `crate::adamw`
/// computes it for the CPU: [1 - lr wd, lr / (1 - b1^t), 1 / (1 - b2^t), eps].
pub(crate) fn adamw_apply(
    k: &[f64; 4],
    s1: &mut CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<()> {
    by_master!(s1.dtype() => apply(k, s1, l1, s2, l2))
}

fn apply<T: Master>(
    k: &[f64; 4],
    s1: &mut CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<()> {
    let (a, b) = range(l1, "parameter")?;
    let n = b - a;
    if l2.shape().elem_count() != 2 * n {
        bail!(
            "{NAME}: moments of {} elements for a parameter of {n}",
            l2.shape().elem_count()
        );
    }
    if n == 0 {
        return Ok(());
    }
    let dev = s1.device().clone();
    let mv = dense::<T>(s2, l2)?;
    let mv = mv.view()?;
    let mut p = s1.as_cuda_slice_mut::<T>()?.slice_mut(a..b);
    let k = k.map(T::from_f64);
    let n64 = n as u64;
    let func = nvrtc::function(&dev, nvrtc::ADAMW, &kernel::<T>("adamw_apply"))?;
    let mut bld = func.builder();
    bld.arg(&mut p).arg(&mv).arg(&n64);
    bld.arg(&k[0]).arg(&k[1]).arg(&k[2]).arg(&k[3]);
    // SAFETY: matches `adamw_apply_*` in adamw.cu; p holds n, mv holds 2n.
    unsafe { bld.launch(elems_config(n)) }.w()?;
    Ok(())
}
