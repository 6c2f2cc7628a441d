//! `kernels::attention` against `kernels::reference::attention` (matmul, repeated kv heads,
//! softmax of slow candle ops): forward and gradients (reference autograd and finite
//! differences) over odd shapes, grouped-query heads, KV-cache causal alignment, strided
//! inputs, every mask shape, fully masked rows, other dtypes, thread-count independence and
//! the shape errors.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor, Var};
use common::*;
use kernels::{reference, AttentionOpts, RopeLayout};

/// (B, H, Hkv, Tq, Tk, D).
type Sizes = [usize; 6];

/// q (B, H, Tq, D), k and v (B, Hkv, Tk, D), uniform in [-scale, scale).
fn qkv(s: Sizes, seed: u64, scale: f64, dtype: DType) -> Result<Vec<Tensor>> {
    let [b, h, hkv, tq, tk, d] = s;
    Ok(vec![
        tensor(&[b, h, tq, d], seed, scale, dtype)?,
        tensor(&[b, hkv, tk, d], seed + 1, scale, dtype)?,
        tensor(&[b, hkv, tk, d], seed + 2, scale, dtype)?,
    ])
}

fn fused<'a>(opts: AttentionOpts<'a>) -> impl Fn(&[Tensor]) -> Result<Tensor> + Sync + 'a {
    move |t: &[Tensor]| kernels::attention(&t[0], &t[1], &t[2], &opts)
}

fn slow<'a>(opts: AttentionOpts<'a>) -> impl Fn(&[Tensor]) -> Result<Tensor> + Sync + 'a {
    move |t: &[Tensor]| reference::attention(&t[0], &t[1], &t[2], &opts)
}

fn causal() -> AttentionOpts<'static> {
    AttentionOpts {
        causal: true,
        ..Default::default()
    }
}

/// Odd D (not multiples of any vector width), T = 1, Tq != Tk (KV cache), grouped-query
/// heads, several query and key blocks (T > 64), and key chunks in the backward (Tk > 256).
const CASES: &[(Sizes, bool)] = &[
    ([1, 1, 1, 1, 1, 1], false),
    ([1, 1, 1, 1, 1, 7], true),
    ([2, 3, 3, 5, 5, 7], false),
    ([2, 3, 3, 5, 5, 7], true),
    ([1, 2, 2, 3, 10, 33], true),
    ([2, 2, 1, 1, 70, 16], true),
    ([1, 4, 2, 9, 9, 33], true),
    ([2, 4, 1, 6, 11, 8], false),
    ([1, 2, 1, 70, 130, 20], true),
    ([1, 2, 2, 130, 130, 64], true),
    ([1, 2, 1, 7, 600, 9], true),
    ([1, 1, 1, 65, 300, 17], false),
];

#[test]
fn forward_matches_reference() -> Result<()> {
    for (i, &(s, c)) in CASES.iter().enumerate() {
        let opts = AttentionOpts {
            causal: c,
            ..Default::default()
        };
        let t = qkv(s, 10 * i as u64, 2.0, DType::F32)?;
        let what = format!("attention {s:?} causal {c}");
        check_forward(&fused(opts), &slow(opts), &t, 1e-5, &what)?;
    }
    Ok(())
}

#[test]
fn gradients_match_reference_autograd() -> Result<()> {
    for (i, &(s, c)) in CASES.iter().enumerate() {
        let opts = AttentionOpts {
            causal: c,
            ..Default::default()
        };
        let t = qkv(s, 200 + 10 * i as u64, 2.0, DType::F32)?;
        // One key: the softmax is 1 whatever q is, so dq and dk are exactly 0.
        let nonzero = s[4] > 1;
        let what = format!("attention {s:?} causal {c}");
        check_backward(&fused(opts), &slow(opts), &t, 1e-4, nonzero, &what)?;
    }
    Ok(())
}

#[test]
fn scale_and_large_scores() -> Result<()> {
    // Scores up to about +-300: the online softmax must not overflow.
    let opts = AttentionOpts {
        causal: true,
        scale: Some(3.0),
        mask: None,
    };
    let t = qkv([1, 2, 1, 70, 150, 12], 30, 3.0, DType::F32)?;
    check_forward(&fused(opts), &slow(opts), &t, 1e-4, "scale 3")?;
    check_backward(&fused(opts), &slow(opts), &t, 1e-3, true, "scale 3")?;
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    let mask = tensor(&[4, 6], 40, 1.0, DType::F64)?;
    for (s, opts) in [
        ([1, 2, 1, 3, 5, 7], causal()),
        ([2, 2, 2, 4, 4, 3], AttentionOpts::default()),
        (
            [1, 2, 1, 4, 6, 5],
            AttentionOpts {
                causal: true,
                scale: Some(0.7),
                mask: Some(&mask),
            },
        ),
    ] {
        let t = qkv(s, 41, 1.0, DType::F64)?;
        check_finite_diff(
            &fused(opts),
            &t,
            1e-6,
            1e-6,
            &format!("attention f64 {s:?}"),
        )?;
    }
    Ok(())
}

