//! Fused scaled dot-product attention with a backward, flash-attention style (Dao et al. 2022,
//! "FlashAttention", and Dao 2023, "FlashAttention-2"): the (B, H, Tq, Tk) score matrix is never
//! formed, in the forward or in the backward. candle's `candle_nn::ops::sdpa` has no `bwd` (and
//! no CPU path); the composition in `reference::attention` writes and reads back several
//! (B, H, Tq, Tk) tensors.
//!
//! q: (B, H, Tq, D), k, v: (B, Hkv, Tk, D) with H % Hkv == 0 (grouped-query attention: query
//! head h reads kv head h / (H / Hkv)) -> o: (B, H, Tq, D). Per query row i of head h, with
//! s = scale (default 1/sqrt(D)):
//!   S_ij = s * q_i·k_j + M_ij,  P_ij = exp(S_ij - L_i),  L_i = log sum_j exp(S_ij),
//!   o_i = sum_j P_ij v_j,
//! where M is the optional additive mask (broadcast to (B, H, Tq, Tk); 0 / -inf, or any finite
//! bias) plus, when causal, -inf for j > Tk - Tq + i (bottom-right alignment, as flash-attn: row
//! i sits at absolute position Tk - Tq + i, so Tq = 1 over a KV cache of Tk sees every key).
//! A row whose keys are all masked (L_i = -inf) gives o_i = 0 and zero gradients, never NaN.
//!
//! Forward: each task takes BQ query rows of one (b, h) and walks the keys in blocks of BK with
//! an online softmax: a running row max m and sum l; on a new block with max m', O and l are
//! rescaled by exp(m - m'). At the end o = O / l and L = m + ln l, which the op keeps (below).
//! The scores are formed transposed, Sᵀ = K·(s q)ᵀ: k is then read as it is (only the task's q
//! rows are transposed, once) and the row statistics become column operations, vectorised over
//! the query rows. A task of fewer than FEW_ROWS rows (decoding) takes lane-split dot products
//! with the rows of k instead, and one plain softmax per row.
//!
//! Backward, with dO the output gradient and D_i = rowsum(dO_i * o_i): recomputing P block by
//! block from q, k and L,
//!   dV_j += P_ij dO_i,  dP_ij = dO_i·v_j,  dS_ij = P_ij (dP_ij - D_i),
//!   dq_i = s sum_j dS_ij k_j,  dk_j = s sum_i dS_ij q_i  (summed over the query heads of a group).
//! A second custom op computes dq, dk, dv (packed in one tensor that `bwd` splits); it has no
//! backward of its own, so a second derivative is an error, not a silent zero.
//!
//! L is kept from the forward in the op (candle hands the same op instance to `bwd`) rather
//! than recomputed: recomputing it costs one more pass of q·k and exp over every key block
//! (about a quarter more backward work), keeping it costs B·H·Tq floats.
//!
//! The mask gets no gradient (it is a constant: window blocks, key padding); it may be in the
//! input's dtype or f32 and of any shape that broadcasts to (B, H, Tq, Tk), such as (Tq, Tk),
//! (B, 1, Tq, Tk), (B, H, Tq, Tk) or (B, 1, 1, Tk).
//!
//! CPU blocking and determinism: the products are register-tiled small matrix products
//! C (+)= A·B (`gemm`: 4 rows by up to 64 columns, A read by rows or by columns, B by rows;
//! row widths padded to 16 in per-task scratch; the backward transposes its chunk of k and v
//! once per task), with AVX-512F/AVX2 intrinsic tiles for f32 (`attention/x86.rs`) and a
//! portable one otherwise. Every element of C is a sequential sum over the inner index with
//! separate multiply and add, so the tiling and the SIMD build do not change any bit (tested);
//! blocks (BQ, BK, key chunks) and the choice of path depend only on the shape. The
//! forward runs tasks of (b, h, query block); the backward runs tasks of (b, kv head, key chunk)
//! that own their dk, dv rows outright (summing over the group's query heads and query blocks
//! in a fixed order) and write dq partials per key chunk, added in chunk order afterwards. So
//! results are bit-identical for any thread count. Causal blocks above the diagonal are
//! skipped, and products on the diagonal are trimmed to the visible keys per 4-row tile.
//!
//! Tasks do not allocate: each thread keeps one scratch buffer, reused across tasks and calls.
//!
//! CPU: f32 and f64 (bf16/f16 computed in f32), any strides on q, k, v (for example
//! projections permuted from (B, T, H, D)). CUDA (`cuda` feature): the same dtypes, strides and
//! semantics, D up to 128 (an error beyond), flash-attention-2 style kernels
//! (`crate::cuda::attention`, `kernels/cuda/attention.cu`): L is kept the same way, as a tensor
//! on the GPU, and the backward's dq, dk and dv come from separate kernels that each recompute
//! P, so every element has one writer (no float atomics; identical run to run).
//!
//! [`attention_packed`] (`attention/packed.rs`) runs the same kernels, forward and backward,
//! on the packed output of one fused q/k/v projection (B, T, (H + 2 Hkv) D) -> (B, T, H D),
//! with optional RoPE on q and k, so that models need no graph nodes to split and merge heads;
//! both ops hold a [`Spec`] (sizes, options, mask) that runs the kernels on dense buffers.

use crate::cpu::{self, Elem, Work};
#[cfg(target_arch = "x86_64")]
use crate::simd::Level;
use crate::simd::{self, multiversion, Real};
use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp3, DType, Device, Error, Layout, Result, Shape, Storage, Tensor,
    WithDType,
};
use std::sync::Mutex;

mod packed;
pub use packed::attention_packed;

const NAME: &str = "attention";
/// Query rows per forward task and per backward query block.
const BQ: usize = 64;
/// Keys per block: the scores of BQ x BK (16 KiB in f32) stay in L1 with their operands.
const BK: usize = 64;
/// Row widths (D, keys) are padded to this in scratch: the narrowest register tile.
const PAD: usize = 16;
/// Rows per register tile.
const MR: usize = 4;
/// Forward tasks with fewer query rows (decoding) take dot products instead of tiles.
const FEW_ROWS: usize = 8;
/// Backward: keys per task chunk (when Tk is larger), and at most this many chunks per
/// (b, kv head), which bounds the dq partials at MAX_CHUNKS times the size of dq.
const KEY_CHUNK: usize = 256;
const MAX_CHUNKS: usize = 4;

/// Options of [`attention`]; `Default` is non-causal, scale 1/sqrt(D), no mask.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOpts<'a> {
    /// Key j is hidden from query row i when j > Tk - Tq + i (bottom-right aligned).
    pub causal: bool,
    /// Multiplies q·k; None means 1/sqrt(D).
    pub scale: Option<f64>,
    /// Additive bias broadcastable to (B, H, Tq, Tk), in q's dtype or f32; no gradient.
    pub mask: Option<&'a Tensor>,
}

/// Scaled dot-product attention, differentiable in q, k and v (see the module header).
/// q: (B, H, Tq, D), k, v: (B, Hkv, Tk, D) with H % Hkv == 0 -> (B, H, Tq, D), q's dtype.
/// Errors naming the shapes for other ranks or sizes, a mask that does not broadcast, and
/// inputs of different dtypes or devices.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Result<Tensor> {
    let dims = check(q, k, v)?;
    q.apply_op3(
        k,
        v,
        Attention {
            spec: Spec::new(dims, opts, ("q", q))?,
            lse: Mutex::new(None),
        },
    )
}

