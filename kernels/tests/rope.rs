//! `kernels::rope` against `kernels::reference::rope` (narrow/cat of slow candle ops) and
//! against candle-nn's own RoPE (`rope_slow`/`rope_i_slow` and the fused `rope`/`rope_i`, so
//! both pair layouts mean what candle and Hugging Face mean): forward, x gradient (reference
//! autograd and f64 finite differences), strided x and tables, position offsets by slicing,
//! other dtypes, thread-count independence, shape errors, and cos/sin getting no gradient.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::*;
use kernels::{reference, RopeLayout};

const LAYOUTS: [RopeLayout; 2] = [RopeLayout::Half, RopeLayout::Interleaved];

/// (B, H, T, D): T=1, D=2, odd D/2 (3, 17, 65), and a vector-width multiple.
const RSHAPES: &[[usize; 4]] = &[
    [1, 1, 1, 2],
    [2, 3, 5, 6],
    [1, 2, 7, 34],
    [2, 1, 4, 64],
    [1, 3, 3, 130],
];

/// cos and sin tables (T, D/2) of angles (p0 + t) * 10000^(-2i/D), as in Llama.
fn tables(t: usize, d: usize, p0: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
    let h = d / 2;
    let ang: Vec<f64> = (0..t * h)
        .map(|k| (p0 + k / h) as f64 * 10000f64.powf(-2.0 * (k % h) as f64 / d as f64))
        .collect();
    let a = Tensor::from_vec(ang, (t, h), &Device::Cpu)?;
    Ok((a.cos()?.to_dtype(dtype)?, a.sin()?.to_dtype(dtype)?))
}

fn inputs(s: [usize; 4], seed: u64, dtype: DType) -> Result<(Tensor, Tensor, Tensor)> {
    let x = tensor(&s, seed, 2.0, dtype)?;
    let (c, sn) = tables(s[2], s[3], 3, dtype)?;
    Ok((x, c, sn))
}

#[test]
fn forward_matches_reference_and_candle() -> Result<()> {
    for (i, &s) in RSHAPES.iter().enumerate() {
        let (x, c, sn) = inputs(s, i as u64, DType::F32)?;
        for layout in LAYOUTS {
            let what = format!("rope {layout:?} {s:?}");
            let got = kernels::rope(&x, &c, &sn, layout)?;
            assert_close(&got, &reference::rope(&x, &c, &sn, layout)?, 1e-6, &what)?;
            let (slow, fused) = match layout {
                RopeLayout::Half => (
                    candle_nn::rotary_emb::rope_slow(&x, &c, &sn)?,
                    candle_nn::rotary_emb::rope(&x, &c, &sn)?,
                ),
                RopeLayout::Interleaved => (
                    candle_nn::rotary_emb::rope_i_slow(&x, &c, &sn)?,
                    candle_nn::rotary_emb::rope_i(&x, &c, &sn)?,
                ),
            };
            assert_close(&got, &slow, 1e-6, &format!("{what} vs candle slow"))?;
            assert_close(&got, &fused, 1e-6, &format!("{what} vs candle fused"))?;
        }
    }
    Ok(())
}

#[test]
fn arbitrary_tables_match_reference() -> Result<()> {
    // Not unit (cos, sin) pairs: the kernel is the formula, not a normalised rotation.
    let s = [2, 3, 5, 6];
    let x = tensor(&s, 1, 2.0, DType::F32)?;
    let c = tensor(&[5, 3], 2, 1.5, DType::F32)?;
    let sn = tensor(&[5, 3], 3, 1.5, DType::F32)?;
    for layout in LAYOUTS {
        let got = kernels::rope(&x, &c, &sn, layout)?;
        let want = reference::rope(&x, &c, &sn, layout)?;
        assert_close(&got, &want, 1e-6, &format!("rope {layout:?} random tables"))?;
    }
    Ok(())
}

#[test]
fn rotation_preserves_row_norms() -> Result<()> {
    let (x, c, sn) = inputs([2, 3, 7, 34], 5, DType::F64)?;
    for layout in LAYOUTS {
        let y = kernels::rope(&x, &c, &sn, layout)?;
        let n = |t: &Tensor| t.sqr()?.sum_keepdim(3);
        assert_close(&n(&y)?, &n(&x)?, 1e-12, &format!("rope {layout:?} norms"))?;
    }
    Ok(())
}

