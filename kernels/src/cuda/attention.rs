//! CUDA attention and its backward (`kernels/cuda/attention.cu`; the method is in
//! `crate::attention`): a flash-attention-2 style forward that also returns L (the log-sum-exp
//! per query row, kept by the op for the backward, as on the CPU), and a backward of three
//! launches: Dl = rowsum(dO * o), dq per query block, dk and dv per key block (each recomputes
//! P from L; every output element has one writer, so no float atomics and identical results
//! run to run). Head widths up to 128.
//!
//! Shared memory per block, in elements of the working precision: forward 80 D + 544, dq
//! 96 D + 576, dk/dv 128 D + 2176. Past 48 KiB a kernel opts in (`Kernel::allow_shared`); at
//! D = 128 the dk/dv kernel takes 72.5 KiB in f32 (any GPU since Volta but Turing's 64 KiB) and
//! 145 KiB in f64 (A100, H100; elsewhere an error naming the sizes).
//!
//! `attention_packed` (qkv (B, T, (H + 2 Hkv) D) -> (B, T, H D)) runs the same kernels: q, k
//! and v are strided views of qkv, compacted as any strided input is (q and k rotated into
//! dense copies by the rope kernel instead when the op has RoPE); o goes back to token order
//! by one strided copy, and dq, dk (rotated back), dv into dqkv by a strided copy and a 2D
//! copy each, all candle's own copy kernels.

use super::{by_dtype, dense, empty, kernel, nvrtc, output, u32_arg, Dense, Float};
use crate::attention::Dims;
use crate::cpu::expect_dims;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::{CudaDType, CudaDevice, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use std::ops::Deref;

const NAME: &str = "attention";

/// Threads per block and the tiles of attention.cu (ATT_*): 16 query rows per forward and dq
/// block, key tiles of 32; 32 keys per dk/dv block, query tiles of 32; D <= 32 * 4.
const THREADS: u32 = 128;
const BQ: usize = 16;
const BK: usize = 32;
const BKB: usize = 32;
const TQ: usize = 32;
const MAX_D: usize = 128;
/// attention_delta: one warp per row, 8 rows per block.
const DELTA_ROWS: usize = 8;

type Arg<'a> = (&'a CudaStorage, &'a Layout);

/// What the op knows besides q, k, v: the sizes (checked against the layouts here), the
/// options, and the mask as `attention.rs` keeps it (the working precision's dtype, dims
/// (mb, mh, mq, Tk), each of mb, mh, mq 1 or full).
pub(crate) struct Params<'a> {
    pub dims: Dims,
    pub causal: bool,
    pub scale: f64,
    pub mask: Option<(&'a Tensor, [usize; 4])>,
}

/// The forward's output and the op's saved tensors, for the backward.
pub(crate) struct Saved<'a> {
    pub o: &'a Tensor,
    pub d_o: &'a Tensor,
    pub lse: &'a Tensor,
}

/// `AttShape` of attention.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct AttShape {
    h: u32,
    hkv: u32,
    tq: u32,
    tk: u32,
    d: u32,
    mb: u32,
    mh: u32,
    mq: u32,
    causal: i32,
    has_mask: i32,
}

// SAFETY: ten 4-byte integers, no padding: the layout of `AttShape` in attention.cu, passed by
// value as a kernel parameter.
unsafe impl DeviceRepr for AttShape {}

/// Shared memory (elements of the working precision) of each kernel for head width d; the
/// same sums as the `att_need_smem` calls in attention.cu, which stop a kernel given less.
fn fwd_smem(d: usize) -> usize {
    BQ * d + BK * (d + 1) + BK * d + BQ * BK
}
fn dq_smem(d: usize) -> usize {
    2 * BQ * d + 2 * BK * (d + 1) + BQ * BK
}
fn dkdv_smem(d: usize) -> usize {
    2 * BKB * d + 2 * TQ * (d + 1) + 2 * BKB * TQ + 2 * TQ
}

