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

/// The error for a dtype other than f32 and f64, before anything else is checked.
fn master(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 => Ok(()),
        d => Err(not_master(d)),
    }
}

fn not_master(d: DType) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{NAME}: parameters must be f32 or f64 (master weights), got {d:?}"
    ))
}

/// Calls `f::<T>(args)` with T the storage type of `dtype`, which `master` has accepted.
macro_rules! by_master {
    ($dtype:expr => $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            d => Err(not_master(d)),
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
    let dtype = s1.dtype();
    master(dtype)?;
    let n = l2.shape().elem_count();
    let (a, b) = range(l1, "moments")?;
    if b - a != 2 * n {
        bail!(
            "{NAME}: moments of {} elements for a gradient of {n}",
            b - a
        );
    }
    by_master!(dtype => launch("adamw_moments", k, s1, (a, b), (s2, l2), n))
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
    let dtype = s1.dtype();
    master(dtype)?;
    let (a, b) = range(l1, "parameter")?;
    let n = b - a;
    if l2.shape().elem_count() != 2 * n {
        bail!(
            "{NAME}: moments of {} elements for a parameter of {n}",
            l2.shape().elem_count()
        );
    }
    by_master!(dtype => launch("adamw_apply", k, s1, (a, b), (s2, l2), n))
}

/// Kernel `root` of adamw.cu over n elements, with the arguments (s1[a..b] in place, the
/// other operand dense, n, then k rounded to T): the sizes are the caller's to check, as the
/// kernel's signature is. No launch when n = 0.
fn launch<T: Master>(
    root: &str,
    k: &[f64],
    s1: &mut CudaStorage,
    (a, b): (usize, usize),
    (s2, l2): (&CudaStorage, &Layout),
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let dev = s1.device().clone();
    let other = dense::<T>(s2, l2)?;
    let other = other.view()?;
    let mut inplace = s1.as_cuda_slice_mut::<T>()?.slice_mut(a..b);
    let k: Vec<T> = k.iter().map(|&c| T::from_f64(c)).collect();
    let n64 = n as u64;
    let func = nvrtc::function(&dev, nvrtc::ADAMW, &kernel::<T>(root))?;
    let mut bld = func.builder();
    bld.arg(&mut inplace).arg(&other).arg(&n64);
    for c in &k {
        bld.arg(c);
    }
    // SAFETY: matches `adamw_moments_*` and `adamw_apply_*` in adamw.cu, with the sizes the
    // callers check (moments: 2n in place, g n; apply: p n in place, moments 2n).
    unsafe { bld.launch(elems_config(n)) }.w()?;
    Ok(())
}