#[test]
fn strided_x_and_tables_match_reference() -> Result<()> {
    for &s in &RSHAPES[1..] {
        let [b, h, t, d] = s;
        // x as (B, T, H, D).transpose(1, 2), the layout after a fused QKV projection.
        let x = tensor(&[b, t, h, d], 10, 2.0, DType::F32)?.transpose(1, 2)?;
        assert!(!x.is_contiguous() || h == 1);
        // Tables as column views of a wider table.
        let wide = tensor(&[t, d], 11, 1.0, DType::F32)?;
        let (c, sn) = (wide.narrow(1, 0, d / 2)?, wide.narrow(1, d / 2, d / 2)?);
        assert!(!c.is_contiguous());
        for layout in LAYOUTS {
            let want = reference::rope(
                &x.contiguous()?,
                &c.contiguous()?,
                &sn.contiguous()?,
                layout,
            )?;
            let got = kernels::rope(&x, &c, &sn, layout)?;
            assert_close(&got, &want, 1e-6, &format!("rope {layout:?} strided {s:?}"))?;
        }
    }
    Ok(())
}

#[test]
fn position_offsets_by_slicing_the_tables() -> Result<()> {
    // Prefill of 8 tokens equals 5 tokens at positions 0..5 then 3 at 5..8 (a KV cache).
    let (b, h, t, d) = (2, 3, 8, 10);
    let x = tensor(&[b, h, t, d], 20, 2.0, DType::F32)?;
    let (c, sn) = tables(t, d, 0, DType::F32)?;
    for layout in LAYOUTS {
        let full = kernels::rope(&x, &c, &sn, layout)?;
        let head = kernels::rope(
            &x.narrow(2, 0, 5)?,
            &c.narrow(0, 0, 5)?,
            &sn.narrow(0, 0, 5)?,
            layout,
        )?;
        let tail = kernels::rope(
            &x.narrow(2, 5, 3)?,
            &c.narrow(0, 5, 3)?,
            &sn.narrow(0, 5, 3)?,
            layout,
        )?;
        let parts = Tensor::cat(&[head, tail], 2)?;
        assert_close(&parts, &full, 0.0, &format!("rope {layout:?} offsets"))?;
        // A single decode step at position 7.
        let one = kernels::rope(
            &x.narrow(2, 7, 1)?,
            &c.narrow(0, 7, 1)?,
            &sn.narrow(0, 7, 1)?,
            layout,
        )?;
        assert_close(
            &one,
            &full.narrow(2, 7, 1)?,
            0.0,
            &format!("rope {layout:?} step"),
        )?;
    }
    Ok(())
}

#[test]
fn gradients_match_reference_autograd() -> Result<()> {
    for (i, &s) in RSHAPES.iter().enumerate() {
        let (x, c, sn) = inputs(s, 30 + i as u64, DType::F32)?;
        for layout in LAYOUTS {
            let o = |t: &[Tensor]| kernels::rope(&t[0], &c, &sn, layout);
            let r = |t: &[Tensor]| reference::rope(&t[0], &c, &sn, layout);
            let what = format!("rope {layout:?} {s:?}");
            check_backward(&o, &r, std::slice::from_ref(&x), 1e-5, true, &what)?;
        }
    }
    Ok(())
}