/// The storage of a tensor that is not an argument of the op (mask, o, dO, L), on the GPU.
fn on_gpu<'a>(s: &'a Storage, what: &str) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(s) => Ok(s),
        _ => bail!("{NAME}: {what} is not on the GPU"),
    }
}

impl Params<'_> {
    /// The kernels' `AttShape`; errors for sizes the kernels do not take.
    fn shape(&self) -> Result<AttShape> {
        let Dims {
            b,
            h,
            hkv,
            tq,
            tk,
            d,
        } = self.dims;
        if d > MAX_D {
            bail!(
                "{NAME}: head width D = {d} is not supported on CUDA (at most {MAX_D}); the CPU \
                 path takes any D"
            );
        }
        // Grid limits: (B * H or B * Hkv) along x, blocks of rows or keys along y.
        if b * h > i32::MAX as usize || tq.div_ceil(BQ) > 65_535 || tk.div_ceil(BKB) > 65_535 {
            bail!(
                "{NAME}: too large for one CUDA launch (B * H = {}, Tq = {tq}, Tk = {tk}; at most \
                 2^31 - 1, {} and {})",
                b * h,
                65_535 * BQ,
                65_535 * BKB
            );
        }
        let [mb, mh, mq] = match self.mask {
            Some((_, md)) => [md[0], md[1], md[2]],
            None => [1; 3],
        };
        Ok(AttShape {
            h: h as u32,
            hkv: hkv as u32,
            tq: u32_arg(NAME, "Tq", tq)?,
            tk: u32_arg(NAME, "Tk", tk)?,
            d: d as u32,
            mb: mb as u32,
            mh: mh as u32,
            mq: mq as u32,
            causal: i32::from(self.causal),
            has_mask: i32::from(self.mask.is_some()),
        })
    }

    /// Errors unless q, k, v have the checked shapes.
    fn expect_qkv(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<()> {
        let Dims {
            b,
            h,
            hkv,
            tq,
            tk,
            d,
        } = self.dims;
        expect_dims(NAME, "q", q, &[b, h, tq, d])?;
        expect_dims(NAME, "k", k, &[b, hkv, tk, d])?;
        expect_dims(NAME, "v", v, &[b, hkv, tk, d])
    }
}

/// The mask, if any, as a dense buffer of the working precision W (`attention.rs` converts
/// it), from `held`: `Params::mask` with its storage held for the launch.
fn mask_dense<'a, W: CudaDType + WithDType>(
    held: &'a Option<((impl Deref<Target = Storage>, &Layout), [usize; 4])>,
) -> Result<Option<Dense<'a, W>>> {
    let Some(((s, l), md)) = held else {
        return Ok(None);
    };
    let s = on_gpu(s, "the mask")?;
    if s.dtype() != W::DTYPE {
        bail!(
            "{NAME}: the CUDA kernels read the mask as {:?}, got {:?}",
            W::DTYPE,
            s.dtype()
        );
    }
    expect_dims(NAME, "the mask", l, md)?;
    dense::<W>(s, l).map(Some)
}