#[test]
fn strided_inputs_from_a_packed_projection() -> Result<()> {
    // q, k, v as permuted views of one (B, T, 3, H, D) projection, the usual layout.
    let (b, t, h, d) = (2, 9, 3, 10);
    let base = tensor(&[b, t, 3, h, d], 50, 2.0, DType::F32)?;
    let split = |x: &Tensor| -> Result<Vec<Tensor>> {
        (0..3)
            .map(|i| {
                let v = x.i((.., .., i))?.transpose(1, 2)?;
                assert!(!v.is_contiguous());
                Ok(v)
            })
            .collect()
    };
    for opts in [AttentionOpts::default(), causal()] {
        let o = |x: &[Tensor]| fused(opts)(&split(&x[0])?);
        let r = |x: &[Tensor]| slow(opts)(&split(&x[0])?);
        let what = format!("packed projection causal {}", opts.causal);
        check_forward(&o, &r, std::slice::from_ref(&base), 1e-5, &what)?;
        check_backward(&o, &r, std::slice::from_ref(&base), 1e-4, true, &what)?;
    }
    // Grouped-query heads from (B, T, H, D) views, and k, v narrowed along D.
    let q = tensor(&[2, 7, 4, 12], 51, 2.0, DType::F32)?;
    let kv = tensor(&[2, 8, 2, 20], 52, 2.0, DType::F32)?;
    let views = |x: &[Tensor]| -> Result<Vec<Tensor>> {
        Ok(vec![
            x[0].transpose(1, 2)?,
            x[1].narrow(3, 0, 12)?.transpose(1, 2)?,
            x[1].narrow(3, 8, 12)?.transpose(1, 2)?,
        ])
    };
    let o = |x: &[Tensor]| fused(causal())(&views(x)?);
    let r = |x: &[Tensor]| slow(causal())(&views(x)?);
    check_forward(&o, &r, &[q.clone(), kv.clone()], 1e-5, "GQA views")?;
    check_backward(&o, &r, &[q, kv], 1e-4, true, "GQA views")?;
    Ok(())
}