/// The sizes of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub b: usize,
    pub h: usize,
    pub hkv: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
}

impl Dims {
    /// Query heads per kv head.
    fn group(&self) -> usize {
        self.h / self.hkv
    }

    /// How many keys (a prefix) query row i may see: all, or up to Tk - Tq + i when causal.
    #[inline(always)]
    fn key_end(&self, causal: bool, i: usize) -> usize {
        if !causal {
            return self.tk;
        }
        (self.tk as isize - self.tq as isize + i as isize + 1).clamp(0, self.tk as isize) as usize
    }

    /// The first query row that sees key j when causal (rows before it do not).
    #[inline(always)]
    fn first_row(&self, causal: bool, j: usize) -> usize {
        if !causal {
            return 0;
        }
        (j + self.tq).saturating_sub(self.tk)
    }
}

/// Errors unless q is (B, H, Tq, D), k and v are (B, Hkv, Tk, D) with H % Hkv == 0, all of
/// one dtype and device.
pub(crate) fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    let shapes = || format!("q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    let (&[b, h, tq, d], &[bk, hkv, tk, dk]) = (q.dims(), k.dims()) else {
        bail!(
            "{NAME}: q must be (B, H, Tq, D) and k, v (B, Hkv, Tk, D), got {}",
            shapes()
        );
    };
    if v.dims() != k.dims() {
        bail!(
            "{NAME}: v must have k's shape (B, Hkv, Tk, D), got {}",
            shapes()
        );
    }
    if bk != b {
        bail!(
            "{NAME}: q and k differ in the batch size B, got {}",
            shapes()
        );
    }
    if dk != d {
        bail!(
            "{NAME}: q and k differ in the head width D, got {}",
            shapes()
        );
    }
    if hkv == 0 || h % hkv != 0 {
        bail!(
            "{NAME}: the query heads H = {h} must be a multiple of the kv heads Hkv = {hkv}, got {}",
            shapes()
        );
    }
    crate::check_same_kind(NAME, ("k", k), ("q", q))?;
    crate::check_same_kind(NAME, ("v", v), ("q", q))?;
    Ok(Dims {
        b,
        h,
        hkv,
        tq,
        tk,
        d,
    })
}

/// Errors unless `mask` broadcasts to (B, H, Tq, Tk) and has q's dtype or f32 and q's device
/// (`q_name` names q in the messages: q, or `attention_packed`'s qkv); returns its dims padded
/// to rank 4 with leading 1s.
pub(crate) fn check_mask(
    mask: &Tensor,
    (q_name, q): (&str, &Tensor),
    dims: &Dims,
) -> Result<[usize; 4]> {
    let want = [dims.b, dims.h, dims.tq, dims.tk];
    let bad = || {
        Error::Msg(format!(
            "{NAME}: the mask has shape {:?}, which does not broadcast to (B, H, Tq, Tk) = {want:?} \
             ({q_name} {:?}; e.g. (Tq, Tk), (B, 1, Tq, Tk), (B, H, Tq, Tk), (B, 1, 1, Tk))",
            mask.dims(),
            q.dims()
        ))
    };
    if mask.rank() > 4 {
        return Err(bad());
    }
    let mut md = [1usize; 4];
    md[4 - mask.rank()..].copy_from_slice(mask.dims());
    if md.iter().zip(&want).any(|(&m, &w)| m != 1 && m != w) {
        return Err(bad());
    }
    if mask.dtype() != q.dtype() && mask.dtype() != DType::F32 {
        bail!(
            "{NAME}: the mask has dtype {:?}; it must be {q_name}'s dtype {:?} or F32",
            mask.dtype(),
            q.dtype()
        );
    }
    if !mask.device().same_device(q.device()) {
        bail!("{NAME}: the mask and {q_name} are on different devices");
    }
    Ok(md)
}

/// The mask as the kernels read it: in the working precision's storage dtype (f32 may serve
/// bf16 work, f64 work needs f64), dims (mb, mh, mq, Tk) with each of mb, mh, mq either 1
/// (broadcast) or the full size.
#[derive(Clone)]
struct Mask {
    t: Tensor,
    dims: [usize; 4],
}

impl Mask {
    fn new(mask: &Tensor, (q_name, q): (&str, &Tensor), dims: &Dims) -> Result<Mask> {
        let mut md = check_mask(mask, (q_name, q), dims)?;
        let mut t = mask.detach().reshape(&md[..])?;
        let work = cpu::work(NAME, q.dtype())?;
        if work == Work::F64 && t.dtype() != DType::F64 {
            t = t.to_dtype(DType::F64)?;
        } else if work == Work::F32 && t.dtype() != DType::F32 && q.device().is_cuda() {
            // The CUDA kernels read the mask in the working precision only (exact: bf16 and
            // f16 values are f32 values).
            t = t.to_dtype(DType::F32)?;
        }
        if md[3] != dims.tk {
            // A mask broadcast over the keys: expand it so that rows are slices.
            md[3] = dims.tk;
            t = t.broadcast_as(&md[..])?.contiguous()?;
        }
        Ok(Mask { t, dims: md })
    }
}

/// A loaded mask: rows of Tk for (b, h, i), broadcast where its dims are 1.
struct MaskView<'a, T> {
    data: &'a [T],
    dims: [usize; 4],
}

impl<T: Copy> MaskView<'_, T> {
    #[inline(always)]
    fn row(&self, b: usize, h: usize, i: usize) -> &[T] {
        let [mb, mh, mq, tk] = self.dims;
        let pick = |n: usize, x: usize| if n == 1 { 0 } else { x };
        let r = (pick(mb, b) * mh + pick(mh, h)) * mq + pick(mq, i);
        &self.data[r * tk..(r + 1) * tk]
    }
}

/// The working precisions, with what the op needs beyond `Elem`: a tensor of them (the saved
/// log-sum-exp) and the natural log.
trait Work2: Elem + WithDType {
    fn ln(self) -> Self;
}

impl Work2 for f32 {
    fn ln(self) -> Self {
        f32::ln(self)
    }
}

impl Work2 for f64 {
    fn ln(self) -> Self {
        f64::ln(self)
    }
}

/// The CPU storage of a tensor that is not an argument of the custom op (the mask, and the
/// output, its gradient and L in the backward).
fn cpu_storage<'a>(s: &'a Storage, what: &str) -> Result<&'a CpuStorage> {
    match s {
        Storage::Cpu(s) => Ok(s),
        _ => bail!("{NAME}: {what} is not on the CPU"),
    }
}

/// C (+)= A·B, the operands of `gemm`: A[r][kk] = a[r * lda + kk] (or a[kk * lda + r] when A
/// is stored transposed), B[kk][col] = b[kk * ldb + col].
struct Ops<'a, T> {
    a: &'a [T],
    lda: usize,
    b: &'a [T],
    ldb: usize,
}

/// What `gemm` computes for a tile of rows: the inner range k0..k1 and the columns c0..n
/// (multiples of PAD); other columns of those rows keep what they hold.
struct Span {
    k0: usize,
    k1: usize,
    c0: usize,
    n: usize,
}

