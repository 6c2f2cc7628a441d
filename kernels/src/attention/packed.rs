//! [`attention_packed`]: attention straight from the output of one fused q/k/v projection,
//! qkv (B, T, (H + 2 Hkv) D) -> (B, T, H D), with optional RoPE on q and k.
//!
//! Why: the usual composition (`reshape` to (B, T, 3, H, D), `permute`, three `get`s, RoPE,
//! attention, `transpose(1, 2)`, `reshape`) puts a candle graph node per view op, and their
//! backwards allocate: each `get` (a narrow) zero-pads a full-size gradient and the three are
//! added up, and the final reshape copies. Here one op goes forward and one backward op returns
//! dqkv in qkv's own layout.
//!
//! How (CPU): the op gathers q, k, v (and, in the backward, o and dO) into the dense
//! (B, H, T, D) buffers the kernels of `attention.rs` read, rotating q and k rows on the way
//! (RoPE as `crate::rope`, same arithmetic, same bits), runs those kernels through the same
//! [`Spec`] as `attention`, and scatters the results back per token: o to (B, T, H D); dq and
//! dk rotated back (RoPE with -sin, the transpose of the rotation), then dq, dk, dv side by
//! side into dqkv. Gathers and scatters run over rows in parallel and cost a few passes over
//! qkv, small next to attention's T² work and far below the graph nodes they replace; keeping
//! the kernels on dense buffers leaves their tiling (and the bits of `attention`) untouched.
//! The backward gathers q, k, v again from qkv (which the graph keeps anyway for the op's
//! argument) rather than keeping rotated copies from the forward: that is one cheap pass
//! against a second qkv-sized buffer held until the backward.
//!
//! CUDA (`cuda` feature, `crate::cuda::attention_packed`): the same kernels as `attention`
//! read q, k, v as strided views of qkv (q and k through the CUDA rope kernel when rotated),
//! and candle's strided and 2D copies do the scatters. The rope kernel writes the storage
//! dtype, so for bf16/f16 the GPU rounds rotated q, k (and dq, dk before rotating back) where
//! the CPU keeps them in f32: the two differ by about a unit in the last place there.

use super::{cpu_storage, keep_lse, saved_lse, Dims, Spec, Work2};
use crate::cpu::{self, Elem, Work};
use crate::rope::{self, RopeLayout};
use crate::simd::{multiversion, Real};
use crate::AttentionOpts;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

const NAME: &str = "attention_packed";

/// Attention over the packed output of one fused q/k/v projection, differentiable in `qkv`.
///
/// qkv: (B, T, (H + 2 Hkv) D) with H = `heads`, Hkv = `kv_heads` (H % Hkv == 0), per token
/// [q heads | k heads | v heads], each head D wide: the layout of a fused qkv `Linear` (q,
/// then k, then v; for H == Hkv torch's `qkv.view(B, T, 3, H, D)`). -> (B, T, H D), ready for
/// the output projection, qkv's dtype. The same as splitting q (B, H, T, D), k, v
/// (B, Hkv, T, D) out of qkv, applying `rope` to q and k when given, and calling [`attention`]
/// with `opts` (Tq = Tk = T: causal is plain causal; masks of the shapes `attention` takes;
/// fully masked rows give 0).
///
/// `rope`: (cos, sin, layout) as [`rope`](crate::rope()): cos and sin (T, D/2) in qkv's dtype,
/// D even; they get no gradient.
///
/// Errors naming the shapes when qkv is not rank 3, its last dim is not a multiple of
/// H + 2 Hkv, H is not a multiple of Hkv, the tables or the mask do not fit, and for other
/// dtypes or devices.
///
/// [`attention`]: crate::attention()
pub fn attention_packed(
    qkv: &Tensor,
    heads: usize,
    kv_heads: usize,
    rope: Option<(&Tensor, &Tensor, RopeLayout)>,
    opts: &AttentionOpts,
) -> Result<Tensor> {
    let &[b, t, w] = qkv.dims() else {
        bail!(
            "{NAME}: qkv must be (B, T, (H + 2 Hkv) D), got shape {:?}",
            qkv.dims()
        );
    };
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        bail!(
            "{NAME}: the query heads H = {heads} must be a positive multiple of the kv heads \
             Hkv = {kv_heads} (qkv {:?})",
            qkv.dims()
        );
    }
    let per = heads + 2 * kv_heads;
    if !w.is_multiple_of(per) {
        bail!(
            "{NAME}: qkv has shape {:?}; its last dim {w} must be (H + 2 Hkv) D = {per} D for \
             H = {heads}, Hkv = {kv_heads}",
            qkv.dims()
        );
    }
    let d = w / per;
    let dims = Dims {
        b,
        h: heads,
        hkv: kv_heads,
        tq: t,
        tk: t,
        d,
    };
    let rope = match rope {
        Some((cos, sin, layout)) => {
            rope::check_tables(NAME, ("qkv", qkv), t, d, cos, sin)?;
            Some(Rotary {
                cos: cos.detach(),
                sin: sin.detach(),
                layout,
            })
        }
        None => None,
    };
    qkv.apply_op1(PackedAttention {
        spec: Spec::new(dims, opts, ("qkv", qkv))?,
        rope,
        lse: Mutex::new(None),
    })
}

