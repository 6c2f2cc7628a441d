//! CUDA SiLU, GELU (tanh) and SwiGLU with their backward ops (`kernels/cuda/activation.cu`;
//! the formulas are in `crate::activation`): elementwise, any rank, grid-stride loops.

use super::{by_dtype, dense, elems_config, empty, kernel, nvrtc, output, wrap, Float};
use crate::cpu::expect_dims;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};
use cudarc::driver::PushKernelArg;

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// act(x), any shape: SiLU, or GELU (tanh) when `gelu`. `name` names the op in errors.
pub(crate) fn silu_gelu(name: &str, gelu: bool, x: Arg) -> Result<(CudaStorage, Shape)> {
    by_dtype!(name, x.0.dtype() => unary(gelu, x))
}

fn unary<T: Float>(gelu: bool, (s, l): Arg) -> Result<(CudaStorage, Shape)> {
    let dev = s.device();
    let n = l.shape().elem_count();
    if n == 0 {
        return Ok((empty(dev, l.shape(), s.dtype())?, l.shape().clone()));
    }
    let x = dense::<T>(s, l)?;
    let x = x.view()?;
    let mut y = output::<T>(dev, n)?;
    let (n64, act) = (n as u64, i32::from(gelu));
    let func = nvrtc::function(dev, nvrtc::ACTIVATION, &kernel::<T>("silu_gelu"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&mut y).arg(&n64).arg(&act);
    // SAFETY: matches `silu_gelu_*` in activation.cu; x and y hold n.
    unsafe { b.launch(elems_config(n)) }.w()?;
    Ok(wrap(dev, y, l.shape()))
}

/// (x, dy) -> dx = dy * act'(x), all one shape.
pub(crate) fn silu_gelu_grad(
    name: &str,
    gelu: bool,
    x: Arg,
    dy: Arg,
) -> Result<(CudaStorage, Shape)> {
    expect_dims(name, "the output gradient", dy.1, x.1.dims())?;
    by_dtype!(name, x.0.dtype() => unary_grad(gelu, x, dy))
}

fn unary_grad<T: Float>(gelu: bool, (s1, l1): Arg, (s2, l2): Arg) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let n = l1.shape().elem_count();
    if n == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let (x, dy) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (x, dy) = (x.view()?, dy.view()?);
    let mut dx = output::<T>(dev, n)?;
    let (n64, act) = (n as u64, i32::from(gelu));
    let func = nvrtc::function(dev, nvrtc::ACTIVATION, &kernel::<T>("silu_gelu_grad"))?;
    let mut b = func.builder();
    b.arg(&x).arg(&dy).arg(&mut dx).arg(&n64).arg(&act);
    // SAFETY: matches `silu_gelu_grad_*` in activation.cu; all hold n.
    unsafe { b.launch(elems_config(n)) }.w()?;
    Ok(wrap(dev, dx, l1.shape()))
}

const SWIGLU: &str = "swiglu";

/// (gate, up) -> silu(gate) * up, one shape.
pub(crate) fn swiglu(gate: Arg, up: Arg) -> Result<(CudaStorage, Shape)> {
    expect_dims(SWIGLU, "up", up.1, gate.1.dims())?;
    by_dtype!(SWIGLU, gate.0.dtype() => swiglu_t(gate, up))
}

fn swiglu_t<T: Float>((s1, l1): Arg, (s2, l2): Arg) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let n = l1.shape().elem_count();
    if n == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let (g, u) = (dense::<T>(s1, l1)?, dense::<T>(s2, l2)?);
    let (g, u) = (g.view()?, u.view()?);
    let mut y = output::<T>(dev, n)?;
    let n64 = n as u64;
    let func = nvrtc::function(dev, nvrtc::ACTIVATION, &kernel::<T>("swiglu"))?;
    let mut b = func.builder();
    b.arg(&g).arg(&u).arg(&mut y).arg(&n64);
    // SAFETY: matches `swiglu_*` in activation.cu; all hold n.
    unsafe { b.launch(elems_config(n)) }.w()?;
    Ok(wrap(dev, y, l1.shape()))
}

/// (gate, up, dy) -> d gate = dy * up * silu'(gate), one shape.
pub(crate) fn swiglu_dgate(gate: Arg, up: Arg, dy: Arg) -> Result<(CudaStorage, Shape)> {
    expect_dims(SWIGLU, "up", up.1, gate.1.dims())?;
    expect_dims(SWIGLU, "the output gradient", dy.1, gate.1.dims())?;
    by_dtype!(SWIGLU, gate.0.dtype() => swiglu_dgate_t(gate, up, dy))
}

fn swiglu_dgate_t<T: Float>(
    (s1, l1): Arg,
    (s2, l2): Arg,
    (s3, l3): Arg,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device();
    let n = l1.shape().elem_count();
    if n == 0 {
        return Ok((empty(dev, l1.shape(), s1.dtype())?, l1.shape().clone()));
    }
    let (g, u, dy) = (
        dense::<T>(s1, l1)?,
        dense::<T>(s2, l2)?,
        dense::<T>(s3, l3)?,
    );
    let (g, u, dy) = (g.view()?, u.view()?, dy.view()?);
    let mut dx = output::<T>(dev, n)?;
    let n64 = n as u64;
    let func = nvrtc::function(dev, nvrtc::ACTIVATION, &kernel::<T>("swiglu_dgate"))?;
    let mut b = func.builder();
    b.arg(&g).arg(&u).arg(&dy).arg(&mut dx).arg(&n64);
    // SAFETY: matches `swiglu_dgate_*` in activation.cu; all hold n.
    unsafe { b.launch(elems_config(n)) }.w()?;
    Ok(wrap(dev, dx, l1.shape()))
}
