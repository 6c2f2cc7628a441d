//! A linear layer, y = x Wᵀ + b, as one differentiable op with one backward op. Composed of
//! candle ops (`x.reshape((N, in)).matmul(&w.t())?.broadcast_add(&b)`) it is 4-5 graph nodes,
//! and candle's backprop allocates a zero gradient and adds into it for each node, plus a
//! reduce for the bias gradient; here it is one node forward and one op backward.
//!
//! Shapes: x (…, in), weight (out, in) (torch.nn.Linear's layout), bias (out) or none ->
//! y (…, out). The leading dims of x are flattened to N rows:
//!   forward:   y (N, out) = x (N, in) · Wᵀ (in, out) + b
//!   backward:  dx (N, in) = dy (N, out) · W (out, in)
//!              dW (out, in) = dyᵀ (out, N) · x (N, in)
//!              db (out) = sum over the N rows of dy
//! The backward op computes only the gradients whose input tracks them, packed into one flat
//! buffer [dx | dW | db] that `bwd` splits with narrow + reshape (views, no copies). It has no
//! backward of its own: a second derivative is an error, not a silent zero.
//!
//! The matmuls are candle's own backend matmul (`BackendStorage::matmul`: the gemm crate on
//! CPU, cuBLAS on CUDA), called on the storages with 2-D layouts: Wᵀ and dyᵀ are transposed
//! layouts of the same buffers, never copies. An operand is copied to a dense buffer first
//! only when the backend's matmul cannot take its layout: x whose leading dims do not merge
//! into one row stride; on CPU, a matrix with no unit stride or a broadcast (zero) stride; on
//! CUDA, anything but dense row- or column-major, as cuBLAS needs. f32, f64, f16 and bf16
//! (candle widens bf16 to f32 for its CPU gemm); the bias add and the bias gradient run in the
//! crate's working precision (f32 for the halves).
//!
//! CPU: bias add over blocks of rows in parallel and db as a deterministic column sum
//! (`cpu::par_col_sums`), both vectorised. CUDA (`cuda` feature): a grid-stride bias add and
//! a two-pass deterministic column sum (`crate::cuda::linear`, `kernels/cuda/linear.cu`).
//! Results are reproducible run to run and independent of the thread pool (tested): the
//! gemm splits the output across threads, never a dot product's sum.

use crate::cpu::{self, Elem};
use crate::simd::multiversion;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

mod few_rows;

const NAME: &str = "linear";

/// y = x Wᵀ + b, differentiable in `x`, `weight` and `bias`.
/// x: (…, in), weight: (out, in) (torch.nn.Linear's layout), bias: (out) or none -> (…, out),
/// same dtype. An error naming the shapes if weight is not (out, in) or bias not (out).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    check(x, weight, bias)?;
    match bias {
        Some(b) => x.apply_op3(weight, b, Linear),
        None => x.apply_op2(weight, LinearNoBias),
    }
}

/// The argument checks of [`linear`] (and `reference::linear`).
pub(crate) fn check(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    crate::check_rank(NAME, x)?;
    let inp = x.dims()[x.rank() - 1];
    if weight.rank() != 2 || weight.dims()[1] != inp {
        bail!(
            "{NAME}: weight has shape {:?} but x has shape {:?}; weight must be [out, {inp}] \
             (torch.nn.Linear's (out, in), in = the last dim of x)",
            weight.dims(),
            x.dims()
        );
    }
    crate::check_same_kind(NAME, ("weight", weight), ("x", x))?;
    if let Some(b) = bias {
        let out = weight.dims()[0];
        if b.dims() != [out] {
            bail!(
                "{NAME}: bias has shape {:?} but weight has shape {:?}; bias must be [{out}] \
                 (the output features)",
                b.dims(),
                weight.dims()
            );
        }
        crate::check_same_kind(NAME, ("bias", b), ("x", x))?;
    }
    Ok(())
}

/// (N, in, out) for x: (…, in) and weight: (out, in); an error naming the shapes otherwise.
fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    let inp = cpu::last_dim(NAME, x)?;
    match w.dims() {
        &[out, i] if i == inp => Ok((rows(x.dims()), inp, out)),
        d => bail!(
            "{NAME}: weight has shape {d:?} but x has shape {:?}; weight must be [out, {inp}]",
            x.dims()
        ),
    }
}

/// N: the product of the leading dims of x (…, in).
fn rows(x: &[usize]) -> usize {
    x[..x.len().saturating_sub(1)].iter().product()
}