/// The RoPE of q and k: tables (T, D/2) in qkv's dtype, on its device (no gradient).
#[derive(Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
}

impl Rotary {
    /// (cos, sin, interleaved) for the CUDA path.
    #[cfg(feature = "cuda")]
    fn cuda(&self) -> crate::cuda::PackedRope<'_> {
        (&self.cos, &self.sin, self.layout == RopeLayout::Interleaved)
    }
}

/// The tables loaded in the working precision, row t of D/2 for position t.
struct Tables<'a, T> {
    cos: &'a [T],
    sin: &'a [T],
    half: usize,
    interleaved: bool,
}

impl<T: Real> Tables<'_, T> {
    /// Rotates row x at position t into y (`neg` = -1: back, the transpose).
    #[inline(always)]
    fn rotate(&self, x: &[T], t: usize, y: &mut [T], neg: T) {
        let r = t * self.half..(t + 1) * self.half;
        rope::rotate(
            x,
            &self.cos[r.clone()],
            &self.sin[r],
            y,
            self.interleaved,
            neg,
        );
    }
}

/// Runs `f` with the tables of `rope` loaded (None without RoPE).
fn with_tables<T: Elem, R>(
    rope: Option<&Rotary>,
    f: impl FnOnce(Option<&Tables<T>>) -> Result<R>,
) -> Result<R> {
    let Some(r) = rope else {
        return f(None);
    };
    let (cg, cl) = r.cos.storage_and_layout();
    let (sg, sl) = r.sin.storage_and_layout();
    let cos = T::load(NAME, cpu_storage(&cg, "cos")?, cl)?;
    let sin = T::load(NAME, cpu_storage(&sg, "sin")?, sl)?;
    f(Some(&Tables {
        cos: &cos,
        sin: &sin,
        half: cl.dims()[1],
        interleaved: r.layout == RopeLayout::Interleaved,
    }))
}

/// Heads h0..h0 + n of x (B, T, W) with rows of D: what `split` gathers.
struct Split<'a, T> {
    x: &'a [T],
    w: usize,
    h0: usize,
    n: usize,
    t: usize,
    d: usize,
    rot: Option<&'a Tables<'a, T>>,
}

multiversion! {
    /// Rows r0.. of the (B, n, T, D) gather of `s` into `out`: row (b, h, t) is
    /// x[b, t, (h0 + h) D..][..D], rotated when `s.rot` is given.
    fn split_block<T: Real>(s: &Split<T>, r0: usize, out: &mut [T]) {
        let (t, d) = (s.t, s.d);
        for (k, y) in out.chunks_exact_mut(d).enumerate() {
            let (bh, ti) = ((r0 + k) / t, (r0 + k) % t);
            let (bi, hi) = (bh / s.n, bh % s.n);
            let x = &s.x[(bi * t + ti) * s.w + (s.h0 + hi) * d..][..d];
            match s.rot {
                Some(r) => r.rotate(x, ti, y, T::ONE),
                None => y.copy_from_slice(x),
            }
        }
    }
}