/// A launch of `blocks` blocks of attention.cu's block size with `smem` elements of W of
/// dynamic shared memory, after the opt-in it may need (an error naming the sizes past the
/// device's limit).
fn config<W>(
    func: &nvrtc::Kernel,
    blocks: (u32, u32),
    smem: usize,
    d: usize,
) -> Result<LaunchConfig> {
    let bytes = smem * std::mem::size_of::<W>();
    func.allow_shared(
        &format!("{NAME} (D = {d}, {}-byte floats)", std::mem::size_of::<W>()),
        bytes,
    )?;
    Ok(LaunchConfig {
        grid_dim: (blocks.0, blocks.1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: bytes as u32,
    })
}

/// L = -inf everywhere: the forward of an empty key set (or of D = 0, as the CPU path).
fn neg_inf(dev: &CudaDevice, shape: &Shape, w: candle_core::DType) -> Result<CudaStorage> {
    let z = empty(dev, shape, w)?;
    if shape.elem_count() == 0 {
        return Ok(z); // (candle's affine would launch an empty grid)
    }
    z.affine(&Layout::contiguous(shape), 1.0, f64::NEG_INFINITY)
}

/// (q (B, H, Tq, D), k, v (B, Hkv, Tk, D)) -> (o (B, H, Tq, D), L (B, H, Tq) in the working
/// precision, a tensor on the GPU for the op to keep).
pub(crate) fn attention(p: &Params, q: Arg, k: Arg, v: Arg) -> Result<(CudaStorage, Tensor)> {
    p.expect_qkv(q.1, k.1, v.1)?;
    by_dtype!(NAME, q.0.dtype() => fwd(p, q, k, v))
}

fn fwd<T: Float>(
    p: &Params,
    (qs, ql): Arg,
    (ks, kl): Arg,
    (vs, vl): Arg,
) -> Result<(CudaStorage, Tensor)> {
    let dev = qs.device();
    let Dims {
        b, h, tq, tk, d, ..
    } = p.dims;
    let lse_shape = Shape::from_dims(&[b, h, tq]);
    let keep = |s: CudaStorage| {
        Tensor::from_storage(
            Storage::Cuda(s),
            lse_shape.clone(),
            BackpropOp::none(),
            false,
        )
    };
    let nq = b * h * tq * d;
    if nq == 0 || tk == 0 {
        // No output, or no key: o = 0 and L = -inf, as the CPU path (no launch on empty buffers).
        let o = empty(dev, ql.shape(), qs.dtype())?;
        let lse = neg_inf(dev, &lse_shape, <T::Work as WithDType>::DTYPE)?;
        return Ok((o, keep(lse)));
    }
    let shape = p.shape()?;
    let (q, k, v) = (
        dense::<T>(qs, ql)?,
        dense::<T>(ks, kl)?,
        dense::<T>(vs, vl)?,
    );
    let (q, k, v) = (q.view()?, k.view()?, v.view()?);
    let mask_guard = p.mask.map(|(t, md)| (t.storage_and_layout(), md));
    let mask = mask_dense::<T::Work>(&mask_guard)?;
    let mask = mask.as_ref().map(Dense::view).transpose()?;
    let mut o = output::<T>(dev, nq)?;
    let mut lse = output::<T::Work>(dev, b * h * tq)?;
    let func = nvrtc::function(dev, nvrtc::ATTENTION, &kernel::<T>("attention_fwd"))?;
    let blocks = ((b * h) as u32, tq.div_ceil(BQ) as u32);
    let cfg = config::<T::Work>(&func, blocks, fwd_smem(d), d)?;
    let mut bld = func.builder();
    bld.arg(&q).arg(&k).arg(&v);
    // Without a mask the kernel never reads its mask pointer; q stands in.
    match &mask {
        Some(m) => bld.arg(m),
        None => bld.arg(&q),
    };
    bld.arg(&mut o).arg(&mut lse).arg(&shape).arg(&p.scale);
    // SAFETY: matches `attention_fwd_*` in attention.cu; q, o hold B H Tq D, k, v hold
    // B Hkv Tk D, lse holds B H Tq, the mask (read only with has_mask) its (mb, mh, mq, Tk).
    unsafe { bld.launch(cfg) }.w()?;
    let o = CudaStorage::wrap_cuda_slice(o, dev.clone());
    let lse = CudaStorage::wrap_cuda_slice(lse, dev.clone());
    Ok((o, keep(lse)))
}

/// (q, k, v) with the forward's `saved` -> (dq, dk, dv) flattened and concatenated, as the CPU
/// backward op returns them.
pub(crate) fn attention_bwd(
    p: &Params,
    q: Arg,
    k: Arg,
    v: Arg,
    saved: &Saved,
) -> Result<(CudaStorage, Shape)> {
    p.expect_qkv(q.1, k.1, v.1)?;
    by_dtype!(NAME, q.0.dtype() => bwd(p, q, k, v, saved))
}

fn bwd<T: Float>(
    p: &Params,
    (qs, ql): Arg,
    (ks, kl): Arg,
    (vs, vl): Arg,
    saved: &Saved,
) -> Result<(CudaStorage, Shape)> {
    let dev = qs.device();
    let Dims {
        b,
        h,
        hkv,
        tq,
        tk,
        d,
    } = p.dims;
    let (nq, nkv) = (b * h * tq * d, b * hkv * tk * d);
    let out_shape = Shape::from_dims(&[nq + 2 * nkv]);
    if nq == 0 || nkv == 0 {
        // As the CPU path: all gradients zero (no launch on empty buffers).
        return Ok((empty(dev, &out_shape, qs.dtype())?, out_shape));
    }
    let shape = p.shape()?;
    let (og, ol) = saved.o.storage_and_layout();
    let (dg, dl) = saved.d_o.storage_and_layout();
    let (lg, ll) = saved.lse.storage_and_layout();
    expect_dims(NAME, "the output", ol, &[b, h, tq, d])?;
    expect_dims(NAME, "the output gradient", dl, &[b, h, tq, d])?;
    expect_dims(NAME, "the saved log-sum-exp", ll, &[b, h, tq])?;
    let (q, k, v) = (
        dense::<T>(qs, ql)?,
        dense::<T>(ks, kl)?,
        dense::<T>(vs, vl)?,
    );
    let (q, k, v) = (q.view()?, k.view()?, v.view()?);
    let o = dense::<T>(on_gpu(&og, "the output")?, ol)?;
    let d_o = dense::<T>(on_gpu(&dg, "the output gradient")?, dl)?;
    let lse = dense::<T::Work>(on_gpu(&lg, "the saved log-sum-exp")?, ll)?;
    let (o, d_o, lse) = (o.view()?, d_o.view()?, lse.view()?);
    let mask_guard = p.mask.map(|(t, md)| (t.storage_and_layout(), md));
    let mask = mask_dense::<T::Work>(&mask_guard)?;
    let mask = mask.as_ref().map(Dense::view).transpose()?;

    // Dl = rowsum(dO * o), shared by both gradient kernels.
    let rows = b * h * tq;
    let mut delta = output::<T::Work>(dev, rows)?;
    {
        let func = nvrtc::function(dev, nvrtc::ATTENTION, &kernel::<T>("attention_delta"))?;
        let blocks = u32_arg(NAME, "B * H * Tq / 8", rows.div_ceil(DELTA_ROWS))?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (32 * DELTA_ROWS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows64, d32) = (rows as u64, d as u32);
        let mut bld = func.builder();
        bld.arg(&o).arg(&d_o).arg(&mut delta).arg(&rows64).arg(&d32);
        // SAFETY: matches `attention_delta_*`; o and d_o hold rows * d, delta holds rows.
        unsafe { bld.launch(cfg) }.w()?;
    }
    let mut out = output::<T>(dev, nq + 2 * nkv)?;
    {
        let (mut dq, mut rest) = out.split_at_mut(nq);
        let (mut dk, mut dv) = rest.split_at_mut(nkv);
        let func = nvrtc::function(dev, nvrtc::ATTENTION, &kernel::<T>("attention_dq"))?;
        let blocks = ((b * h) as u32, tq.div_ceil(BQ) as u32);
        let cfg = config::<T::Work>(&func, blocks, dq_smem(d), d)?;
        let mut bld = func.builder();
        bld.arg(&q).arg(&k).arg(&v).arg(&d_o).arg(&lse).arg(&delta);
        match &mask {
            Some(m) => bld.arg(m),
            None => bld.arg(&q),
        };
        bld.arg(&mut dq).arg(&shape).arg(&p.scale);
        // SAFETY: matches `attention_dq_*`; q, d_o, dq hold B H Tq D, k, v hold B Hkv Tk D,
        // lse and delta hold B H Tq, the mask (read only with has_mask) its (mb, mh, mq, Tk).
        unsafe { bld.launch(cfg) }.w()?;

        let func = nvrtc::function(dev, nvrtc::ATTENTION, &kernel::<T>("attention_dkdv"))?;
        let blocks = ((b * hkv) as u32, tk.div_ceil(BKB) as u32);
        let cfg = config::<T::Work>(&func, blocks, dkdv_smem(d), d)?;
        let mut bld = func.builder();
        bld.arg(&q).arg(&k).arg(&v).arg(&d_o).arg(&lse).arg(&delta);
        match &mask {
            Some(m) => bld.arg(m),
            None => bld.arg(&q),
        };
        bld.arg(&mut dk).arg(&mut dv).arg(&shape).arg(&p.scale);
        // SAFETY: matches `attention_dkdv_*`; as above, with dk and dv of B Hkv Tk D each
        // (disjoint parts of `out`).
        unsafe { bld.launch(cfg) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), out_shape))
}

