//! Rotary position embedding (Su et al. 2021, "RoFormer", section 3.4) with a backward:
//! candle's `candle_nn::rotary_emb::{rope, rope_i}` have no `bwd`, so gradients through them
//! are dropped silently (DESIGN.md, "Rules of the house").
//!
//! x: (B, H, T, D) with D even; cos, sin: (T, D/2), row t holding cos/sin(t * theta_i). Each
//! row of x is rotated by pairs, with c = cos[t], s = sin[t] (i < D/2):
//! - [`RopeLayout::Half`] (rotate_half: Hugging Face Llama/Qwen2, candle `rope`), pairs
//!   (i, i + D/2): y_i = x_i c_i - x_{i+D/2} s_i,  y_{i+D/2} = x_{i+D/2} c_i + x_i s_i.
//! - [`RopeLayout::Interleaved`] (the RoFormer paper, GPT-J, candle `rope_i`), pairs
//!   (2i, 2i+1): y_{2i} = x_{2i} c_i - x_{2i+1} s_i,  y_{2i+1} = x_{2i} s_i + x_{2i+1} c_i.
//!
//! Position offsets (KV caches): row t of cos/sin is used for row t of x, so for new tokens
//! at positions p..p+T the caller passes `cos.narrow(0, p, T)` and `sin.narrow(0, p, T)`
//! (any strides are fine). cos/sin must be exactly (T, D/2): a longer table is an error,
//! not silently cut.
//!
//! Backward: the op is a rotation, linear in x, so dx = R^T dy is the same op with -sin
//! (exact: negating sin rounds nothing). That op has the same kind of backward, so it is
//! differentiable itself (candle detaches gradients unless `CANDLE_GRAD_DO_NOT_DETACH` is set). cos and sin get **no gradient** (`bwd` returns None for them): they
//! are fixed tables in every model we build; do not compute them from trained variables.
//!
//! CPU: f32 and f64 (bf16/f16 computed in f32), any strides (for example x as
//! (B, T, H, D).transpose(1, 2)), rows in parallel. CUDA (`cuda` feature): the same, reading
//! x, cos and sin through their strides without a copy (`crate::cuda::rope`,
//! `kernels/cuda/rope.cu`).

use crate::cpu::{self, Elem};
use crate::simd::{multiversion, Real};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

const NAME: &str = "rope";

/// Which elements of a row of D form the rotated pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs (i, i + D/2): "rotate_half", as Hugging Face Llama and Qwen2.
    Half,
    /// Pairs (2i, 2i + 1), as the RoFormer paper and GPT-J.
    Interleaved,
}

/// Rotary embedding of x, differentiable in x (not in cos/sin; see the module header).
/// x: (B, H, T, D), D even; cos, sin: (T, D/2) -> (B, H, T, D), same dtype. Errors naming the
/// shapes when D is odd or cos/sin are not (T, D/2), and when dtypes or devices differ.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    check(x, cos, sin)?;
    x.apply_op3(
        cos,
        sin,
        Rope {
            layout,
            transpose: false,
        },
    )
}

/// Errors unless x is (B, H, T, D) with D even and cos, sin are (T, D/2) of x's dtype and
/// device.
pub(crate) fn check(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
    let &[_, _, t, d] = x.dims() else {
        bail!("{NAME}: x must be (B, H, T, D), got shape {:?}", x.dims());
    };
    check_tables(NAME, ("x", x), t, d, cos, sin)
}