/// The offsets in a, b and c of the tile at rows r0..r0 + rows, columns col..col + w; panics
/// unless the tile's reads and writes lie inside the operands (the x86 tiles rely on it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_offsets<T>(
    at: bool,
    o: &Ops<T>,
    c_len: usize,
    ldc: usize,
    (r0, rows): (usize, usize),
    (col, w): (usize, usize),
    (k0, k1): (usize, usize),
) -> (usize, usize, usize) {
    let a_off = if at { r0 } else { r0 * o.lda };
    let c_off = r0 * ldc + col;
    assert!(
        c_off + (rows - 1) * ldc + w <= c_len,
        "{NAME}: a tile outside C"
    );
    if k1 > k0 {
        let a_end = match at {
            true => a_off + (k1 - 1) * o.lda + rows,
            false => a_off + (rows - 1) * o.lda + k1,
        };
        let b_end = (k1 - 1) * o.ldb + col + w;
        assert!(
            a_end <= o.a.len() && b_end <= o.b.len(),
            "{NAME}: a tile outside A or B"
        );
    }
    (a_off, col, c_off)
}

/// The tiling loop of `gemm`: tiles of MR rows (single rows at the end) by the widest of
/// `widths` that fits the columns left; `$tile` runs one with `$rows`, `$w`, the offsets
/// `$ao`, `$bo`, `$co` of its corner in a, b, c, and its inner range `$k`.
macro_rules! drive {
    ($at:expr, $m:expr, $o:ident, $c:ident, $ldc:expr, $span:expr, [$($width:expr),+],
     |$rows:ident, $w:ident, $ao:ident, $bo:ident, $co:ident, $k:ident| $tile:expr) => {{
        let mut r0 = 0usize;
        while r0 < $m {
            let $rows = if $m - r0 >= MR { MR } else { 1 };
            let span: Span = ($span)(r0, $rows);
            let $k = (span.k0, span.k1.max(span.k0));
            let mut col = span.c0;
            while col < span.n {
                let rem = span.n - col;
                let $w = [$($width),+].into_iter().find(|&w| w <= rem).unwrap_or(PAD);
                let ($ao, $bo, $co) =
                    tile_offsets($at, $o, $c.len(), $ldc, (r0, $rows), (col, $w), $k);
                $tile;
                col += $w;
            }
            r0 += $rows;
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod x86;

/// One portable register tile: C[r][..W] (or 0 when `zero`) + sum_{kk in k0..k1} A[r][kk] *
/// B[kk][..W] for r < R, written to C (see `Ops`; here a, b, c start at the tile's corner).
/// Each element is one sequential sum over kk, whatever the tile shape or build.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<T: Real, const R: usize, const W: usize, const AT: bool>(
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    (k0, k1): (usize, usize),
    zero: bool,
) {
    let mut acc = [[T::ZERO; W]; R];
    if !zero {
        for (r, acc) in acc.iter_mut().enumerate() {
            acc.copy_from_slice(&c[r * ldc..r * ldc + W]);
        }
    }
    for kk in k0..k1 {
        let x: [T; R] = std::array::from_fn(|r| if AT { a[kk * lda + r] } else { a[r * lda + kk] });
        let y: &[T; W] = b[kk * ldb..kk * ldb + W].try_into().unwrap();
        for (acc, &x) in acc.iter_mut().zip(&x) {
            for (a, &y) in acc.iter_mut().zip(y) {
                *a += x * y;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        c[r * ldc..r * ldc + W].copy_from_slice(acc);
    }
}

/// C (+)= A·B over m rows of C: for each tile of rows r0..r0 + rows, `span(r0, rows)` gives
/// the inner range and the columns (see `Span`). With `zero`, C starts from 0 instead of its
/// contents. AT: A is stored transposed. f32 on x86-64 runs the intrinsic tiles of `x86`
/// (same sums, same bits); the rest the portable one.
#[inline(always)]
fn gemm<T: Real, const AT: bool>(
    m: usize,
    o: &Ops<T>,
    c: &mut [T],
    ldc: usize,
    zero: bool,
    span: impl Fn(usize, usize) -> Span,
) {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: T is f32, so the slices are f32 slices of the same length.
        let (o32, c32) = unsafe {
            let f = |s: &[T]| std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len());
            (
                Ops {
                    a: f(o.a),
                    lda: o.lda,
                    b: f(o.b),
                    ldb: o.ldb,
                },
                std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut f32, c.len()),
            )
        };
        match simd::level() {
            // SAFETY: `level` reports only what the CPU supports.
            Level::Avx512 => {
                return unsafe { x86::gemm_avx512::<AT>(m, &o32, c32, ldc, zero, span) }
            }
            // SAFETY: as above.
            Level::Avx2 => return unsafe { x86::gemm_avx2::<AT>(m, &o32, c32, ldc, zero, span) },
            Level::Base => {}
        }
    }
    drive!(
        AT,
        m,
        o,
        c,
        ldc,
        span,
        [PAD],
        |rows, _w, ao, bo, co, k| match rows {
            MR => tile::<T, MR, PAD, AT>(
                &o.a[ao..],
                o.lda,
                &o.b[bo..],
                o.ldb,
                &mut c[co..],
                ldc,
                k,
                zero
            ),
            _ => tile::<T, 1, PAD, AT>(
                &o.a[ao..],
                o.lda,
                &o.b[bo..],
                o.ldb,
                &mut c[co..],
                ldc,
                k,
                zero
            ),
        }
    );
}

/// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols: AVX registers for f32 on
/// x86-64 with AVX2, else by 8 x 8 blocks (rows read, columns written at once). Exact moves.
#[inline(always)]
fn transpose<T: Real>(
    src: &[T],
    lds: usize,
    (rows, cols): (usize, usize),
    dst: &mut [T],
    ldd: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && simd::level() >= Level::Avx2
    {
        // SAFETY: T is f32, so these are f32 slices of the same lengths; `level` reports only
        // what the CPU supports.
        return unsafe {
            let s = std::slice::from_raw_parts(src.as_ptr() as *const f32, src.len());
            let d = std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len());
            x86::transpose_avx2(s, lds, (rows, cols), d, ldd)
        };
    }
    const B: usize = 8;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            if r0 + B <= rows && c0 + B <= cols {
                let mut t = [[T::ZERO; B]; B];
                for r in 0..B {
                    let s: &[T; B] = src[(r0 + r) * lds + c0..][..B].try_into().unwrap();
                    for c in 0..B {
                        t[c][r] = s[c];
                    }
                }
                for (c, t) in t.iter().enumerate() {
                    dst[(c0 + c) * ldd + r0..][..B].copy_from_slice(t);
                }
            } else {
                for r in r0..rows.min(r0 + B) {
                    for c in c0..cols.min(c0 + B) {
                        dst[c * ldd + r] = src[r * lds + c];
                    }
                }
            }
        }
    }
}

/// Runs `f` with this thread's scratch of `len` elements, reused across tasks and calls so
/// that tasks neither allocate nor zero their buffers. The contents are stale: a kernel
/// writes every element it reads (padding included, or it only reads it into outputs it
/// drops). Tasks never nest, so the buffer is never borrowed twice.
fn with_scratch<T: Real, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    use std::any::TypeId;
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    }
    let id = TypeId::of::<T>();
    assert!(id == TypeId::of::<f32>() || id == TypeId::of::<f64>());
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        let words = (len * std::mem::size_of::<T>()).div_ceil(8);
        if b.len() < words {
            b.resize(words, 0.0);
        }
        // Unit tests poison it (NaN in f32 and f64): a stale read then shows in the results.
        #[cfg(test)]
        b.fill(f64::from_bits(u64::MAX));
        // SAFETY: T is f32 or f64 (asserted): every bit pattern is one of its values, and f64
        // storage is aligned for both; the slice covers at most the buffer's `words` words.
        f(unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut T, len) })
    })
}

