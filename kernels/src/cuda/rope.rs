//! CUDA rotary embedding, both pair layouts, and its transpose (the backward)
//! (`kernels/cuda/rope.cu`; the formulas are in `crate::rope`). x, cos and sin are read through
//! their layouts' strides: no copy for transposed or narrowed views.

use super::{by_dtype, empty, kernel, nvrtc, output, wrap, Float};
use crate::cpu::expect_dims;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, Layout, Result, Shape};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

const NAME: &str = "rope";

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// `RopeArgs` of rope.cu: shapes, start offsets and strides in elements.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RopeArgs {
    b: u64,
    h: u64,
    t: u64,
    d: u64,
    x_off: u64,
    x_sb: u64,
    x_sh: u64,
    x_st: u64,
    x_sd: u64,
    c_off: u64,
    c_st: u64,
    c_si: u64,
    s_off: u64,
    s_st: u64,
    s_si: u64,
}

// SAFETY: plain old data with the C layout of `RopeArgs` in rope.cu (15 unsigned long long).
unsafe impl DeviceRepr for RopeArgs {}

/// x: (B, H, T, D), cos, sin: (T, D/2) -> (B, H, T, D) rotated pairwise (`interleaved`: pairs
/// (2i, 2i+1), else (i, i + D/2)); `transpose` rotates by -sin.
pub(crate) fn rope(
    x: Arg,
    cos: Arg,
    sin: Arg,
    interleaved: bool,
    transpose: bool,
) -> Result<(CudaStorage, Shape)> {
    let &[_, _, t, d] = x.1.dims() else {
        bail!("{NAME}: x must be (B, H, T, D), got shape {:?}", x.1.dims());
    };
    if d % 2 != 0 {
        bail!("{NAME}: x has shape {:?}; D must be even", x.1.dims());
    }
    expect_dims(NAME, "cos", cos.1, &[t, d / 2])?;
    expect_dims(NAME, "sin", sin.1, &[t, d / 2])?;
    by_dtype!(NAME, x.0.dtype() => rope_t(x, cos, sin, interleaved, transpose))
}

fn rope_t<T: Float>(
    (sx, lx): Arg,
    (sc, lc): Arg,
    (ss, ls): Arg,
    interleaved: bool,
    transpose: bool,
) -> Result<(CudaStorage, Shape)> {
    let dev = sx.device();
    let n = lx.shape().elem_count();
    if n == 0 {
        return Ok((empty(dev, lx.shape(), sx.dtype())?, lx.shape().clone()));
    }
    let (dims, xs, cs, ss_) = (lx.dims(), lx.stride(), lc.stride(), ls.stride());
    let rows = dims[0] * dims[1] * dims[2];
    let u = |v: usize| v as u64;
    let args = RopeArgs {
        b: u(dims[0]),
        h: u(dims[1]),
        t: u(dims[2]),
        d: u(dims[3]),
        x_off: u(lx.start_offset()),
        x_sb: u(xs[0]),
        x_sh: u(xs[1]),
        x_st: u(xs[2]),
        x_sd: u(xs[3]),
        c_off: u(lc.start_offset()),
        c_st: u(cs[0]),
        c_si: u(cs[1]),
        s_off: u(ls.start_offset()),
        s_st: u(ss_[0]),
        s_si: u(ss_[1]),
    };
    // Threads along the D/2 pairs of a row, and rows per block to make 256 threads.
    let tx = (dims[3] / 2).next_power_of_two().clamp(32, 256);
    let ty = 256 / tx;
    if rows > u32::MAX as usize || rows.div_ceil(ty) > i32::MAX as usize {
        bail!("{NAME}: x {dims:?} has too many rows of D for one CUDA launch");
    }
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(ty) as u32, 1, 1),
        block_dim: (tx as u32, ty as u32, 1),
        shared_mem_bytes: 0,
    };
    let (x, c, s) = (
        sx.as_cuda_slice::<T>()?,
        sc.as_cuda_slice::<T>()?,
        ss.as_cuda_slice::<T>()?,
    );
    let mut y = output::<T>(dev, n)?;
    let (il, tr) = (i32::from(interleaved), i32::from(transpose));
    let func = nvrtc::function(dev, nvrtc::ROPE, &kernel::<T>("rope"))?;
    let mut b = func.builder();
    b.arg(x)
        .arg(c)
        .arg(s)
        .arg(&mut y)
        .arg(&args)
        .arg(&il)
        .arg(&tr);
    // SAFETY: matches `rope_*` in rope.cu; the layouts' offsets and strides address elements
    // inside their storages (candle guarantees it), y holds n.
    unsafe { b.launch(cfg) }.w()?;
    Ok(wrap(dev, y, lx.shape()))
}