/// The shape of y: x's with the last dim replaced by `out`.
fn out_shape(x: &Layout, out: usize) -> Shape {
    let mut d = x.dims().to_vec();
    if let Some(last) = d.last_mut() {
        *last = out;
    }
    Shape::from(d)
}

/// What the op needs from a backend besides `BackendStorage`: which operand layouts its matmul
/// takes, the bias add, the bias gradient, and packing of the gradients.
pub(crate) trait Backend:
    BackendStorage<Device: BackendDevice<Storage = Self>> + Sized
{
    /// Whether the backend's matmul takes an operand with the 2-D layout `l` as it is.
    fn takes(l: &Layout) -> bool;
    /// y (N, out), a dense buffer from the matmul, += bias (out) read through `bl`, in place.
    fn add_bias(y: &mut Self, b: &Self, bl: &Layout, out: usize) -> Result<()>;
    /// The column sums (out) of dy, (N, out) read through the 2-D layout `l`.
    fn col_sums(dy: &Self, l: &Layout) -> Result<Self>;
    /// The dense buffers `parts` one after the other, in one buffer.
    fn concat(parts: Vec<Self>) -> Result<Self>;
    /// y (N, out) = x (N, in) · Wᵀ by a path for few rows (decoding), when the backend has
    /// one for these operands (2-D layouts as `matrix` gives them); None: use the matmul.
    fn few_rows(
        _x: (&Self, &Layout),
        _w: (&Self, &Layout),
        _dims: (usize, usize, usize),
    ) -> Option<Self> {
        None
    }
}

/// Does a 2-D operand (r, c) with strides (s0, s1) suit the CPU gemm as it is? It takes any
/// strides, but a unit stride along one dim keeps its packing fast; zero strides (broadcasts)
/// are left to a copy.
fn cpu_takes(l: &Layout) -> bool {
    let (d, s) = (l.dims(), l.stride());
    let ok = |i: usize| d[i] == 1 || s[i] != 0;
    ok(0) && ok(1) && (s[0] == 1 || s[1] == 1 || d[0] == 1 || d[1] == 1)
}

/// Does cuBLAS take a 2-D operand (r, c) with strides (s0, s1)? Dense row-major or dense
/// column-major only (its leading dimension is the other extent), as candle's `gemm_config`.
#[cfg(feature = "cuda")]
fn cuda_takes(l: &Layout) -> bool {
    let ((r, c), s) = ((l.dims()[0], l.dims()[1]), l.stride());
    let row_major = (s[1] == 1 || c == 1) && (s[0] == c || r == 1);
    let col_major = (s[0] == 1 || r == 1) && (s[1] == r || c == 1);
    row_major || col_major
}

/// `l`, of shape (…, cols), as a 2-D (rows, cols) layout of the same elements, when its
/// leading dims merge into one (row i starts at offset + i * row stride); None otherwise.
fn as_2d(l: &Layout, rows: usize, cols: usize) -> Option<Layout> {
    let (d, s) = (l.dims(), l.stride());
    let last = d.len() - 1;
    let mut row_stride = None;
    // Walking the leading dims inwards-out: each must step over whole blocks of the next.
    let mut next_block: Option<usize> = None;
    for i in (0..last).rev() {
        if d[i] == 1 {
            continue;
        }
        match next_block {
            None => row_stride = Some(s[i]),
            Some(b) if s[i] == b => {}
            Some(_) => return None,
        }
        next_block = Some(s[i] * d[i]);
    }
    // One row or none: its stride is never used; the dense one suits every backend.
    let rs = row_stride.unwrap_or(cols);
    let cs = if cols == 1 { 1 } else { s[last] };
    Some(Layout::new(
        Shape::from((rows, cols)),
        vec![rs, cs],
        l.start_offset(),
    ))
}

/// An operand of a matmul: the caller's storage or a dense copy of it, with its 2-D layout.
enum Mat<'a, S> {
    Borrowed(&'a S, Layout),
    Owned(S, Layout),
}

impl<S> Mat<'_, S> {
    fn get(&self) -> (&S, &Layout) {
        match self {
            Mat::Borrowed(s, l) => (s, l),
            Mat::Owned(s, l) => (s, l),
        }
    }

    /// The transpose, as a layout of the same buffer.
    fn t(&self) -> Result<(&S, Layout)> {
        let (s, l) = self.get();
        Ok((s, l.transpose(0, 1)?))
    }
}