/// `attention_packed`'s RoPE: cos, sin (T, D/2) and whether pairs are interleaved.
pub(crate) type PackedRope<'a> = (&'a Tensor, &'a Tensor, bool);

/// Heads h0..h0 + n of x (B, T, W) seen through its layout `l` (any strides) as (B, n, T, D).
fn heads_view(l: &Layout, h0: usize, n: usize, d: usize) -> Layout {
    let (dims, st) = (l.dims(), l.stride());
    Layout::new(
        Shape::from_dims(&[dims[0], n, dims[1], d]),
        vec![st[0], d * st[2], st[1], st[2]],
        l.start_offset() + h0 * d * st[2],
    )
}

/// Heads as the kernels take them: a view of qkv or of the gradients, or a rotated copy.
enum Heads<'a> {
    View(&'a CudaStorage, Layout),
    Rotated(CudaStorage, Layout),
}

impl Heads<'_> {
    fn arg(&self) -> Arg<'_> {
        match self {
            Heads::View(s, l) => (s, l),
            Heads::Rotated(s, l) => (s, l),
        }
    }

    /// These n heads as a part for `merge`: (storage, start offset, n). The layout is dense.
    fn part(&self, n: usize) -> (&CudaStorage, usize, usize) {
        let (s, l) = self.arg();
        (s, l.start_offset(), n)
    }
}