/// The dense (B, n, T, D) buffer of heads h0..h0 + n of x (B, T, W), rows in parallel.
fn split<T: Real>(s: &Split<T>, b: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; b * s.n * s.t * s.d];
    cpu::par_rows(&mut out, s.d, |r0, blk| split_block(s, r0, blk));
    out
}

/// q (B, H, T, D), k and v (B, Hkv, T, D) out of qkv (B, T, W), q and k rotated by `rot`.
fn split_qkv<T: Real>(x: &[T], dims: &Dims, rot: Option<&Tables<T>>) -> (Vec<T>, Vec<T>, Vec<T>) {
    let Dims {
        b, h, hkv, tq, d, ..
    } = *dims;
    let part = |h0: usize, n: usize, rot: Option<&Tables<T>>| {
        let s = Split {
            x,
            w: (h + 2 * hkv) * d,
            h0,
            n,
            t: tq,
            d,
            rot,
        };
        split(&s, b)
    };
    (part(0, h, rot), part(h, hkv, rot), part(h + hkv, hkv, None))
}

/// One part of a merged (B, T, W) buffer: n heads from a dense (B, n, T, D) buffer, rotated
/// back (the transpose of RoPE) when `back`.
struct Part<'a, T> {
    x: &'a [T],
    n: usize,
    back: bool,
}

/// What `merge` scatters: the parts side by side per token, T tokens per batch row.
struct Merge<'a, T> {
    parts: &'a [Part<'a, T>],
    t: usize,
    d: usize,
    rot: Option<&'a Tables<'a, T>>,
}

multiversion! {
    /// Rows (tokens) r0.. of the merged (B, T, W) buffer: row (b, t) is, part after part, the
    /// part's heads' rows (b, h, t).
    fn merge_block<T: Real>(m: &Merge<T>, r0: usize, out: &mut [T]) {
        let (t, d) = (m.t, m.d);
        let w: usize = m.parts.iter().map(|p| p.n * d).sum();
        for (k, row) in out.chunks_exact_mut(w).enumerate() {
            let (bi, ti) = ((r0 + k) / t, (r0 + k) % t);
            let mut heads = row.chunks_exact_mut(d);
            for p in m.parts {
                for hi in 0..p.n {
                    let y = heads.next().expect("a head per row slot");
                    let x = &p.x[((bi * p.n + hi) * t + ti) * d..][..d];
                    match (p.back, m.rot) {
                        (true, Some(r)) => r.rotate(x, ti, y, T::ZERO - T::ONE),
                        _ => y.copy_from_slice(x),
                    }
                }
            }
        }
    }
}

/// The (B, T, W) buffer of `m`'s parts, tokens in parallel.
fn merge<T: Real>(m: &Merge<T>, b: usize) -> Vec<T> {
    let w: usize = m.parts.iter().map(|p| p.n * m.d).sum();
    let mut out = vec![T::ZERO; b * m.t * w];
    cpu::par_rows(&mut out, w, |r0, blk| merge_block(m, r0, blk));
    out
}

/// Forward: qkv -> o (B, T, H D), keeping L in `lse` as `attention` does.
struct PackedAttention {
    spec: Spec,
    rope: Option<Rotary>,
    lse: Mutex<Option<Tensor>>,
}

/// Errors unless qkv's layout has the checked shape (B, T, (H + 2 Hkv) D).
fn expect_packed(dims: &Dims, l: &Layout) -> Result<()> {
    let Dims {
        b, h, hkv, tq, d, ..
    } = *dims;
    cpu::expect_dims(NAME, "qkv", l, &[b, tq, (h + 2 * hkv) * d])
}