#[test]
fn every_mask_shape_matches_reference() -> Result<()> {
    let s @ [b, h, _, tq, tk, _] = [2, 4, 2, 5, 7, 9];
    let t = qkv(s, 60, 2.0, DType::F32)?;
    for (i, shape) in [
        vec![tq, tk],
        vec![b, 1, tq, tk],
        vec![b, h, tq, tk],
        vec![b, 1, 1, tk],
        vec![1, h, 1, tk],
    ]
    .into_iter()
    .enumerate()
    {
        // Finite biases and some -inf (key padding), never a whole row.
        let mut v = values(shape.iter().product(), 61 + i as u64, 2.0);
        let last = *shape.last().unwrap();
        for (k, x) in v.iter_mut().enumerate() {
            if k % last != 0 && k % 3 == 1 {
                *x = f64::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(v, &shape[..], &Device::Cpu)?.to_dtype(DType::F32)?;
        for c in [false, true] {
            let opts = AttentionOpts {
                causal: c,
                scale: None,
                mask: Some(&mask),
            };
            let what = format!("mask {shape:?} causal {c}");
            check_forward(&fused(opts), &slow(opts), &t, 1e-5, &what)?;
            check_backward(&fused(opts), &slow(opts), &t, 1e-4, true, &what)?;
        }
    }
    Ok(())
}

#[test]
fn a_mask_gets_no_gradient() -> Result<()> {
    let t = qkv([1, 2, 1, 3, 4, 5], 70, 1.0, DType::F32)?;
    let mask = Var::from_tensor(&tensor(&[3, 4], 71, 1.0, DType::F32)?)?;
    let vars: Vec<Var> = t.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let opts = AttentionOpts {
        mask: Some(mask.as_tensor()),
        ..Default::default()
    };
    let y = kernels::attention(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
        &opts,
    )?;
    let g = y.sum_all()?.backward()?;
    assert!(vars.iter().all(|v| g.get(v).is_some()));
    assert!(g.get(&mask).is_none());
    Ok(())
}

#[test]
fn only_tracked_inputs_get_gradients() -> Result<()> {
    let t = qkv([1, 2, 1, 3, 4, 5], 75, 1.0, DType::F32)?;
    let k = Var::from_tensor(&t[1])?;
    let y = kernels::attention(&t[0], k.as_tensor(), &t[2], &causal())?;
    let r = tensor(y.dims(), 76, 1.0, DType::F32)?;
    let g = (y * &r)?.sum_all()?.backward()?;
    let want = grads(&slow(causal()), &t, &r, "reference")?;
    assert_close(g.get(&k).unwrap(), &want[1], 1e-4, "dk alone")?;
    assert!(g.get(&t[0]).is_none() && g.get(&t[2]).is_none());
    Ok(())
}

#[test]
fn causal_flag_equals_an_explicit_causal_mask() -> Result<()> {
    for s @ [_, _, _, tq, tk, _] in [[2, 2, 1, 70, 70, 33], [1, 2, 2, 5, 130, 16]] {
        let hidden: Vec<f32> = (0..tq * tk)
            .map(|x| match x % tk > tk - tq + x / tk {
                true => f32::NEG_INFINITY,
                false => 0.0,
            })
            .collect();
        let mask = Tensor::from_vec(hidden, (tq, tk), &Device::Cpu)?;
        let t = qkv(s, 80, 2.0, DType::F32)?;
        let with_mask = AttentionOpts {
            mask: Some(&mask),
            ..Default::default()
        };
        let what = format!("causal vs mask {s:?}");
        let r = tensor(&[s[0], s[1], tq, s[5]], 81, 1.0, DType::F32)?;
        let a = fused(causal())(&t)?;
        let b = fused(with_mask)(&t)?;
        assert_close(&a, &b, 1e-6, &what)?;
        let ga = grads(&fused(causal()), &t, &r, &what)?;
        let gb = grads(&fused(with_mask), &t, &r, &what)?;
        for (x, y) in ga.iter().zip(&gb) {
            assert_close(x, y, 1e-6, &what)?;
        }
    }
    Ok(())
}

/// Rows with every key masked give 0 and contribute no gradient: compared with the
/// reference on the other rows only (where it is defined; it gives NaN on such rows).
#[test]
fn fully_masked_rows_give_zeros_and_zero_gradients() -> Result<()> {
    // The last query row masked out entirely by an additive mask.
    let (tq, tk) = (4, 6);
    let mut m = values(tq * tk, 90, 1.0);
    m[(tq - 1) * tk..].fill(f64::NEG_INFINITY);
    let mask = Tensor::from_vec(m, (tq, tk), &Device::Cpu)?.to_dtype(DType::F32)?;
    let opts = AttentionOpts {
        mask: Some(&mask),
        ..Default::default()
    };
    let kept = mask.narrow(0, 0, tq - 1)?;
    let kept_opts = AttentionOpts {
        mask: Some(&kept),
        ..Default::default()
    };
    check_masked_rows(
        [1, 2, 1, tq, tk, 8],
        opts,
        kept_opts,
        (tq - 1, 1),
        "masked last row",
    )?;
    // Causal with Tq > Tk: rows 0 and 1 sit before the first key.
    check_masked_rows(
        [2, 2, 2, 5, 3, 7],
        causal(),
        causal(),
        (0, 2),
        "causal Tq > Tk",
    )
}

/// Ours on inputs `s` with `opts` against the reference with `kept_opts` on the query rows
/// outside `rows` (start, len), which `opts` masks out entirely.
fn check_masked_rows(
    s: Sizes,
    opts: AttentionOpts,
    kept_opts: AttentionOpts,
    (start, len): (usize, usize),
    what: &str,
) -> Result<()> {
    let tq = s[3];
    let t = qkv(s, 95, 2.0, DType::F32)?;
    let r = tensor(&[s[0], s[1], tq, s[5]], 96, 1.0, DType::F32)?;
    let keep = |x: &Tensor| -> Result<Tensor> {
        let parts = [(0, start), (start + len, tq - start - len)];
        let parts: Vec<Tensor> = parts
            .iter()
            .filter(|p| p.1 > 0)
            .map(|&(s, n)| x.narrow(2, s, n))
            .collect::<Result<_>>()?;
        Tensor::cat(&parts, 2)
    };
    let y = fused(opts)(&t)?;
    let zeros = y.narrow(2, start, len)?;
    assert_eq!(
        zeros.abs()?.sum_all()?.to_scalar::<f32>()?,
        0.0,
        "{what}: output"
    );
    let t_kept = [keep(&t[0])?, t[1].clone(), t[2].clone()];
    assert_close(&keep(&y)?, &slow(kept_opts)(&t_kept)?, 1e-5, what)?;
    let g = grads(&fused(opts), &t, &r, what)?;
    check_grads_usable(&g, true, what)?;
    let want = grads(&slow(kept_opts), &t_kept, &keep(&r)?, what)?;
    let dq_masked = g[0].narrow(2, start, len)?.abs()?.sum_all()?;
    assert_eq!(
        dq_masked.to_scalar::<f32>()?,
        0.0,
        "{what}: dq of masked rows"
    );
    assert_close(&keep(&g[0])?, &want[0], 1e-4, &format!("{what}: dq"))?;
    assert_close(&g[1], &want[1], 1e-4, &format!("{what}: dk"))?;
    assert_close(&g[2], &want[2], 1e-4, &format!("{what}: dv"))
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    let s = [2, 4, 2, 20, 30, 24];
    let mask = tensor(&[2, 1, 20, 30], 101, 1.0, DType::F32)?;
    for opts in [
        causal(),
        AttentionOpts {
            mask: Some(&mask),
            ..Default::default()
        },
    ] {
        let t = qkv(s, 100, 2.0, DType::F32)?;
        let r = tensor(&[2, 4, 20, 24], 102, 1.0, DType::F32)?;
        for (dtype, tol) in [(DType::F64, 1e-5), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
            let what = format!("attention {dtype:?} mask {}", opts.mask.is_some());
            let td: Vec<Tensor> = t.iter().map(|x| x.to_dtype(dtype)).collect::<Result<_>>()?;
            // The same (rounded) inputs in f32.
            let t32: Vec<Tensor> = td
                .iter()
                .map(|x| x.to_dtype(DType::F32))
                .collect::<Result<_>>()?;
            // f64 work needs an f64 mask; the op converts an f32 one.
            let y = fused(opts)(&td)?;
            assert_eq!(y.dtype(), dtype);
            assert_close(&y, &fused(opts)(&t32)?, tol, &what)?;
            let rd = r.to_dtype(dtype)?;
            let g = grads(&fused(opts), &td, &rd, &what)?;
            let w = grads(&fused(opts), &t32, &rd.to_dtype(DType::F32)?, &what)?;
            for (g, w) in g.iter().zip(&w) {
                assert_eq!(g.dtype(), dtype);
                assert_close(g, w, 4.0 * tol, &format!("{what} gradient"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn a_mask_in_the_input_dtype_is_accepted() -> Result<()> {
    let t = qkv([1, 2, 1, 3, 4, 5], 110, 1.0, DType::BF16)?;
    let mask = tensor(&[3, 4], 111, 1.0, DType::BF16)?;
    let opts = AttentionOpts {
        mask: Some(&mask),
        ..Default::default()
    };
    let m32 = mask.to_dtype(DType::F32)?;
    let opts32 = AttentionOpts {
        mask: Some(&m32),
        ..Default::default()
    };
    let (got, want) = (fused(opts)(&t)?, fused(opts32)(&t)?);
    assert_close(&got, &want, 0.0, "bf16 mask")
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    let mask = tensor(&[2, 1, 70, 300], 121, 1.0, DType::F32)?;
    for opts in [
        causal(),
        AttentionOpts {
            mask: Some(&mask),
            ..Default::default()
        },
    ] {
        let t = qkv([2, 4, 2, 70, 300, 33], 120, 2.0, DType::F32)?;
        check_thread_independent(&fused(opts), &t, "attention")?;
    }
    Ok(())
}

#[test]
fn bad_shapes_and_kinds_are_errors() -> Result<()> {
    let f = |s: &[usize], dtype| tensor(s, 130, 1.0, dtype);
    let f32_ = DType::F32;
    let none = AttentionOpts::default();
    let cases: Vec<(Tensor, Tensor, Tensor, &str)> = vec![
        (
            f(&[2, 3, 4], f32_)?,
            f(&[2, 3, 4], f32_)?,
            f(&[2, 3, 4], f32_)?,
            "(B, H, Tq, D)",
        ),
        (
            f(&[1, 2, 3, 4], f32_)?,
            f(&[1, 2, 3, 5], f32_)?,
            f(&[1, 2, 3, 5], f32_)?,
            "head width D",
        ),
        (
            f(&[1, 3, 3, 4], f32_)?,
            f(&[1, 2, 3, 4], f32_)?,
            f(&[1, 2, 3, 4], f32_)?,
            "multiple",
        ),
        (
            f(&[2, 2, 3, 4], f32_)?,
            f(&[1, 2, 3, 4], f32_)?,
            f(&[1, 2, 3, 4], f32_)?,
            "batch size",
        ),
        (
            f(&[1, 2, 3, 4], f32_)?,
            f(&[1, 2, 3, 4], f32_)?,
            f(&[1, 2, 5, 4], f32_)?,
            "v must have",
        ),
        (
            f(&[1, 2, 3, 4], f32_)?,
            f(&[1, 2, 3, 4], DType::F64)?,
            f(&[1, 2, 3, 4], f32_)?,
            "dtype",
        ),
    ];
    for (q, k, v, want) in cases {
        let err = kernels::attention(&q, &k, &v, &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
        assert!(
            err.contains(&format!("{:?}", q.dims())) || want == "dtype",
            "{err}"
        );
    }
    let t = qkv([2, 2, 1, 3, 4, 5], 131, 1.0, f32_)?;
    for (shape, dtype, want) in [
        (&[3, 5][..], f32_, "does not broadcast"),
        (&[3, 2, 3, 4], f32_, "does not broadcast"),
        (&[1, 1, 2, 3, 4], f32_, "does not broadcast"),
        (&[3, 4], DType::F64, "dtype"),
    ] {
        let mask = f(shape, dtype)?;
        let opts = AttentionOpts {
            mask: Some(&mask),
            ..Default::default()
        };
        let err = fused(opts)(&t).unwrap_err().to_string();
        assert!(err.contains(want), "{shape:?}: {err}");
    }
    let nan = AttentionOpts {
        scale: Some(f64::NAN),
        ..Default::default()
    };
    assert!(fused(nan)(&t).unwrap_err().to_string().contains("scale"));
    let ints = Tensor::zeros((1, 1, 2, 3), DType::U32, &Device::Cpu)?;
    let err = kernels::attention(&ints, &ints, &ints, &none).unwrap_err();
    assert!(err.to_string().contains("U32"), "{err}");
    Ok(())
}

#[test]
fn empty_sizes_give_empty_or_zero_results() -> Result<()> {
    // B, H, Tq, Tk or D of 0: no NaN, no panic; with no keys every row is fully masked.
    for s in [
        [0, 2, 1, 3, 4, 5],
        [1, 2, 1, 0, 4, 5],
        [1, 2, 1, 3, 0, 5],
        [1, 2, 1, 3, 4, 0],
    ] {
        let t = qkv(s, 140, 1.0, DType::F32)?;
        for opts in [AttentionOpts::default(), causal()] {
            let what = format!("empty {s:?}");
            let y = fused(opts)(&t)?;
            assert_eq!(y.dims(), &[s[0], s[1], s[3], s[5]], "{what}");
            let r = tensor(y.dims(), 141, 1.0, DType::F32)?;
            let g = grads(&fused(opts), &t, &r, &what)?;
            check_grads_usable(&g, false, &what)?;
            for x in std::iter::once(&y).chain(&g) {
                let total = x.abs()?.sum_all()?.to_scalar::<f32>()?;
                assert_eq!(total, 0.0, "{what}");
            }
        }
    }
    Ok(())
}

// `attention_packed`: qkv (B, T, (H + 2 Hkv) D) straight from one fused projection.

/// RoPE tables (T, D/2) for `attention_packed` and `kernels::rope`.
fn tables(t: usize, d: usize, seed: u64, dtype: DType) -> Result<(Tensor, Tensor)> {
    let angle = tensor(&[t, d / 2], seed, 3.0, DType::F64)?;
    Ok((angle.cos()?.to_dtype(dtype)?, angle.sin()?.to_dtype(dtype)?))
}

type Rope<'a> = Option<(&'a Tensor, &'a Tensor, RopeLayout)>;

/// One `attention_packed` configuration: heads, kv heads, RoPE, options.
#[derive(Clone, Copy)]
struct Packed<'a> {
    h: usize,
    hkv: usize,
    rope: Rope<'a>,
    opts: AttentionOpts<'a>,
}

fn packed<'a>(h: usize, hkv: usize, rope: Rope<'a>, opts: AttentionOpts<'a>) -> Packed<'a> {
    Packed { h, hkv, rope, opts }
}

impl Packed<'_> {
    /// The op under test on t = [qkv].
    fn fused(&self, t: &[Tensor]) -> Result<Tensor> {
        kernels::attention_packed(&t[0], self.h, self.hkv, self.rope, &self.opts)
    }

    /// The unpacked composition models used before: narrow q, k, v out of qkv, view them as
    /// (B, H, T, D), RoPE q and k, `attention`, back to (B, T, H D).
    fn composed(&self, t: &[Tensor]) -> Result<Tensor> {
        let (b, tt, w) = t[0].dims3()?;
        let d = w / (self.h + 2 * self.hkv);
        let heads = |h0: usize, n: usize| {
            t[0].narrow(2, h0 * d, n * d)?
                .reshape((b, tt, n, d))?
                .transpose(1, 2)
        };
        let (mut q, mut k, v) = (
            heads(0, self.h)?,
            heads(self.h, self.hkv)?,
            heads(self.h + self.hkv, self.hkv)?,
        );
        if let Some((cos, sin, layout)) = self.rope {
            q = kernels::rope(&q, cos, sin, layout)?;
            k = kernels::rope(&k, cos, sin, layout)?;
        }
        kernels::attention(&q, &k, &v, &self.opts)?
            .transpose(1, 2)?
            .reshape((b, tt, self.h * d))
    }

    /// A qkv input for this configuration.
    fn input(&self, b: usize, t: usize, d: usize, seed: u64, dtype: DType) -> Result<Tensor> {
        tensor(&[b, t, (self.h + 2 * self.hkv) * d], seed, 2.0, dtype)
    }
}

fn opts(causal: bool, mask: Option<&Tensor>) -> AttentionOpts<'_> {
    AttentionOpts {
        causal,
        scale: None,
        mask,
    }
}

#[test]
fn packed_matches_the_unpacked_composition() -> Result<()> {
    // A (T, T) mask of finite biases and some -inf, its last row masked entirely (0 out, no
    // gradient), and a (B, 1, T, T) one.
    let t9 = 9;
    let mut m = values(t9 * t9, 300, 1.0);
    for (k, x) in m.iter_mut().enumerate() {
        if k % t9 != 0 && k % 4 == 1 {
            *x = f64::NEG_INFINITY;
        }
    }
    m[(t9 - 1) * t9..].fill(f64::NEG_INFINITY);
    let mask = Tensor::from_vec(m, (t9, t9), &Device::Cpu)?.to_dtype(DType::F32)?;
    let mask_b = tensor(&[2, 1, t9, t9], 301, 2.0, DType::F32)?;
    let (c34, s34) = tables(70, 34, 302, DType::F32)?;
    let (c10, s10) = tables(t9, 10, 303, DType::F32)?;
    let (c64, s64) = tables(300, 64, 304, DType::F32)?;
    let (c2, s2) = tables(1, 2, 305, DType::F32)?;
    let (half, inter) = (RopeLayout::Half, RopeLayout::Interleaved);
    let scaled = AttentionOpts {
        causal: true,
        scale: Some(0.3),
        mask: None,
    };
    // (B, T, D, config): H == Hkv and GQA, causal and masked, T = 1, odd D, several query and
    // key blocks (T = 70), key chunks in the backward (T = 300), RoPE in both layouts.
    let cases = [
        (2, 5, 7, packed(3, 3, None, opts(true, None))),
        (1, 1, 7, packed(2, 2, None, opts(true, None))),
        (
            2,
            1,
            2,
            packed(4, 2, Some((&c2, &s2, half)), opts(false, None)),
        ),
        (2, 9, 33, packed(4, 2, None, opts(false, Some(&mask)))),
        (
            2,
            9,
            10,
            packed(2, 1, Some((&c10, &s10, inter)), opts(true, Some(&mask_b))),
        ),
        (
            2,
            9,
            10,
            packed(3, 3, Some((&c10, &s10, half)), opts(false, Some(&mask))),
        ),
        (
            2,
            70,
            34,
            packed(4, 1, Some((&c34, &s34, half)), opts(true, None)),
        ),
        (1, 70, 17, packed(2, 2, None, scaled)),
        (
            1,
            300,
            64,
            packed(2, 1, Some((&c64, &s64, inter)), opts(true, None)),
        ),
    ];
    for (i, (b, t, d, p)) in cases.into_iter().enumerate() {
        let x = p.input(b, t, d, 310 + i as u64, DType::F32)?;
        let what = format!(
            "packed B={b} T={t} D={d} H={} Hkv={} rope {:?} causal {} mask {:?}",
            p.h,
            p.hkv,
            p.rope.map(|r| r.2),
            p.opts.causal,
            p.opts.mask.map(|m| m.dims().to_vec())
        );
        let ours = |t: &[Tensor]| p.fused(t);
        let want = |t: &[Tensor]| p.composed(t);
        let x = std::slice::from_ref(&x);
        check_forward(&ours, &want, x, 1e-6, &what)?;
        // (T = 1 without RoPE: one key, so dq and dk are exactly 0; dv is not.)
        check_backward(&ours, &want, x, 1e-6, true, &what)?;
    }
    Ok(())
}

#[test]
fn packed_other_dtypes_match_the_composition() -> Result<()> {
    let (b, t, d) = (2, 20, 24);
    // (dtype, tolerance with RoPE): without RoPE both run the same kernels on the same values;
    // with it the composition rounds q and k to the dtype after rotating (and dq, dk before
    // rotating back), the packed op does not: a unit or so in the last place of the scores.
    for (dtype, rope_tol) in [(DType::F64, 1e-12), (DType::BF16, 3e-2), (DType::F16, 4e-3)] {
        let (cos, sin) = tables(t, d, 321, dtype)?;
        for (rope, tol) in [
            (None, 1e-6),
            (Some((&cos, &sin, RopeLayout::Half)), rope_tol),
        ] {
            let p = packed(4, 2, rope, causal());
            let what = format!("packed {dtype:?} rope {}", rope.is_some());
            let x = p.input(b, t, d, 320, dtype)?;
            let y = p.fused(std::slice::from_ref(&x))?;
            assert_eq!(y.dtype(), dtype, "{what}");
            let ours = |t: &[Tensor]| p.fused(t);
            let want = |t: &[Tensor]| p.composed(t);
            let xs = std::slice::from_ref(&x);
            check_forward(&ours, &want, xs, tol, &what)?;
            let g = check_backward(&ours, &want, xs, 2.0 * tol, true, &what)?;
            assert_eq!(g[0].dtype(), dtype, "{what}");
        }
    }
    Ok(())
}

#[test]
fn packed_gradients_match_finite_differences_f64() -> Result<()> {
    let mask = tensor(&[4, 4], 330, 1.0, DType::F64)?;
    let (cos, sin) = tables(4, 6, 331, DType::F64)?;
    let masked = AttentionOpts {
        causal: true,
        scale: Some(0.7),
        mask: Some(&mask),
    };
    let (half, inter) = (RopeLayout::Half, RopeLayout::Interleaved);
    for (b, t, d, p) in [
        (1, 3, 5, packed(2, 1, None, causal())),
        (2, 4, 6, packed(2, 1, Some((&cos, &sin, half)), masked)),
        (
            1,
            4,
            6,
            packed(2, 2, Some((&cos, &sin, inter)), opts(false, None)),
        ),
    ] {
        let x = p.input(b, t, d, 332, DType::F64)?;
        let what = format!(
            "packed f64 B={b} T={t} D={d} rope {:?}",
            p.rope.map(|r| r.2)
        );
        check_finite_diff(&|t: &[Tensor]| p.fused(t), &[x], 1e-6, 1e-6, &what)?;
    }
    Ok(())
}

#[test]
fn packed_results_do_not_depend_on_thread_count() -> Result<()> {
    let (cos, sin) = tables(300, 34, 340, DType::F32)?;
    let mask = tensor(&[2, 1, 300, 300], 341, 1.0, DType::F32)?;
    for p in [
        packed(4, 2, Some((&cos, &sin, RopeLayout::Half)), causal()),
        packed(2, 2, None, opts(false, Some(&mask))),
    ] {
        let x = p.input(2, 300, 34, 342, DType::F32)?;
        check_thread_independent(&|t: &[Tensor]| p.fused(t), &[x], "attention_packed")?;
    }
    Ok(())
}

#[test]
fn packed_reads_a_strided_input() -> Result<()> {
    // qkv as a transposed view: the op reads it through its strides.
    let (b, t, d) = (2, 9, 6);
    let (cos, sin) = tables(t, d, 350, DType::F32)?;
    let p = packed(2, 1, Some((&cos, &sin, RopeLayout::Half)), causal());
    let base = tensor(&[b, 4 * d, t], 351, 2.0, DType::F32)?;
    let ours = |x: &[Tensor]| p.fused(&[x[0].transpose(1, 2)?]);
    let want = |x: &[Tensor]| p.composed(&[x[0].transpose(1, 2)?]);
    let x = std::slice::from_ref(&base);
    check_forward(&ours, &want, x, 1e-6, "packed strided")?;
    check_backward(&ours, &want, x, 1e-6, true, "packed strided")?;
    Ok(())
}

#[test]
fn packed_empty_sizes_give_empty_or_zero_results() -> Result<()> {
    for (b, t, d) in [(0, 3, 4), (1, 0, 4), (2, 3, 0)] {
        let p = packed(2, 1, None, causal());
        let x = p.input(b, t, d, 360, DType::F32)?;
        let what = format!("packed empty B={b} T={t} D={d}");
        let y = p.fused(std::slice::from_ref(&x))?;
        assert_eq!(y.dims(), &[b, t, 2 * d], "{what}");
        let r = tensor(y.dims(), 361, 1.0, DType::F32)?;
        let g = grads(&|t: &[Tensor]| p.fused(t), &[x], &r, &what)?;
        assert_eq!(g[0].abs()?.sum_all()?.to_scalar::<f32>()?, 0.0, "{what}");
    }
    Ok(())
}

#[test]
fn packed_bad_shapes_and_kinds_are_errors() -> Result<()> {
    let none = AttentionOpts::default();
    let f = |s: &[usize]| tensor(s, 370, 1.0, DType::F32);
    let x = f(&[2, 5, 24])?;
    let (cos, sin) = tables(5, 6, 371, DType::F32)?;
    let (cos5, sin5) = tables(5, 5, 372, DType::F32)?;
    let (cos_t4, sin_t4) = tables(4, 6, 373, DType::F32)?;
    let cos64 = cos.to_dtype(DType::F64)?;
    let mask = f(&[5, 4])?;
    let with_mask = opts(false, Some(&mask));
    let half = RopeLayout::Half;
    let run = |x: &Tensor, h, hkv, rope: Rope, o: &AttentionOpts| {
        kernels::attention_packed(x, h, hkv, rope, o)
            .unwrap_err()
            .to_string()
    };
    // (error, what it must say, the shape it must name)
    for (err, want, shape) in [
        // The last dim must be (H + 2 Hkv) D: 20 is no multiple of 2 + 2 * 2.
        (
            run(&f(&[2, 5, 20])?, 2, 2, None, &none),
            "(H + 2 Hkv) D",
            "[2, 5, 20]",
        ),
        (
            run(&f(&[5, 24])?, 2, 1, None, &none),
            "(B, T, (H + 2 Hkv) D)",
            "[5, 24]",
        ),
        (run(&x, 3, 2, None, &none), "multiple", "[2, 5, 24]"),
        (run(&x, 0, 1, None, &none), "multiple", "[2, 5, 24]"),
        (run(&x, 2, 0, None, &none), "multiple", "[2, 5, 24]"),
        // H = 4, Hkv = 2: D = 3 is odd, RoPE needs it even.
        (
            run(&x, 4, 2, Some((&cos, &sin, half)), &none),
            "even",
            "[2, 5, 24]",
        ),
        // H = Hkv = 1: D = 8, so the tables must be (5, 4), not (5, 3).
        (
            run(&x, 1, 1, Some((&cos, &sin, half)), &none),
            "cos",
            "[5, 3]",
        ),
        // H = 2, Hkv = 1: D = 6; tables for D = 5, or for 4 positions.
        (
            run(&x, 2, 1, Some((&cos5, &sin5, half)), &none),
            "cos",
            "[5, 2]",
        ),
        (
            run(&x, 2, 1, Some((&cos_t4, &sin_t4, half)), &none),
            "cos",
            "[4, 3]",
        ),
        (
            run(&x, 2, 1, Some((&cos64, &sin, half)), &none),
            "dtype",
            "F64",
        ),
        (
            run(&x, 2, 1, None, &with_mask),
            "does not broadcast",
            "[5, 4]",
        ),
    ] {
        assert!(
            err.contains(want) && err.contains(shape),
            "want {want:?} and {shape}: {err}"
        );
    }
    let ints = Tensor::zeros((1, 2, 6), DType::U32, &Device::Cpu)?;
    let err = kernels::attention_packed(&ints, 1, 1, None, &none).unwrap_err();
    assert!(err.to_string().contains("U32"), "{err}");
    Ok(())
}