/// x seen through `view` (B, n, T, D): rotated by `rope` into a dense copy (rotated back, by
/// -sin, when `back`), or the view itself without RoPE.
fn rotated<'a>(
    x: &'a CudaStorage,
    view: Layout,
    rope: Option<PackedRope>,
    back: bool,
) -> Result<Heads<'a>> {
    let Some((cos, sin, interleaved)) = rope else {
        return Ok(Heads::View(x, view));
    };
    let (cg, cl) = cos.storage_and_layout();
    let (sg, sl) = sin.storage_and_layout();
    let (cos, sin) = ((on_gpu(&cg, "cos")?, cl), (on_gpu(&sg, "sin")?, sl));
    let (y, shape) = super::rope((x, &view), cos, sin, interleaved, back)?;
    Ok(Heads::Rotated(y, Layout::contiguous(shape)))
}

/// (B, T, W) from `parts`, each (storage, start offset, n): the n heads of a dense
/// (B, n, T, D) buffer; per token the parts' head rows side by side. Each part goes to token
/// order (B, T, n D) by candle's strided copy, then into its columns by a 2D copy (a lone part
/// needs only the first).
fn merge(
    dev: &CudaDevice,
    dtype: DType,
    parts: &[(&CudaStorage, usize, usize)],
    (b, t, d): (usize, usize, usize),
) -> Result<CudaStorage> {
    let w: usize = parts.iter().map(|p| p.2 * d).sum();
    let shape = Shape::from_dims(&[b, t, w]);
    if shape.elem_count() == 0 {
        return empty(dev, &shape, dtype);
    }
    let tokens_first =
        |off: usize, n: usize| Layout::contiguous_with_offset((b, n, t, d), off).transpose(1, 2);
    // SAFETY: every element is written below: the parts' columns cover each row.
    let mut out = unsafe { dev.alloc_uninit(&shape, dtype)? };
    if let [(s, off, n)] = parts {
        s.copy_strided_src(&mut out, 0, &tokens_first(*off, *n)?)?;
        return Ok(out);
    }
    // SAFETY: each part's range is written by its strided copy before the 2D copy reads it.
    let mut tmp = unsafe { dev.alloc_uninit(&shape, dtype)? };
    let (mut at, mut col) = (0, 0);
    for &(s, off, n) in parts {
        s.copy_strided_src(&mut tmp, at, &tokens_first(off, n)?)?;
        tmp.copy2d(&mut out, b * t, n * d, n * d, w, at, col)?;
        at += b * t * n * d;
        col += n * d;
    }
    Ok(out)
}