/// Splits the first `n` elements off `s`.
#[inline(always)]
fn take<'a, T>(s: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (head, tail) = std::mem::take(s).split_at_mut(n);
    *s = tail;
    head
}

#[inline(always)]
fn pad(n: usize) -> usize {
    n.next_multiple_of(PAD)
}

/// What a forward task reads: one (b, h) pair's q rows and its kv head's k and v.
struct FwdTask<'a, T> {
    dims: Dims,
    causal: bool,
    scale: T,
    b: usize,
    h: usize,
    /// The first query row of the task.
    i0: usize,
    /// (rows, D): the task's query rows.
    q: &'a [T],
    /// (Tk, D) each.
    k: &'a [T],
    v: &'a [T],
    mask: Option<&'a MaskView<'a, T>>,
}

impl<T> FwdTask<'_, T> {
    /// The scratch `fwd_task` needs for `nr` rows.
    fn scratch_len(&self, nr: usize) -> usize {
        let (d, dp, nrp) = (self.dims.d, pad(self.dims.d), pad(nr));
        match nr < FEW_ROWS {
            true => d + self.dims.tk,
            false => d * nrp + nr * dp + BK * nrp + BK * dp + 3 * nr,
        }
    }
}

multiversion! {
    /// One forward task: o (rows, D) and, per row, the final max m and sum l of the softmax
    /// (L = m + ln l is formed by the caller; m = -inf and l = 0 when no key is visible).
    fn fwd_task<T: Real>(t: &FwdTask<T>, o: &mut [T], m: &mut [T], l: &mut [T], scratch: &mut [T]) {
        if m.len() < FEW_ROWS {
            fwd_rows(t, o, m, l, scratch)
        } else {
            fwd_blocked(t, o, m, l, scratch)
        }
    }
}

/// The forward for a few rows (decoding over a KV cache): per row, scores by lane-split dot
/// products with the rows of k (a register tile would be mostly padding), then one softmax
/// over its visible keys and o = sum_j p_j v_j / l.
#[inline(always)]
fn fwd_rows<T: Real>(t: &FwdTask<T>, o: &mut [T], m: &mut [T], l: &mut [T], mut scratch: &mut [T]) {
    let d = t.dims.d;
    let qs = take(&mut scratch, d);
    let s = take(&mut scratch, t.dims.tk);
    for (r, orow) in o.chunks_exact_mut(d).enumerate() {
        let end = t.dims.key_end(t.causal, t.i0 + r);
        for (a, &x) in qs.iter_mut().zip(&t.q[r * d..(r + 1) * d]) {
            *a = x * t.scale;
        }
        let s = &mut s[..end];
        for (x, krow) in s.iter_mut().zip(t.k.chunks_exact(d)) {
            *x = simd::sum_map2(qs, krow, |a, b| a * b);
        }
        if let Some(mask) = t.mask {
            for (x, &b) in s.iter_mut().zip(mask.row(t.b, t.h, t.i0 + r)) {
                *x += b;
            }
        }
        orow.fill(T::ZERO);
        let mx = simd::max(s);
        (m[r], l[r]) = (mx, T::ZERO);
        if mx == T::NEG_INF {
            continue; // no visible key: o = 0
        }
        for x in s.iter_mut() {
            *x = (*x - mx).exp();
        }
        l[r] = simd::sum_map(s, |x| x);
        for (&p, vrow) in s.iter().zip(t.v.chunks_exact(d)) {
            for (a, &y) in orow.iter_mut().zip(vrow) {
                *a += p * y;
            }
        }
        let inv = T::ONE / l[r];
        for a in orow.iter_mut() {
            *a = *a * inv;
        }
    }
}

/// The blocked forward (see the module header), with the scores transposed: Sᵀ = K·Qsᵀ for
/// a block of keys needs no transpose of k (only Qs, once per task), the softmax statistics
/// are then column operations, vectorised over the query rows (PAD at a time, in registers
/// across the keys), and O += P·V reads Pᵀ as a transposed A.
#[inline(always)]
fn fwd_blocked<T: Real>(
    t: &FwdTask<T>,
    o: &mut [T],
    m: &mut [T],
    l: &mut [T],
    mut scratch: &mut [T],
) {
    let d = t.dims.d;
    let nr = m.len();
    let (nrp, dp) = (pad(nr), pad(d));
    let key_end = |r: usize| t.dims.key_end(t.causal, t.i0 + r);
    // Qsᵀ (D, nrp): padding columns only feed score columns that are never read.
    let qst = take(&mut scratch, d * nrp);
    transpose(t.q, d, (nr, d), qst, nrp);
    for x in qst.iter_mut() {
        *x = *x * t.scale;
    }
    let acc = take(&mut scratch, nr * dp);
    acc.fill(T::ZERO);
    let st = take(&mut scratch, BK * nrp);
    let vb = take(&mut scratch, BK * dp);
    let m_new = take(&mut scratch, nr);
    let m_sub = take(&mut scratch, nr);
    let alpha = take(&mut scratch, nr);
    m.fill(T::NEG_INF);
    l.fill(T::ZERO);
    let end = key_end(nr - 1);
    for j0 in (0..end).step_by(BK) {
        let nk = BK.min(end - j0);
        // The first row that sees key j0 + j (nondecreasing in j), and the keys of the block
        // row r sees.
        let first = |j: usize| {
            t.dims
                .first_row(t.causal, j0 + j)
                .saturating_sub(t.i0)
                .min(nr)
        };
        let seen = |r: usize| key_end(r).saturating_sub(j0).min(nk);
        let keys = Ops {
            a: &t.k[j0 * d..(j0 + nk) * d],
            lda: d,
            b: qst,
            ldb: nrp,
        };
        gemm::<T, false>(nk, &keys, st, nrp, true, |r0, _| Span {
            k0: 0,
            k1: d,
            c0: first(r0) / PAD * PAD,
            n: nrp,
        });
        if let Some(mask) = t.mask {
            for r in 0..nr {
                let mrow = &mask.row(t.b, t.h, t.i0 + r)[j0..j0 + seen(r)];
                for (j, &b) in mrow.iter().enumerate() {
                    st[j * nrp + r] += b;
                }
            }
        }
        // Column maxima over the visible scores, PAD columns at a time in registers.
        for c0 in (0..nr).step_by(PAD) {
            let w = PAD.min(nr - c0);
            let mut mx = [T::NEG_INF; PAD];
            mx[..w].copy_from_slice(&m[c0..c0 + w]);
            for j in 0..nk {
                let f = first(j);
                if f >= c0 + w {
                    break; // this and later keys are hidden from these columns
                }
                let row: &[T; PAD] = st[j * nrp + c0..][..PAD].try_into().unwrap();
                for (c, (mx, &s)) in mx.iter_mut().zip(row).enumerate() {
                    let s = if c0 + c >= f { s } else { T::NEG_INF };
                    *mx = if s > *mx { s } else { *mx };
                }
            }
            m_new[c0..c0 + w].copy_from_slice(&mx[..w]);
        }
        for (((sub, a), &mn), &mo) in m_sub
            .iter_mut()
            .zip(alpha.iter_mut())
            .zip(m_new.iter())
            .zip(m.iter())
        {
            // A row that sees nothing yet keeps O = 0, l = 0 (and must not form -inf - -inf).
            let none = mn == T::NEG_INF;
            *sub = if none { T::ZERO } else { mn };
            *a = if none { T::ONE } else { (mo - mn).exp() };
        }
        // Pᵀ = exp(Sᵀ - m_new), 0 where hidden; l = l * alpha + the column sums of Pᵀ.
        for j in 0..nk {
            let f = first(j);
            let row = &mut st[j * nrp..j * nrp + nr];
            row[..f].fill(T::ZERO);
            for (x, &s) in row[f..].iter_mut().zip(&m_sub[f..]) {
                *x = (*x - s).exp();
            }
        }
        for c0 in (0..nr).step_by(PAD) {
            let w = PAD.min(nr - c0);
            let mut sum = [T::ZERO; PAD];
            for ((s, &l), &a) in sum.iter_mut().zip(&l[c0..c0 + w]).zip(&alpha[c0..c0 + w]) {
                *s = l * a;
            }
            for j in 0..nk {
                let row: &[T; PAD] = st[j * nrp + c0..][..PAD].try_into().unwrap();
                for (s, &p) in sum.iter_mut().zip(row) {
                    *s += p;
                }
            }
            l[c0..c0 + w].copy_from_slice(&sum[..w]);
        }
        for (r, &a) in alpha.iter().enumerate() {
            if a != T::ONE {
                for x in acc[r * dp..(r + 1) * dp].iter_mut() {
                    *x = *x * a;
                }
            }
        }
        m.copy_from_slice(m_new);
        // V as B: read in place when its rows are already PAD-aligned, else padded copies
        // (whose padding only feeds output columns that are dropped).
        let v = &t.v[j0 * d..(j0 + nk) * d];
        let (vs, ldv) = match d == dp {
            true => (v, d),
            false => {
                for (vb, vrow) in vb.chunks_exact_mut(dp).zip(v.chunks_exact(d)) {
                    vb[..d].copy_from_slice(vrow);
                }
                (&vb[..], dp)
            }
        };
        let pv = Ops {
            a: st,
            lda: nrp,
            b: vs,
            ldb: ldv,
        };
        gemm::<T, true>(nr, &pv, acc, dp, false, |r0, rows| Span {
            k0: 0,
            k1: seen(r0 + rows - 1),
            c0: 0,
            n: dp,
        });
    }
    for ((o, acc), &l) in o
        .chunks_exact_mut(d)
        .zip(acc.chunks_exact(dp))
        .zip(l.iter())
    {
        let inv = if l > T::ZERO { T::ONE / l } else { T::ZERO };
        for (o, &a) in o.iter_mut().zip(acc) {
            *o = a * inv;
        }
    }
}