/// `s` seen through `l` (…, cols) as a (rows, cols) matrix the backend's matmul takes: a view
/// when possible, else a dense copy (candle's strided copy, as `Tensor::contiguous`).
fn matrix<'a, S: Backend>(s: &'a S, l: &Layout, rows: usize, cols: usize) -> Result<Mat<'a, S>> {
    if let Some(m) = as_2d(l, rows, cols).filter(|m| S::takes(m)) {
        return Ok(Mat::Borrowed(s, m));
    }
    // SAFETY: the strided copy below writes every element.
    let mut dst = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
    s.copy_strided_src(&mut dst, 0, l)?;
    Ok(Mat::Owned(dst, Layout::contiguous((rows, cols))))
}

/// A dense (m, n) = lhs (m, k) · rhs (k, n) by candle's matmul; zeros when k = 0 (and empty
/// when m or n is), which the backends' gemms are not asked to handle.
fn mm<S: Backend>(
    (ls, ll): (&S, &Layout),
    (rs, rl): (&S, &Layout),
    (m, n, k): (usize, usize, usize),
) -> Result<S> {
    if m * n * k == 0 {
        return ls.device().zeros_impl(&Shape::from((m, n)), ls.dtype());
    }
    ls.matmul(rs, (1, m, n, k), ll, rl)
}

type Arg<'a, S> = (&'a S, &'a Layout);

/// y (…, out) = x Wᵀ + b.
fn forward<S: Backend>(x: Arg<S>, w: Arg<S>, b: Option<Arg<S>>) -> Result<(S, Shape)> {
    let (n, inp, out) = dims(x.1, w.1)?;
    if let Some((_, bl)) = b {
        cpu::expect_dims(NAME, "bias", bl, &[out])?;
    }
    let mut y = if n * out * inp == 0 {
        x.0.device()
            .zeros_impl(&Shape::from((n, out)), x.0.dtype())?
    } else {
        let xm = matrix(x.0, x.1, n, inp)?;
        let wm = matrix(w.0, w.1, out, inp)?;
        match S::few_rows(xm.get(), wm.get(), (n, out, inp)) {
            Some(y) => y,
            None => {
                let wt = wm.t()?;
                mm(xm.get(), (wt.0, &wt.1), (n, out, inp))?
            }
        }
    };
    if let Some((bs, bl)) = b {
        S::add_bias(&mut y, bs, bl, out)?;
    }
    Ok((y, out_shape(x.1, out)))
}

/// Which gradients the backward op computes (those whose input tracks them).
#[derive(Debug, Clone, Copy)]
struct Needs {
    dx: bool,
    dw: bool,
    db: bool,
}

impl Needs {
    /// Element counts of dx, dW and db in the packed result (0 for those not computed).
    fn lens(self, (n, inp, out): (usize, usize, usize)) -> [usize; 3] {
        [
            if self.dx { n * inp } else { 0 },
            if self.dw { out * inp } else { 0 },
            if self.db { out } else { 0 },
        ]
    }
}

/// (x, W, dy) -> [dx | dW | db], flat, each present only when needed.
fn backward<S: Backend>(x: Arg<S>, w: Arg<S>, dy: Arg<S>, need: Needs) -> Result<(S, Shape)> {
    let (n, inp, out) = dims(x.1, w.1)?;
    cpu::expect_dims(
        NAME,
        "the output gradient",
        dy.1,
        out_shape(x.1, out).dims(),
    )?;
    let total: usize = need.lens((n, inp, out)).iter().sum();
    let shape = Shape::from(total);
    let dev = x.0.device();
    if n * out == 0 {
        // No output elements: every gradient is zero (or empty).
        return Ok((dev.zeros_impl(&shape, x.0.dtype())?, shape));
    }
    let dym = matrix(dy.0, dy.1, n, out)?;
    let mut parts = Vec::with_capacity(3);
    if need.dx {
        let wm = matrix(w.0, w.1, out, inp)?;
        parts.push(mm(dym.get(), wm.get(), (n, inp, out))?);
    }
    if need.dw {
        let xm = matrix(x.0, x.1, n, inp)?;
        let dyt = dym.t()?;
        parts.push(mm((dyt.0, &dyt.1), xm.get(), (out, inp, n))?);
    }
    if need.db {
        let (s, l) = dym.get();
        parts.push(S::col_sums(s, l)?);
    }
    Ok((S::concat(parts)?, shape))
}