/// q, k (rotated when the op has RoPE) and v (a view) of qkv (B, T, (H + 2 Hkv) D), as
/// (B, n, T, D) heads.
fn packed_qkv<'a>(
    p: &Params,
    rope: Option<PackedRope>,
    (s, l): Arg<'a>,
) -> Result<(Heads<'a>, Heads<'a>, Layout)> {
    let Dims {
        b, h, hkv, tq, d, ..
    } = p.dims;
    expect_dims(NAME, "qkv", l, &[b, tq, (h + 2 * hkv) * d])?;
    let q = rotated(s, heads_view(l, 0, h, d), rope, false)?;
    let k = rotated(s, heads_view(l, h, hkv, d), rope, false)?;
    Ok((q, k, heads_view(l, h + hkv, hkv, d)))
}

/// `attention_packed`: qkv (B, T, (H + 2 Hkv) D) -> (o (B, T, H D), L (B, H, T) as
/// `attention` keeps it).
pub(crate) fn attention_packed(
    p: &Params,
    rope: Option<PackedRope>,
    (s, l): Arg,
) -> Result<(CudaStorage, Tensor)> {
    let Dims { b, h, tq, d, .. } = p.dims;
    let (q, k, v) = packed_qkv(p, rope, (s, l))?;
    let (o, lse) = attention(p, q.arg(), k.arg(), (s, &v))?;
    let o = merge(s.device(), s.dtype(), &[(&o, 0, h)], (b, tq, d))?;
    Ok((o, lse))
}

/// `attention_packed`'s backward: dqkv (B, T, (H + 2 Hkv) D) from qkv and `saved` (o and dO
/// as (B, H, T, D) views); dq and dk rotated back when the op has RoPE.
pub(crate) fn attention_packed_bwd(
    p: &Params,
    rope: Option<PackedRope>,
    (s, l): Arg,
    saved: &Saved,
) -> Result<CudaStorage> {
    let Dims {
        b, h, hkv, tq, d, ..
    } = p.dims;
    let (q, k, v) = packed_qkv(p, rope, (s, l))?;
    let (g, _) = attention_bwd(p, q.arg(), k.arg(), (s, &v), saved)?;
    let (nq, nkv) = (b * h * tq * d, b * hkv * tq * d);
    let dq = rotated(&g, Layout::contiguous((b, h, tq, d)), rope, true)?;
    let dk = rotated(
        &g,
        Layout::contiguous_with_offset((b, hkv, tq, d), nq),
        rope,
        true,
    )?;
    let parts = [dq.part(h), dk.part(hkv), (&g, nq + nkv, hkv)];
    merge(s.device(), s.dtype(), &parts, (b, tq, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_fits_the_default_for_common_widths() {
        // f32 up to D = 64 needs no opt-in anywhere (48 KiB); D = 128 opts in on every kernel
        // but the forward.
        for d in [1, 33, 64] {
            for s in [fwd_smem(d), dq_smem(d), dkdv_smem(d)] {
                assert!(s * 4 <= 48 << 10, "D = {d}: {s}");
            }
        }
        assert!(fwd_smem(128) * 4 <= 48 << 10);
        assert!(dkdv_smem(128) * 8 <= 160 << 10, "f64 D = 128 fits an A100");
    }
}