/// What a call computes besides its inputs: the sizes, the options (scale resolved) and the
/// mask as the kernels read it. The forward and backward ops of `attention` and of
/// `attention_packed` (`packed.rs`) carry one each and run the same kernels through it.
#[derive(Clone)]
struct Spec {
    dims: Dims,
    causal: bool,
    scale: f64,
    mask: Option<Mask>,
}

impl Spec {
    /// Resolves the scale (an error unless finite) and checks the mask against `q` (named
    /// `q_name` in messages).
    fn new(dims: Dims, opts: &AttentionOpts, q: (&str, &Tensor)) -> Result<Spec> {
        // (D = 0 has no products to scale.)
        let scale = opts.scale.unwrap_or(1.0 / (dims.d.max(1) as f64).sqrt());
        if !scale.is_finite() {
            bail!("{NAME}: scale must be finite, got {scale}");
        }
        let mask = match opts.mask {
            Some(m) => Some(Mask::new(m, q, &dims)?),
            None => None,
        };
        Ok(Spec {
            dims,
            causal: opts.causal,
            scale,
            mask,
        })
    }

    /// Runs `f` with the mask loaded in the working precision (None without a mask).
    fn with_mask<T: Work2, R>(&self, f: impl FnOnce(Option<&MaskView<T>>) -> R) -> Result<R> {
        let Some(m) = &self.mask else {
            return Ok(f(None));
        };
        let (s, l) = m.t.storage_and_layout();
        let data = T::load(NAME, cpu_storage(&s, "the mask")?, l)?;
        Ok(f(Some(&MaskView {
            data: &data,
            dims: m.dims,
        })))
    }

    /// The CPU forward on dense row-major q (B, H, Tq, D), k, v (B, Hkv, Tk, D): o
    /// (B, H, Tq, D) and L (B, H, Tq).
    fn forward<T: Work2>(&self, q: &[T], k: &[T], v: &[T]) -> Result<(Vec<T>, Vec<T>)> {
        let dims = self.dims;
        let Dims {
            b,
            h,
            hkv,
            tq,
            tk,
            d,
        } = dims;
        let mut o = vec![T::ZERO; b * h * tq * d];
        let mut lse = vec![T::NEG_INF; b * h * tq];
        if o.is_empty() {
            return Ok((o, lse));
        }
        let (scale, group) = (<T as Real>::from_f64(self.scale), dims.group());
        self.with_mask(|mask: Option<&MaskView<T>>| {
            let tasks: Vec<_> = o
                .chunks_mut(tq * d)
                .zip(lse.chunks_mut(tq))
                .enumerate()
                .flat_map(|(bh, (o, lse))| {
                    o.chunks_mut(BQ * d)
                        .zip(lse.chunks_mut(BQ))
                        .enumerate()
                        .map(move |(qb, (o, lse))| (bh, qb * BQ, o, lse))
                })
                .collect();
            cpu::par_tasks(tasks, |_, (bh, i0, o, lse)| {
                let (bi, hi) = (*bh / h, *bh % h);
                let kv = (bi * hkv + hi / group) * tk * d;
                let nr = lse.len();
                let task = FwdTask {
                    dims,
                    causal: self.causal,
                    scale,
                    b: bi,
                    h: hi,
                    i0: *i0,
                    q: &q[(*bh * tq + *i0) * d..(*bh * tq + *i0 + nr) * d],
                    k: &k[kv..kv + tk * d],
                    v: &v[kv..kv + tk * d],
                    mask,
                };
                let mut l = vec![T::ZERO; nr];
                with_scratch(task.scratch_len(nr), |s| fwd_task(&task, o, lse, &mut l, s));
                for (m, &l) in lse.iter_mut().zip(&l) {
                    *m = if l > T::ZERO { *m + l.ln() } else { T::NEG_INF };
                }
            });
        })?;
        Ok((o, lse))
    }

    /// The CUDA kernels' view of this call.
    #[cfg(feature = "cuda")]
    fn params(&self) -> crate::cuda::AttentionParams<'_> {
        crate::cuda::AttentionParams {
            dims: self.dims,
            causal: self.causal,
            scale: self.scale,
            mask: self.mask.as_ref().map(|m| (&m.t, m.dims)),
        }
    }
}