#[test]
fn gradients_through_strided_x_match_reference() -> Result<()> {
    let (b, h, t, d) = (2, 3, 5, 6);
    let base = tensor(&[b, t, h, d], 40, 2.0, DType::F32)?;
    let (c, sn) = tables(t, d, 2, DType::F32)?;
    for layout in LAYOUTS {
        let o = |v: &[Tensor]| kernels::rope(&v[0].transpose(1, 2)?, &c, &sn, layout);
        let r = |v: &[Tensor]| reference::rope(&v[0].transpose(1, 2)?, &c, &sn, layout);
        let what = format!("rope {layout:?} transposed");
        check_backward(&o, &r, std::slice::from_ref(&base), 1e-5, true, &what)?;
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    for s in [[1, 2, 3, 6], [1, 1, 1, 2]] {
        let (x, c, sn) = inputs(s, 50, DType::F64)?;
        for layout in LAYOUTS {
            let o = |t: &[Tensor]| kernels::rope(&t[0], &c, &sn, layout);
            check_finite_diff(
                &o,
                std::slice::from_ref(&x),
                1e-6,
                1e-8,
                &format!("rope {layout:?} f64"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn cos_and_sin_get_no_gradient() -> Result<()> {
    let (x, c, sn) = inputs([1, 2, 3, 4], 60, DType::F32)?;
    let (xv, cv, sv) = (
        Var::from_tensor(&x)?,
        Var::from_tensor(&c)?,
        Var::from_tensor(&sn)?,
    );
    let y = kernels::rope(
        xv.as_tensor(),
        cv.as_tensor(),
        sv.as_tensor(),
        RopeLayout::Half,
    )?;
    let g = y.sum_all()?.backward()?;
    assert!(g.get(&xv).is_some());
    assert!(g.get(&cv).is_none() && g.get(&sv).is_none());
    Ok(())
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    let s = [2, 3, 5, 34];
    let r = tensor(&s, 71, 1.0, DType::F32)?;
    for layout in LAYOUTS {
        let o = |t: &[Tensor]| {
            let (c, sn) = tables(s[2], s[3], 3, t[0].dtype())?;
            kernels::rope(&t[0], &c, &sn, layout)
        };
        let x = tensor(&s, 70, 2.0, DType::F32)?;
        for (dtype, tol) in [(DType::F64, 1e-6), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
            let what = format!("rope {layout:?} {dtype:?}");
            let xd = x.to_dtype(dtype)?;
            let x32 = xd.to_dtype(DType::F32)?;
            let y = o(std::slice::from_ref(&xd))?;
            assert_eq!(y.dtype(), dtype);
            assert_close(&y, &o(std::slice::from_ref(&x32))?, tol, &what)?;
            let rd = r.to_dtype(dtype)?;
            let g = grads(&o, &[xd], &rd, &what)?;
            let w = grads(&o, &[x32], &rd.to_dtype(DType::F32)?, &what)?;
            assert_eq!(g[0].dtype(), dtype);
            assert_close(&g[0], &w[0], tol, &format!("{what} gradient"))?;
        }
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    let (x, c, sn) = inputs([4, 8, 33, 130], 80, DType::F32)?;
    for layout in LAYOUTS {
        let o = |t: &[Tensor]| kernels::rope(&t[0], &c, &sn, layout);
        check_thread_independent(&o, std::slice::from_ref(&x), &format!("rope {layout:?}"))?;
    }
    Ok(())
}

#[test]
fn wrong_shapes_are_errors_naming_the_shapes() -> Result<()> {
    let x = tensor(&[2, 3, 5, 6], 90, 1.0, DType::F32)?;
    let ok = Tensor::ones((5, 3), DType::F32, &Device::Cpu)?;
    for bad in [(6, 3), (5, 6), (4, 3)] {
        let bad = Tensor::ones(bad, DType::F32, &Device::Cpu)?;
        for (what, c, s) in [("cos", &bad, &ok), ("sin", &ok, &bad)] {
            for layout in LAYOUTS {
                for err in [
                    kernels::rope(&x, c, s, layout).unwrap_err().to_string(),
                    reference::rope(&x, c, s, layout).unwrap_err().to_string(),
                ] {
                    assert!(err.contains(what), "{err}");
                    assert!(err.contains("[2, 3, 5, 6]"), "{err}");
                    assert!(err.contains(&format!("{:?}", bad.dims())), "{err}");
                }
            }
        }
    }
    // Odd D, wrong rank, wrong dtype.
    let odd = tensor(&[1, 2, 5, 7], 91, 1.0, DType::F32)?;
    let err = kernels::rope(&odd, &ok, &ok, RopeLayout::Half)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1, 2, 5, 7]") && err.contains("even"),
        "{err}"
    );
    let flat = tensor(&[3, 5, 6], 92, 1.0, DType::F32)?;
    let err = kernels::rope(&flat, &ok, &ok, RopeLayout::Half)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[3, 5, 6]") && err.contains("(B, H, T, D)"),
        "{err}"
    );
    let c16 = ok.to_dtype(DType::F16)?;
    let err = kernels::rope(&x, &c16, &ok, RopeLayout::Half)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dtype"), "{err}");
    Ok(())
}