/// The gradients of x, W and b (if any) from dy, by one [`LinearBackward`] op.
fn grads(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let need = Needs {
        dx: x.track_op(),
        dw: w.track_op(),
        db: b.is_some_and(|b| b.track_op()),
    };
    if !(need.dx || need.dw || need.db) {
        return Ok((None, None, None));
    }
    let packed = x.apply_op3(w, dy, LinearBackward(need))?;
    let inp = x.dim(candle_core::D::Minus1)?;
    let out = w.dim(0)?;
    let n = rows(x.dims());
    let [lx, lw, lb] = need.lens((n, inp, out));
    let dx = need
        .dx
        .then(|| packed.narrow(0, 0, lx)?.reshape(x.shape()))
        .transpose()?;
    let dw = need
        .dw
        .then(|| packed.narrow(0, lx, lw)?.reshape((out, inp)))
        .transpose()?;
    let db = need.db.then(|| packed.narrow(0, lx + lw, lb)).transpose()?;
    Ok((dx, dw, db))
}

/// Forward with bias: (x, weight, bias) -> y.
struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "cotyle-linear"
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
        forward((s1, l1), (s2, l2), Some((s3, l3)))
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
        forward((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        grads(x, w, Some(b), dy)
    }
}

/// Forward without bias: (x, weight) -> y.
struct LinearNoBias;

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "cotyle-linear-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward((s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        forward((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = grads(x, w, None, dy)?;
        Ok((dx, dw))
    }
}

/// (x, weight, dy) -> [dx | dW | db] (flat; the parts in `Needs`).
struct LinearBackward(Needs);

impl CustomOp3 for LinearBackward {
    fn name(&self) -> &'static str {
        "cotyle-linear-backward"
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
        backward((s1, l1), (s2, l2), (s3, l3), self.0)
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
        backward((s1, l1), (s2, l2), (s3, l3), self.0)
    }
}

multiversion! {
    /// Every row of y (rows of d) += b.
    fn add_rows<T: Real>(y: &mut [T], b: &[T], d: usize) {
        for row in y.chunks_exact_mut(d) {
            for (o, &v) in row.iter_mut().zip(b) {
                *o += v;
            }
        }
    }
}

multiversion! {
    /// acc (d) += every row of x (rows of d).
    fn acc_rows<T: Real>(x: &[T], acc: &mut [T], d: usize) {
        for row in x.chunks_exact(d) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    }
}

/// Every row of a half-precision y (rows of b.len()) += b, in f32, rounded once.
fn add_rows_half<H: Copy + Send>(
    y: &mut [H],
    b: &[f32],
    widen: fn(H) -> f32,
    narrow: fn(f32) -> H,
) {
    cpu::par_rows(y, b.len(), |_, blk| {
        for row in blk.chunks_exact_mut(b.len()) {
            for (o, &v) in row.iter_mut().zip(b) {
                *o = narrow(widen(*o) + v);
            }
        }
    })
}

fn col_sums_cpu<T: Elem>(dy: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    let (rows, d) = (l.dims()[0], l.dims()[1]);
    let v = T::load(NAME, dy, l)?;
    let sums = cpu::par_col_sums(rows, d, d, |r0, nr, acc| {
        acc_rows(&v[r0 * d..(r0 + nr) * d], acc, d)
    });
    Ok(T::store(sums, dy.dtype()))
}

impl Backend for CpuStorage {
    fn takes(l: &Layout) -> bool {
        cpu_takes(l)
    }