/// Forward: (q, k, v) -> o, keeping L in `lse`.
struct Attention {
    spec: Spec,
    /// L (B, H, Tq) in the working precision, on the device of the inputs, set by `cpu_fwd` or
    /// `cuda_fwd` for `bwd`.
    lse: Mutex<Option<Tensor>>,
}

type Input<'a> = (&'a CpuStorage, &'a Layout);

/// Errors unless the layouts of q, k, v are those `attention` checked.
fn expect_qkv(dims: &Dims, q: &Layout, k: &Layout, v: &Layout) -> Result<()> {
    let Dims {
        b,
        h,
        hkv,
        tq,
        tk,
        d,
    } = *dims;
    cpu::expect_dims(NAME, "q", q, &[b, h, tq, d])?;
    cpu::expect_dims(NAME, "k", k, &[b, hkv, tk, d])?;
    cpu::expect_dims(NAME, "v", v, &[b, hkv, tk, d])
}

/// Keeps the forward's L (CPU or GPU tensor) in an op's slot for `bwd`.
fn keep_lse(slot: &Mutex<Option<Tensor>>, lse: Tensor) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(lse);
}

/// The L an op's forward kept, or an error when `bwd` runs without one.
fn saved_lse(slot: &Mutex<Option<Tensor>>) -> Result<Tensor> {
    match slot.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        Some(lse) => Ok(lse),
        None => bail!("{NAME}: backward without a forward (no saved log-sum-exp)"),
    }
}

impl Attention {
    fn fwd<T: Work2>(
        &self,
        (qs, ql): Input,
        (ks, kl): Input,
        (vs, vl): Input,
    ) -> Result<CpuStorage> {
        let dims = self.spec.dims;
        expect_qkv(&dims, ql, kl, vl)?;
        let (q, k, v) = (
            T::load(NAME, qs, ql)?,
            T::load(NAME, ks, kl)?,
            T::load(NAME, vs, vl)?,
        );
        let (o, lse) = self.spec.forward(&q, &k, &v)?;
        let lse = Tensor::from_vec(lse, (dims.b, dims.h, dims.tq), &Device::Cpu)?;
        keep_lse(&self.lse, lse);
        Ok(T::store(o, qs.dtype()))
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "cotyle-attention"
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
        let o = match cpu::work(NAME, s1.dtype())? {
            Work::F32 => self.fwd::<f32>(args.0, args.1, args.2)?,
            Work::F64 => self.fwd::<f64>(args.0, args.1, args.2)?,
        };
        Ok((o, l1.shape().clone()))
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
        let params = self.spec.params();
        let (o, lse) = crate::cuda::attention(&params, (s1, l1), (s2, l2), (s3, l3))?;
        // L on the GPU, in the slot the CPU forward fills, for `bwd`.
        keep_lse(&self.lse, lse);
        Ok((o, l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let track = [q.track_op(), k.track_op(), v.track_op()];
        if track == [false; 3] {
            return Ok((None, None, None));
        }
        let packed = q.apply_op3(
            k,
            v,
            AttentionBackward {
                spec: self.spec.clone(),
                o: res.clone(),
                d_o: grad_res.clone(),
                lse: saved_lse(&self.lse)?,
            },
        )?;
        let (nq, nkv) = (q.elem_count(), k.elem_count());
        let part = |i: usize, start: usize, len: usize, t: &Tensor| -> Result<Option<Tensor>> {
            match track[i] {
                true => Ok(Some(packed.narrow(0, start, len)?.reshape(t.dims())?)),
                false => Ok(None),
            }
        };
        Ok((
            part(0, 0, nq, q)?,
            part(1, nq, nkv, k)?,
            part(2, nq + nkv, nkv, v)?,
        ))
    }
}

/// What a backward task reads: one (b, kv head) pair's inputs and the forward's results.
struct BwdTask<'a, T> {
    dims: Dims,
    causal: bool,
    scale: T,
    b: usize,
    /// The kv head; the task's query heads are g * G..(g + 1) * G.
    g: usize,
    /// The task's keys c0..c0 + (rows of dk).
    c0: usize,
    /// (G, Tq, D) each: q, o and dO of the group's query heads.
    q: &'a [T],
    o: &'a [T],
    d_o: &'a [T],
    /// (G, Tq).
    lse: &'a [T],
    /// (Tk, D) each.
    k: &'a [T],
    v: &'a [T],
    mask: Option<&'a MaskView<'a, T>>,
}

multiversion! {
    /// One backward task: dk, dv of its keys (rows, D) and its part of dq (G, Tq, D) (the sum
    /// over its keys only; zero where it has none).
    fn bwd_task<T: Real>(t: &BwdTask<T>, dq: &mut [T], dk: &mut [T], dv: &mut [T], scratch: &mut [T]) {
        let Dims { tq, d, .. } = t.dims;
        let (dp, c0) = (pad(d), t.c0);
        let nc = dk.len() / d;
        let c1 = c0 + nc;
        let kcp = pad(nc);
        let mut scratch = scratch;
        // The chunk's keys as rows (dq += dS·K; in place when PAD-aligned), k and v transposed
        // (S = Qs·Kᵀ, dP = dO·Vᵀ), and the dk, dv accumulators. Padding (stale scratch) only
        // reaches columns that are never read or outputs that are dropped.
        let (k, v) = (&t.k[c0 * d..c1 * d], &t.v[c0 * d..c1 * d]);
        let kc = take(&mut scratch, if d == dp { 0 } else { nc * dp });
        for (kc, krow) in kc.chunks_exact_mut(dp).zip(k.chunks_exact(d)) {
            kc[..d].copy_from_slice(krow);
        }
        let kc: &[T] = if d == dp { k } else { kc };
        let ktc = take(&mut scratch, d * kcp);
        let vtc = take(&mut scratch, d * kcp);
        transpose(k, d, (nc, d), ktc, kcp);
        transpose(v, d, (nc, d), vtc, kcp);
        let dkc = take(&mut scratch, nc * dp);
        let dvc = take(&mut scratch, nc * dp);
        dkc.fill(T::ZERO);
        dvc.fill(T::ZERO);
        let qs = take(&mut scratch, BQ * dp);
        let dos = take(&mut scratch, BQ * dp);
        let dqa = take(&mut scratch, BQ * dp);
        let p = take(&mut scratch, BQ * BK);
        let ds = take(&mut scratch, BQ * BK);
        let di = take(&mut scratch, BQ);
        let group = t.dims.group();
        for hh in 0..group {
            for i0 in (0..tq).step_by(BQ) {
                let nr = BQ.min(tq - i0);
                let end = t.dims.key_end(t.causal, i0 + nr - 1).min(c1);
                if end <= c0 {
                    continue; // no key of the chunk is visible to these rows
                }
                let key_end = |r: usize| t.dims.key_end(t.causal, i0 + r);
                let rows = (hh * tq + i0) * d..(hh * tq + i0 + nr) * d;
                let (q, o, d_o) = (&t.q[rows.clone()], &t.o[rows.clone()], &t.d_o[rows]);
                let lse = &t.lse[hh * tq + i0..hh * tq + i0 + nr];
                for r in 0..nr {
                    let (qr, dor) = (&q[r * d..(r + 1) * d], &d_o[r * d..(r + 1) * d]);
                    for (a, &x) in qs[r * dp..r * dp + d].iter_mut().zip(qr) {
                        *a = x * t.scale;
                    }
                    dos[r * dp..r * dp + d].copy_from_slice(dor);
                    di[r] = simd::sum_map2(dor, &o[r * d..(r + 1) * d], |a, b| a * b);
                }
                dqa[..nr * dp].fill(T::ZERO);
                for j0 in (c0..end).step_by(BK) {
                    let (nk, jl) = (BK.min(end - j0), j0 - c0);
                    // Keys this block shows to rows r0..r0 + rows, and the first row (of the
                    // block's nr) that sees key jl + j.
                    let seen = |r0: usize, rows: usize| {
                        let last = r0 + rows - 1;
                        if lse[r0..=last].iter().all(|&x| x == T::NEG_INF) {
                            return 0;
                        }
                        key_end(last).saturating_sub(j0).min(nk)
                    };
                    let first = |j: usize| t.dims.first_row(t.causal, j0 + j).saturating_sub(i0).min(nr);
                    gemm::<T, false>(
                        nr,
                        &Ops { a: qs, lda: dp, b: &ktc[jl..], ldb: kcp },
                        p,
                        BK,
                        true,
                        |r0, rows| Span { k0: 0, k1: d, c0: 0, n: pad(seen(r0, rows)) },
                    );
                    for r in 0..nr {
                        let valid = seen(r, 1);
                        let prow = &mut p[r * BK..r * BK + nk];
                        let lr = lse[r];
                        match t.mask {
                            Some(mask) => {
                                let mrow = &mask.row(t.b, t.g * group + hh, i0 + r)[j0..j0 + valid];
                                for (x, &b) in prow.iter_mut().zip(mrow) {
                                    *x = (*x + b - lr).exp();
                                }
                            }
                            None => {
                                for x in prow[..valid].iter_mut() {
                                    *x = (*x - lr).exp();
                                }
                            }
                        }
                        prow[valid..].fill(T::ZERO);
                    }
                    // dV += Pᵀ dO (rows of dv are keys; the inner index runs over query rows).
                    gemm::<T, true>(
                        nk,
                        &Ops { a: p, lda: BK, b: dos, ldb: dp },
                        &mut dvc[jl * dp..],
                        dp,
                        false,
                        |r0, _| Span { k0: first(r0), k1: nr, c0: 0, n: dp },
                    );
                    gemm::<T, false>(
                        nr,
                        &Ops { a: dos, lda: dp, b: &vtc[jl..], ldb: kcp },
                        ds,
                        BK,
                        true,
                        |r0, rows| Span { k0: 0, k1: d, c0: 0, n: pad(seen(r0, rows)) },
                    );
                    for r in 0..nr {
                        let valid = seen(r, 1);
                        let prow = &p[r * BK..r * BK + valid];
                        let dsrow = &mut ds[r * BK..r * BK + nk];
                        for (x, &pv) in dsrow.iter_mut().zip(prow) {
                            *x = pv * (*x - di[r]);
                        }
                        dsrow[valid..].fill(T::ZERO);
                    }
                    gemm::<T, false>(
                        nr,
                        &Ops { a: ds, lda: BK, b: &kc[jl * dp..], ldb: dp },
                        dqa,
                        dp,
                        false,
                        |r0, rows| Span { k0: 0, k1: seen(r0, rows), c0: 0, n: dp },
                    );
                    gemm::<T, true>(
                        nk,
                        &Ops { a: ds, lda: BK, b: qs, ldb: dp },
                        &mut dkc[jl * dp..],
                        dp,
                        false,
                        |r0, _| Span { k0: first(r0), k1: nr, c0: 0, n: dp },
                    );
                }
                let out = &mut dq[(hh * tq + i0) * d..(hh * tq + i0 + nr) * d];
                for (o, a) in out.chunks_exact_mut(d).zip(dqa.chunks_exact(dp)) {
                    for (o, &a) in o.iter_mut().zip(a) {
                        *o = a * t.scale;
                    }
                }
            }
        }
        for (out, acc) in [(dk, &dkc), (dv, &dvc)] {
            for (o, a) in out.chunks_exact_mut(d).zip(acc.chunks_exact(dp)) {
                o.copy_from_slice(&a[..d]);
            }
        }
    }
}

impl<T> BwdTask<'_, T> {
    /// The scratch `bwd_task` needs for a chunk of `nc` keys.
    fn scratch_len(dims: &Dims, nc: usize) -> usize {
        let (d, dp) = (dims.d, pad(dims.d));
        nc * dp + 2 * d * pad(nc) + 2 * nc * dp + 3 * BQ * dp + 2 * BQ * BK + BQ
    }
}