impl PackedAttention {
    fn fwd<T: Work2>(&self, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        let dims = self.spec.dims;
        expect_packed(&dims, l)?;
        let x = T::load(NAME, s, l)?;
        let (o, lse) = with_tables(self.rope.as_ref(), |rot| {
            let (q, k, v) = split_qkv(&x, &dims, rot);
            self.spec.forward(&q, &k, &v)
        })?;
        let lse = Tensor::from_vec(lse, (dims.b, dims.h, dims.tq), &Device::Cpu)?;
        keep_lse(&self.lse, lse);
        let parts = [Part {
            x: &o,
            n: dims.h,
            back: false,
        }];
        let m = Merge {
            parts: &parts,
            t: dims.tq,
            d: dims.d,
            rot: None,
        };
        Ok(T::store(merge(&m, dims.b), s.dtype()))
    }

    /// (B, T, H D).
    fn out_shape(&self) -> Shape {
        let d = self.spec.dims;
        Shape::from_dims(&[d.b, d.tq, d.h * d.d])
    }
}

impl CustomOp1 for PackedAttention {
    fn name(&self) -> &'static str {
        "cotyle-attention-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let o = match cpu::work(NAME, s.dtype())? {
            Work::F32 => self.fwd::<f32>(s, l)?,
            Work::F64 => self.fwd::<f64>(s, l)?,
        };
        Ok((o, self.out_shape()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let rope = self.rope.as_ref().map(Rotary::cuda);
        let (o, lse) = crate::cuda::attention_packed(&self.spec.params(), rope, (s, l))?;
        keep_lse(&self.lse, lse);
        Ok((o, self.out_shape()))
    }

    fn bwd(&self, qkv: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let back = PackedAttentionBackward {
            spec: self.spec.clone(),
            rope: self.rope.clone(),
            o: res.clone(),
            d_o: grad_res.clone(),
            lse: saved_lse(&self.lse)?,
        };
        Ok(Some(qkv.apply_op1(back)?))
    }
}

/// qkv -> dqkv (B, T, (H + 2 Hkv) D) for the forward above; o, dO (B, T, H D) and L ride
/// along (not differentiated: this op has no backward, and its qkv argument makes a second
/// derivative reach it and fail).
struct PackedAttentionBackward {
    spec: Spec,
    rope: Option<Rotary>,
    o: Tensor,
    d_o: Tensor,
    lse: Tensor,
}

impl PackedAttentionBackward {
    fn bwd<T: Work2>(&self, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        let dims = self.spec.dims;
        let Dims {
            b, h, hkv, tq, d, ..
        } = dims;
        expect_packed(&dims, l)?;
        let x = T::load(NAME, s, l)?;
        let (og, ol) = self.o.storage_and_layout();
        let (dg, dl) = self.d_o.storage_and_layout();
        let (lg, ll) = self.lse.storage_and_layout();
        cpu::expect_dims(NAME, "the output", ol, &[b, tq, h * d])?;
        cpu::expect_dims(NAME, "the output gradient", dl, &[b, tq, h * d])?;
        cpu::expect_dims(NAME, "the saved log-sum-exp", ll, &[b, h, tq])?;
        let o = T::load(NAME, cpu_storage(&og, "the output")?, ol)?;
        let d_o = T::load(NAME, cpu_storage(&dg, "the output gradient")?, dl)?;
        let lse = T::load(NAME, cpu_storage(&lg, "the saved log-sum-exp")?, ll)?;
        let dqkv = with_tables(self.rope.as_ref(), |rot| {
            let (q, k, v) = split_qkv(&x, &dims, rot);
            // o and dO (B, T, H D) as (B, H, T, D), as the kernels read them.
            let heads = |x: &[T]| {
                let s = Split {
                    x,
                    w: h * d,
                    h0: 0,
                    n: h,
                    t: tq,
                    d,
                    rot: None,
                };
                split(&s, b)
            };
            let (o, d_o) = (heads(&o), heads(&d_o));
            let g = self.spec.backward(&q, &k, &v, &o, &d_o, &lse)?;
            let (nq, nkv) = (q.len(), k.len());
            let part = |r: std::ops::Range<usize>, n: usize, back: bool| Part { x: &g[r], n, back };
            let parts = [
                part(0..nq, h, true),
                part(nq..nq + nkv, hkv, true),
                part(nq + nkv..nq + 2 * nkv, hkv, false),
            ];
            let m = Merge {
                parts: &parts,
                t: tq,
                d,
                rot,
            };
            Ok(merge(&m, b))
        })?;
        Ok(T::store(dqkv, s.dtype()))
    }
}