/// Errors unless D is even and cos, sin are (T, D/2) of x's dtype and device; `op` and the
/// name of x head the messages (`attention_packed` rotates heads of its packed qkv).
pub(crate) fn check_tables(
    op: &str,
    (x_name, x): (&str, &Tensor),
    t: usize,
    d: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<()> {
    if !d.is_multiple_of(2) {
        bail!(
            "{op}: {x_name} has shape {:?}; its head width D = {d} must be even for RoPE",
            x.dims()
        );
    }
    for (what, p) in [("cos", cos), ("sin", sin)] {
        if p.dims() != [t, d / 2] {
            bail!(
                "{op}: {what} has shape {:?} but {x_name} has shape {:?}; {what} must be [{t}, {}] \
                 (T, D/2; narrow the table to the positions of {x_name})",
                p.dims(),
                x.dims(),
                d / 2
            );
        }
        crate::check_same_kind(op, (what, p), (x_name, x))?;
    }
    Ok(())
}

/// Rotates one row x of D at one position (c, s: its cos and sin rows of D/2) into y, by
/// `neg` * sin (-1: the transpose). Shared with `attention_packed`, which rotates rows as it
/// gathers them out of its packed input.
#[inline(always)]
pub(crate) fn rotate<T: Real>(x: &[T], c: &[T], s: &[T], y: &mut [T], interleaved: bool, neg: T) {
    if interleaved {
        let pairs = x.chunks_exact(2).zip(y.chunks_exact_mut(2));
        for (((x, y), &c), &s) in pairs.zip(c).zip(s) {
            let s = s * neg;
            y[0] = x[0] * c - x[1] * s;
            y[1] = x[0] * s + x[1] * c;
        }
    } else {
        let (x1, x2) = x.split_at(x.len() / 2);
        let (y1, y2) = y.split_at_mut(x.len() / 2);
        for ((((o1, o2), (&a, &b)), &c), &s) in y1
            .iter_mut()
            .zip(y2.iter_mut())
            .zip(x1.iter().zip(x2))
            .zip(c)
            .zip(s)
        {
            let s = s * neg;
            *o1 = a * c - b * s;
            *o2 = b * c + a * s;
        }
    }
}

multiversion! {
    /// One block of rows starting at row r0 of x (rows are (b, h, t) in row-major order, so
    /// row r has position t = r % T). `neg` is -1 to apply the transpose, else 1.
    #[allow(clippy::too_many_arguments)]
    fn rope_block<T: Real>(
        x: &[T],
        cos: &[T],
        sin: &[T],
        y: &mut [T],
        d: usize,
        t_len: usize,
        r0: usize,
        interleaved: bool,
        neg: T,
    ) {
        let h = d / 2;
        for (k, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
            let t = (r0 + k) % t_len;
            let (c, s) = (&cos[t * h..(t + 1) * h], &sin[t * h..(t + 1) * h]);
            rotate(x, c, s, y, interleaved, neg);
        }
    }
}

/// (x, cos, sin) -> rope(x), or its transpose (rope with -sin), which is its backward.
struct Rope {
    layout: RopeLayout,
    transpose: bool,
}

fn fwd<T: Elem>(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
    op: &Rope,
) -> Result<(CpuStorage, Shape)> {
    let &[_, _, t, d] = l1.dims() else {
        bail!("{NAME}: x must be (B, H, T, D), got shape {:?}", l1.dims());
    };
    if d % 2 != 0 {
        bail!("{NAME}: x has shape {:?}; D must be even", l1.dims());
    }
    cpu::expect_dims(NAME, "cos", l2, &[t, d / 2])?;
    cpu::expect_dims(NAME, "sin", l3, &[t, d / 2])?;
    let (x, c, s) = (
        T::load(NAME, s1, l1)?,
        T::load(NAME, s2, l2)?,
        T::load(NAME, s3, l3)?,
    );
    let mut y = vec![T::ZERO; x.len()];
    let interleaved = op.layout == RopeLayout::Interleaved;
    let neg = if op.transpose {
        T::ZERO - T::ONE
    } else {
        T::ONE
    };
    cpu::par_rows(&mut y, d, |r0, out| {
        let xs = &x[r0 * d..r0 * d + out.len()];
        rope_block(xs, &c, &s, out, d, t, r0, interleaved, neg)
    });
    Ok((T::store(y, s1.dtype()), l1.shape().clone()))
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        match (self.layout, self.transpose) {
            (RopeLayout::Half, false) => "cotyle-rope",
            (RopeLayout::Half, true) => "cotyle-rope-backward",
            (RopeLayout::Interleaved, false) => "cotyle-rope-interleaved",
            (RopeLayout::Interleaved, true) => "cotyle-rope-interleaved-backward",
        }
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
        cpu::by_precision!(NAME, s1.dtype() => fwd(args.0, args.1, args.2, self))
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
        let interleaved = self.layout == RopeLayout::Interleaved;
        crate::cuda::rope((s1, l1), (s2, l2), (s3, l3), interleaved, self.transpose)
    }

    /// dx = R^T dy: the same rotation with -sin. No gradient for cos and sin.
    fn bwd(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !x.track_op() {
            return Ok((None, None, None));
        }
        let back = Rope {
            layout: self.layout,
            transpose: !self.transpose,
        };
        Ok((Some(dy.apply_op3(cos, sin, back)?), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward and x gradient of both layouts, as f32 bits, on the current build.
    fn bits() -> Vec<Vec<u32>> {
        let dev = &Device::Cpu;
        let v = |n: usize, k: f32| (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<_>>();
        let (t, d) = (37, 34);
        let x = Var::from_vec(v(2 * 3 * t * d, 0.37), (2, 3, t, d), dev).unwrap();
        let c = Tensor::from_vec(v(t * d / 2, 0.11), (t, d / 2), dev).unwrap();
        let s = Tensor::from_vec(v(t * d / 2, 0.23), (t, d / 2), dev).unwrap();
        let mut out = Vec::new();
        for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
            let y = rope(&x, &c, &s, layout).unwrap();
            let g = (&y * &y).unwrap().sum_all().unwrap().backward().unwrap();
            for t in [y, g.get(&x).unwrap().clone()] {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                out.push(v.iter().map(|f| f.to_bits()).collect());
            }
        }
        out
    }

    #[test]
    fn every_simd_build_gives_identical_bits() {
        crate::simd::assert_builds_agree("rope", bits);
    }
}