impl Spec {
    /// The CPU backward on dense row-major q (B, H, Tq, D), k, v (B, Hkv, Tk, D) and the
    /// forward's o, its gradient dO (B, H, Tq, D) and L (B, H, Tq): dq, dk, dv flattened and
    /// concatenated.
    fn backward<T: Work2>(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &[T],
        d_o: &[T],
        lse: &[T],
    ) -> Result<Vec<T>> {
        let dims = self.dims;
        let Dims {
            b,
            h,
            hkv,
            tq,
            tk,
            d,
        } = dims;
        let (nq, nkv) = (b * h * tq * d, b * hkv * tk * d);
        let mut out = vec![T::ZERO; nq + 2 * nkv];
        if nq == 0 || nkv == 0 {
            return Ok(out);
        }
        self.with_mask(|mask: Option<&MaskView<T>>| {
            // Key chunks per (b, kv head): KEY_CHUNK keys, or larger to stay within MAX_CHUNKS.
            let kc = tk
                .div_ceil(tk.div_ceil(KEY_CHUNK).min(MAX_CHUNKS))
                .next_multiple_of(BK);
            let n_chunks = tk.div_ceil(kc);
            let group = dims.group();
            let gq = group * tq * d;
            let (dq, rest) = out.split_at_mut(nq);
            let (dk, dv) = rest.split_at_mut(nkv);
            let mut partial = vec![T::ZERO; if n_chunks > 1 { nq * n_chunks } else { 0 }];
            let dq_slots: Vec<&mut [T]> = match n_chunks {
                1 => dq.chunks_mut(gq).collect(),
                _ => partial.chunks_mut(gq).collect(),
            };
            let tasks: Vec<_> = dq_slots
                .into_iter()
                .zip(chunks(dk, tk * d, kc * d).zip(chunks(dv, tk * d, kc * d)))
                .enumerate()
                .map(|(i, (dq, (dk, dv)))| (i, dq, dk, dv))
                .collect();
            let scale = <T as Real>::from_f64(self.scale);
            cpu::par_tasks(tasks, |_, (i, dq, dk, dv)| {
                let (bg, c) = (*i / n_chunks, *i % n_chunks);
                let (bi, g) = (bg / hkv, bg % hkv);
                let qr = bg * gq..(bg + 1) * gq;
                let kv = bg * tk * d..(bg + 1) * tk * d;
                let task = BwdTask {
                    dims,
                    causal: self.causal,
                    scale,
                    b: bi,
                    g,
                    c0: c * kc,
                    q: &q[qr.clone()],
                    o: &o[qr.clone()],
                    d_o: &d_o[qr],
                    lse: &lse[bg * group * tq..(bg + 1) * group * tq],
                    k: &k[kv.clone()],
                    v: &v[kv],
                    mask,
                };
                let len = BwdTask::<T>::scratch_len(&dims, dk.len() / d);
                with_scratch(len, |s| bwd_task(&task, dq, dk, dv, s));
            });
            if n_chunks > 1 {
                // dq = the chunks' partials added in chunk order.
                let parts = &partial;
                cpu::par_tasks(dq.chunks_mut(gq).collect(), |bg, dq| {
                    for c in 0..n_chunks {
                        let p = &parts[(bg * n_chunks + c) * gq..(bg * n_chunks + c + 1) * gq];
                        for (o, &x) in dq.iter_mut().zip(p) {
                            *o = if c == 0 { x } else { *o + x };
                        }
                    }
                });
            }
        })?;
        Ok(out)
    }
}