impl CustomOp1 for PackedAttentionBackward {
    fn name(&self) -> &'static str {
        "cotyle-attention-packed-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = match cpu::work(NAME, s.dtype())? {
            Work::F32 => self.bwd::<f32>(s, l)?,
            Work::F64 => self.bwd::<f64>(s, l)?,
        };
        Ok((g, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let Dims { b, h, tq, d, .. } = self.spec.dims;
        // o and dO (B, T, H D) seen as (B, H, T, D) (views; the kernels compact them).
        let heads = |x: &Tensor| x.detach().reshape((b, tq, h, d))?.transpose(1, 2);
        let (o, d_o) = (heads(&self.o)?, heads(&self.d_o)?);
        let saved = crate::cuda::AttentionSaved {
            o: &o,
            d_o: &d_o,
            lse: &self.lse,
        };
        let rope = self.rope.as_ref().map(Rotary::cuda);
        let g = crate::cuda::attention_packed_bwd(&self.spec.params(), rope, (s, l), &saved)?;
        Ok((g, l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    /// Forward and dqkv, as bits, on the current build, with RoPE of both layouts and GQA.
    fn bits() -> Vec<Vec<u32>> {
        let dev = &Device::Cpu;
        let v = |n: usize, k: f32| (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<_>>();
        let (b, t, h, hkv, d) = (2, 70, 4, 2, 34);
        let w = (h + 2 * hkv) * d;
        let x = Var::from_vec(v(b * t * w, 0.37), (b, t, w), dev).unwrap();
        let c = Tensor::from_vec(v(t * d / 2, 0.11), (t, d / 2), dev).unwrap();
        let s = Tensor::from_vec(v(t * d / 2, 0.23), (t, d / 2), dev).unwrap();
        let opts = AttentionOpts {
            causal: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
            let y = attention_packed(&x, h, hkv, Some((&c, &s, layout)), &opts).unwrap();
            let r = y.sin().unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for t in [y, g.get(&x).unwrap().clone()] {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                out.push(v.iter().map(|f| f.to_bits()).collect());
            }
        }
        out
    }

    #[test]
    fn every_simd_build_gives_identical_bits() {
        crate::simd::assert_builds_agree("attention_packed", bits);
    }

    #[test]
    fn second_derivative_is_an_error() -> Result<()> {
        let x = Var::from_tensor(&Tensor::ones((1, 3, 12), DType::F64, &Device::Cpu)?)?;
        let y = attention_packed(x.as_tensor(), 2, 1, None, &AttentionOpts::default())?;
        let back = PackedAttentionBackward {
            spec: Spec::new(
                Dims {
                    b: 1,
                    h: 2,
                    hkv: 1,
                    tq: 3,
                    tk: 3,
                    d: 3,
                },
                &AttentionOpts::default(),
                ("qkv", x.as_tensor()),
            )?,
            rope: None,
            o: y.detach(),
            d_o: y.ones_like()?,
            lse: Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu)?,
        };
        let g = x.as_tensor().apply_op1(back)?;
        let err = g.sum_all()?.backward().unwrap_err();
        assert!(
            err.to_string().contains("cotyle-attention-packed-backward"),
            "{err}"
        );
        Ok(())
    }
}