    /// f32 with at most `few_rows::FEW_ROWS` rows, both operands dense row-major.
    fn few_rows(
        (xs, xl): (&Self, &Layout),
        (ws, wl): (&Self, &Layout),
        (n, out, inp): (usize, usize, usize),
    ) -> Option<Self> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            return None;
        };
        if n > few_rows::FEW_ROWS {
            return None;
        }
        // (rows, cols) dense row-major from its start offset; a single row's stride is moot.
        let dense = |l: &Layout, rows: usize, cols: usize| {
            let s = l.stride();
            (rows == 1 || s[0] == cols) && (cols == 1 || s[1] == 1)
        };
        if !dense(xl, n, inp) || !dense(wl, out, inp) {
            return None;
        }
        let (xo, wo) = (xl.start_offset(), wl.start_offset());
        let y = few_rows::matmul_wt(&x[xo..xo + n * inp], &w[wo..wo + out * inp], n, inp, out);
        Some(CpuStorage::F32(y))
    }

    fn add_bias(y: &mut Self, b: &Self, bl: &Layout, out: usize) -> Result<()> {
        if out == 0 {
            return Ok(());
        }
        match y {
            CpuStorage::F32(v) => {
                let b = f32::load(NAME, b, bl)?;
                cpu::par_rows(v, out, |_, blk| add_rows(blk, &b, out));
            }
            CpuStorage::F64(v) => {
                let b = f64::load(NAME, b, bl)?;
                cpu::par_rows(v, out, |_, blk| add_rows(blk, &b, out));
            }
            CpuStorage::BF16(v) => {
                add_rows_half(v, &f32::load(NAME, b, bl)?, bf16::to_f32, bf16::from_f32)
            }
            CpuStorage::F16(v) => {
                add_rows_half(v, &f32::load(NAME, b, bl)?, f16::to_f32, f16::from_f32)
            }
            s => bail!(
                "{NAME}: dtype {:?} is not supported on CPU (f32, f64, bf16, f16)",
                s.dtype()
            ),
        }
        Ok(())
    }

    fn col_sums(dy: &Self, l: &Layout) -> Result<Self> {
        cpu::by_precision!(NAME, dy.dtype() => col_sums_cpu(dy, l))
    }

    fn concat(parts: Vec<Self>) -> Result<Self> {
        let mut parts = parts.into_iter();
        let Some(mut all) = parts.next() else {
            return Ok(CpuStorage::F32(Vec::new()));
        };
        // Appending to the first part (usually dx, the largest) saves copying it.
        for p in parts {
            match (&mut all, p) {
                (CpuStorage::F32(a), CpuStorage::F32(p)) => a.extend_from_slice(&p),
                (CpuStorage::F64(a), CpuStorage::F64(p)) => a.extend_from_slice(&p),
                (CpuStorage::BF16(a), CpuStorage::BF16(p)) => a.extend_from_slice(&p),
                (CpuStorage::F16(a), CpuStorage::F16(p)) => a.extend_from_slice(&p),
                (a, p) => bail!(
                    "{NAME}: cannot pack gradients of dtypes {:?} and {:?}",
                    a.dtype(),
                    p.dtype()
                ),
            }
        }
        Ok(all)
    }
}

#[cfg(feature = "cuda")]
impl Backend for candle_core::CudaStorage {
    fn takes(l: &Layout) -> bool {
        cuda_takes(l)
    }

    fn add_bias(y: &mut Self, b: &Self, bl: &Layout, out: usize) -> Result<()> {
        crate::cuda::linear_add_bias(y, b, bl, out)
    }

    fn col_sums(dy: &Self, l: &Layout) -> Result<Self> {
        crate::cuda::linear_col_sums(dy, l)
    }

    fn concat(parts: Vec<Self>) -> Result<Self> {
        crate::cuda::linear_concat(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dims_merge_when_they_step_over_whole_rows() {
        let t = |dims: &[usize], stride: &[usize]| {
            Layout::new(Shape::from(dims.to_vec()), stride.to_vec(), 3)
        };
        // Contiguous (2, 3, 4): rows of 4, row stride 4.
        let m = as_2d(&t(&[2, 3, 4], &[12, 4, 1]), 6, 4).unwrap();
        assert_eq!((m.stride(), m.start_offset()), (&[4usize, 1][..], 3));
        // Narrowed last dim: row stride 9 stays.
        let m = as_2d(&t(&[2, 3, 4], &[27, 9, 1]), 6, 4).unwrap();
        assert_eq!(m.stride(), &[9, 1]);
        // Size-1 dims are skipped; a lone row gets the dense stride.
        let m = as_2d(&t(&[1, 3, 1, 4], &[99, 4, 77, 1]), 3, 4).unwrap();
        assert_eq!(m.stride(), &[4, 1]);
        assert_eq!(
            as_2d(&t(&[1, 4], &[50, 1]), 1, 4).unwrap().stride(),
            &[4, 1]
        );
        // (B, T) swapped: the leading dims do not merge.
        assert!(as_2d(&t(&[2, 3, 4], &[4, 8, 1]), 6, 4).is_none());
        // A transposed 2-D x merges (one leading dim) but has a strided last dim.
        let m = as_2d(&t(&[5, 4], &[1, 5]), 5, 4).unwrap();
        assert!(cpu_takes(&m));
        #[cfg(feature = "cuda")]
        assert!(cuda_takes(&m));
        // Broadcast rows: left to a copy.
        assert!(!cpu_takes(&as_2d(&t(&[5, 4], &[0, 1]), 5, 4).unwrap()));
    }
}