/// (q, k, v) -> (dq, dk, dv) flattened and concatenated, for the forward above; the output,
/// its gradient and L ride along in the op (they are not differentiated: this op has no
/// backward, and its q, k, v arguments make a second derivative reach it and fail).
struct AttentionBackward {
    spec: Spec,
    o: Tensor,
    d_o: Tensor,
    lse: Tensor,
}

impl AttentionBackward {
    fn bwd<T: Work2>(
        &self,
        (qs, ql): Input,
        (ks, kl): Input,
        (vs, vl): Input,
    ) -> Result<CpuStorage> {
        let Dims { b, h, tq, d, .. } = self.spec.dims;
        expect_qkv(&self.spec.dims, ql, kl, vl)?;
        let (q, k, v) = (
            T::load(NAME, qs, ql)?,
            T::load(NAME, ks, kl)?,
            T::load(NAME, vs, vl)?,
        );
        let (og, ol) = self.o.storage_and_layout();
        let (dg, dl) = self.d_o.storage_and_layout();
        let (lg, ll) = self.lse.storage_and_layout();
        cpu::expect_dims(NAME, "the output", ol, &[b, h, tq, d])?;
        cpu::expect_dims(NAME, "the output gradient", dl, &[b, h, tq, d])?;
        cpu::expect_dims(NAME, "the saved log-sum-exp", ll, &[b, h, tq])?;
        let o = T::load(NAME, cpu_storage(&og, "the output")?, ol)?;
        let d_o = T::load(NAME, cpu_storage(&dg, "the output gradient")?, dl)?;
        let lse = T::load(NAME, cpu_storage(&lg, "the saved log-sum-exp")?, ll)?;
        let out = self.spec.backward(&q, &k, &v, &o, &d_o, &lse)?;
        Ok(T::store(out, qs.dtype()))
    }
}

/// `x` cut into blocks of `outer`, each cut into pieces of `inner` (the last one shorter).
fn chunks<T>(x: &mut [T], outer: usize, inner: usize) -> impl Iterator<Item = &mut [T]> {
    x.chunks_mut(outer).flat_map(move |x| x.chunks_mut(inner))
}

impl CustomOp3 for AttentionBackward {
    fn name(&self) -> &'static str {
        "cotyle-attention-backward"
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
        let out = match cpu::work(NAME, s1.dtype())? {
            Work::F32 => self.bwd::<f32>(args.0, args.1, args.2)?,
            Work::F64 => self.bwd::<f64>(args.0, args.1, args.2)?,
        };
        let dims = self.spec.dims;
        let len = dims.b * (dims.h * dims.tq + 2 * dims.hkv * dims.tk) * dims.d;
        Ok((out, Shape::from_dims(&[len])))
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
        let params = self.spec.params();
        let saved = crate::cuda::AttentionSaved {
            o: &self.o,
            d_o: &self.d_o,
            lse: &self.lse,
        };
        crate::cuda::attention_bwd(&params, (s1, l1), (s2, l2), (s3, l3), &saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn inputs(dims: [usize; 6], dtype: DType) -> Vec<Tensor> {
        let [b, h, hkv, tq, tk, d] = dims;
        let v = |n: usize, s: f32| (0..n).map(|i| ((i as f32) * s).sin()).collect::<Vec<_>>();
        let dev = &Device::Cpu;
        [
            (b * h * tq * d, 0.37, [b, h, tq, d]),
            (b * hkv * tk * d, 0.11, [b, hkv, tk, d]),
            (b * hkv * tk * d, 0.23, [b, hkv, tk, d]),
        ]
        .into_iter()
        .map(|(n, s, shape)| {
            Tensor::from_vec(v(n, s), &shape[..], dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        })
        .collect()
    }

    /// Forward and gradients, as bits, on the current build; all finite (the scratch is
    /// poisoned with NaN in unit tests, see `with_scratch`).
    fn bits(dims: [usize; 6], causal: bool, mask: Option<&Tensor>) -> Vec<Vec<u32>> {
        let t = inputs(dims, DType::F32);
        let vars: Vec<Var> = t.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let opts = AttentionOpts {
            causal,
            scale: None,
            mask,
        };
        let y = attention(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            &opts,
        )
        .unwrap();
        let r = y.sin().unwrap();
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let mut ts = vec![y];
        ts.extend(vars.iter().map(|v| g.get(v).unwrap().clone()));
        ts.iter()
            .map(|t| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        assert!(f.is_finite(), "attention {dims:?}: {f}");
                        f.to_bits()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_simd_build_gives_identical_bits() {
        // Blocks of 16 keys visible to blocks of 16 queries (window attention), with one
        // query row seeing nothing.
        let mut window: Vec<f32> = (0..70 * 70)
            .map(|x| match x / 70 / 16 == x % 70 / 16 {
                true => 0.0,
                false => f32::NEG_INFINITY,
            })
            .collect();
        window[3 * 70..4 * 70].fill(f32::NEG_INFINITY);
        let window = Tensor::from_vec(window, (70, 70), &Device::Cpu).unwrap();
        // Several query and key blocks, odd D, GQA; few rows over many keys (two key chunks in
        // the backward); D = 80 (a 64 + 16 tile); D a multiple of 16 (v and k read in place).
        for (dims, causal, mask) in [
            ([2, 4, 2, 70, 70, 33], true, None),
            ([1, 2, 2, 70, 70, 33], false, Some(&window)),
            ([1, 2, 1, 5, 300, 64], false, None),
            ([1, 1, 1, 130, 130, 80], true, None),
            ([1, 2, 1, 20, 40, 32], false, None),
        ] {
            simd::assert_builds_agree(&format!("attention {dims:?}"), || bits(dims, causal, mask));
        }
    }

    #[test]
    fn second_derivative_is_an_error() -> Result<()> {
        let t = inputs([1, 2, 1, 3, 4, 5], DType::F64);
        let q = Var::from_tensor(&t[0])?;
        let dims = check(q.as_tensor(), &t[1], &t[2])?;
        let y = attention(q.as_tensor(), &t[1], &t[2], &AttentionOpts::default())?;
        let lse = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu)?;
        let packed = q.as_tensor().apply_op3(
            &t[1],
            &t[2],
            AttentionBackward {
                spec: Spec {
                    dims,
                    causal: false,
                    scale: 1.0,
                    mask: None,
                },
                o: y.detach(),
                d_o: y.ones_like()?,
                lse,
            },
        )?;
        let err = packed.sum_all()?.backward().unwrap_err();
        assert!(
            err.to_string().contains("cotyle-attention-backward"),
            "{err}"
        );
        Ok(())
    }
}
