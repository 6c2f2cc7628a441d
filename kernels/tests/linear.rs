//! `kernels::linear` with and without bias against `kernels::reference::linear` (x reshaped to
//! (N, in), matmul with Wᵀ, broadcast add): forward, gradients of x, weight and bias
//! (reference autograd and finite differences), odd shapes (N = 1, in and out not multiples
//! of 8, 1-D to 4-D x), strided x, weight and bias, frozen inputs, other dtypes, thread-count
//! independence, shape errors.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor, Var};
use common::*;
use kernels::reference;

/// Inputs [x, w, b]: with bias.
fn ours(t: &[Tensor]) -> Result<Tensor> {
    kernels::linear(&t[0], &t[1], Some(&t[2]))
}

fn refr(t: &[Tensor]) -> Result<Tensor> {
    reference::linear(&t[0], &t[1], Some(&t[2]))
}

/// Inputs [x, w]: without bias.
fn ours_nb(t: &[Tensor]) -> Result<Tensor> {
    kernels::linear(&t[0], &t[1], None)
}

fn refr_nb(t: &[Tensor]) -> Result<Tensor> {
    reference::linear(&t[0], &t[1], None)
}

/// (shape of x, out): N = 1, a 1-D x, in and out odd or not multiples of 8, out = 1, 3-D and
/// 4-D x.
const CASES: &[(&[usize], usize)] = &[
    (&[1, 5], 3),
    (&[9], 4),
    (&[3, 7], 13),
    (&[2, 5, 33], 17),
    (&[2, 3, 4, 9], 1),
    (&[4, 1, 64], 40),
    (&[2, 3, 129], 70),
];

/// [x, w, b] for x of `shape` and `out` outputs; w scaled as torch.nn.Linear's init.
fn inputs(shape: &[usize], out: usize, seed: u64, dtype: DType) -> Result<Vec<Tensor>> {
    let inp = shape[shape.len() - 1];
    Ok(vec![
        tensor(shape, seed, 1.0, dtype)?,
        tensor(&[out, inp], seed + 1000, 1.0 / (inp as f64).sqrt(), dtype)?,
        tensor(&[out], seed + 2000, 0.5, dtype)?,
    ])
}

#[test]
fn forward_matches_reference_with_and_without_bias() -> Result<()> {
    for (i, &(shape, out)) in CASES.iter().enumerate() {
        let t = inputs(shape, out, i as u64, DType::F32)?;
        let y = ours(&t)?;
        let mut want = shape.to_vec();
        *want.last_mut().unwrap() = out;
        assert_eq!(y.dims(), want.as_slice());
        check_forward(
            &ours,
            &refr,
            &t,
            1e-5,
            &format!("linear {shape:?} -> {out}"),
        )?;
        let what = format!("linear no bias {shape:?} -> {out}");
        check_forward(&ours_nb, &refr_nb, &t[..2], 1e-5, &what)?;
    }
    Ok(())
}

/// Strided views of x, from base tensors, each as (name, base, view): the last two dims
/// swapped and the last dim narrowed (common::view_cases), leading dims that do not merge
/// ((T, B, in) seen as (B, T, in)), and a 2-D x that is column-major.
fn x_views(shape: &[usize], seed: u64) -> Result<Vec<(String, Tensor, XView)>> {
    let mut v: Vec<(String, Tensor, XView)> = view_cases(shape, seed, 1.0)?
        .into_iter()
        .map(|(n, b, view)| (n, b, XView::Common(view)))
        .collect();
    if shape.len() == 3 {
        let swapped = [shape[1], shape[0], shape[2]];
        let base = tensor(&swapped, seed + 1, 1.0, DType::F32)?;
        v.push(("leading dims swapped".into(), base, XView::SwapLeading));
    }
    if shape.len() == 2 {
        let base = tensor(&[shape[1], shape[0]], seed + 2, 1.0, DType::F32)?;
        v.push(("column-major".into(), base, XView::T));
    }
    Ok(v)
}

#[derive(Clone, Copy)]
enum XView {
    Common(View),
    SwapLeading,
    T,
}

impl XView {
    fn apply(self, t: &Tensor) -> Result<Tensor> {
        let v = match self {
            XView::Common(v) => return v.apply(t),
            XView::SwapLeading => t.transpose(0, 1)?,
            XView::T => t.t()?,
        };
        assert!(!v.is_contiguous());
        Ok(v)
    }
}

/// Strided parameters for (out, in): a column-major weight ((in, out) transposed), a weight
/// narrowed from (out, in + 3), and a bias with stride 2 (a column of an (out, 2) tensor).
fn strided_params(out: usize, inp: usize, seed: u64) -> Result<Vec<(String, Tensor, Tensor)>> {
    let k = 1.0 / (inp as f64).sqrt();
    let wt = tensor(&[inp, out], seed, k, DType::F32)?.t()?;
    let wn = tensor(&[out, inp + 3], seed + 1, k, DType::F32)?.narrow(1, 2, inp)?;
    let b2 = tensor(&[out, 2], seed + 2, 0.5, DType::F32)?.i((.., 1))?;
    let b = tensor(&[out], seed + 3, 0.5, DType::F32)?;
    assert!(!wt.is_contiguous() && !wn.is_contiguous() && (out == 1 || !b2.is_contiguous()));
    Ok(vec![
        ("column-major weight".into(), wt, b.clone()),
        ("narrowed weight".into(), wn, b),
        (
            "strided bias".into(),
            tensor(&[out, inp], seed + 4, k, DType::F32)?,
            b2,
        ),
    ])
}

#[test]
fn forward_on_strided_input_and_parameters_matches_reference() -> Result<()> {
    for (shape, out) in [
        (&[3usize, 7][..], 5usize),
        (&[2, 5, 33], 17),
        (&[2, 3, 129], 9),
    ] {
        let inp = shape[shape.len() - 1];
        let t = inputs(shape, out, 7, DType::F32)?;
        for (name, base, view) in x_views(shape, 11)? {
            let x = view.apply(&base)?;
            let t = [x, t[1].clone(), t[2].clone()];
            let what = format!("linear {name} {shape:?}");
            check_forward(&ours, &refr, &t, 1e-5, &what)?;
            check_forward(
                &ours_nb,
                &refr_nb,
                &t[..2],
                1e-5,
                &format!("{what} no bias"),
            )?;
        }
        for (name, w, b) in strided_params(out, inp, 12)? {
            let t = [t[0].clone(), w, b];
            let what = format!("linear {name} {shape:?}");
            check_forward(&ours, &refr, &t, 1e-5, &what)?;
            check_forward(
                &ours_nb,
                &refr_nb,
                &t[..2],
                1e-5,
                &format!("{what} no bias"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_reference_autograd_with_and_without_bias() -> Result<()> {
    for (i, &(shape, out)) in CASES.iter().enumerate() {
        let t = inputs(shape, out, 20 + i as u64, DType::F32)?;
        let what = format!("linear {shape:?} -> {out}");
        check_backward(&ours, &refr, &t, 1e-5, true, &what)?;
        let what = format!("linear no bias {shape:?} -> {out}");
        check_backward(&ours_nb, &refr_nb, &t[..2], 1e-5, true, &what)?;
    }
    Ok(())
}

#[test]
fn gradients_through_strided_views_match_reference() -> Result<()> {
    for (shape, out) in [(&[3usize, 7][..], 5usize), (&[2, 5, 33], 17)] {
        let inp = shape[shape.len() - 1];
        let p = inputs(shape, out, 30, DType::F32)?;
        for (name, base, view) in x_views(shape, 31)? {
            let o = |t: &[Tensor]| kernels::linear(&view.apply(&t[0])?, &t[1], Some(&t[2]));
            let r = |t: &[Tensor]| reference::linear(&view.apply(&t[0])?, &t[1], Some(&t[2]));
            let t = [base, p[1].clone(), p[2].clone()];
            check_backward(&o, &r, &t, 1e-5, true, &format!("linear {name} {shape:?}"))?;
        }
        // The weight as a transposed view of an (in, out) parameter, the bias a column.
        let o = |t: &[Tensor]| kernels::linear(&t[0], &t[1].t()?, Some(&t[2].i((.., 1))?));
        let r = |t: &[Tensor]| reference::linear(&t[0], &t[1].t()?, Some(&t[2].i((.., 1))?));
        let k = 1.0 / (inp as f64).sqrt();
        let t = [
            p[0].clone(),
            tensor(&[inp, out], 32, k, DType::F32)?,
            tensor(&[out, 2], 33, 0.5, DType::F32)?,
        ];
        check_backward(
            &o,
            &r,
            &t,
            1e-5,
            true,
            &format!("linear strided params {shape:?}"),
        )?;
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    let t = inputs(&[2, 3, 7], 5, 40, DType::F64)?;
    check_finite_diff(&ours, &t, 1e-6, 1e-7, "linear f64")?;
    check_finite_diff(&ours_nb, &t[..2], 1e-6, 1e-7, "linear no bias f64")
}

#[test]
fn only_the_tracked_inputs_get_gradients() -> Result<()> {
    let t = inputs(&[4, 9], 6, 45, DType::F32)?;
    let (x, w, b) = (t[0].clone(), t[1].clone(), t[2].clone());
    // Frozen parameters: x alone.
    let o = |v: &[Tensor]| kernels::linear(&v[0], &w, Some(&b));
    let r = |v: &[Tensor]| reference::linear(&v[0], &w, Some(&b));
    check_backward(&o, &r, &t[..1], 1e-5, true, "linear frozen parameters")?;
    // A constant input (a first layer): weight and bias only.
    let o = |v: &[Tensor]| kernels::linear(&x, &v[0], Some(&v[1]));
    let r = |v: &[Tensor]| reference::linear(&x, &v[0], Some(&v[1]));
    check_backward(&o, &r, &t[1..], 1e-5, true, "linear constant input")?;
    // The bias alone, the weight alone.
    let o = |v: &[Tensor]| kernels::linear(&x, &w, Some(&v[0]));
    let r = |v: &[Tensor]| reference::linear(&x, &w, Some(&v[0]));
    check_backward(&o, &r, &t[2..], 1e-5, true, "linear bias only")?;
    let o = |v: &[Tensor]| kernels::linear(&x, &v[0], Some(&b));
    let r = |v: &[Tensor]| reference::linear(&x, &v[0], Some(&b));
    check_backward(&o, &r, &t[1..2], 1e-5, true, "linear weight only")?;
    // The untracked ones get none.
    let wv = Var::from_tensor(&w)?;
    let g = (kernels::linear(&x, &wv, Some(&b))?.sum_all()?).backward()?;
    assert!(g.get(&x).is_none() && g.get(&b).is_none() && g.get(&wv).is_some());
    Ok(())
}

#[test]
fn gradients_accumulate_over_two_uses() -> Result<()> {
    // The same weight in two layers (and x through both): gradients add up as the reference's.
    let t = inputs(&[3, 8], 8, 50, DType::F32)?;
    let o = |v: &[Tensor]| {
        let h = kernels::linear(&v[0], &v[1], Some(&v[2]))?;
        kernels::linear(&h, &v[1], None)
    };
    let r = |v: &[Tensor]| {
        let h = reference::linear(&v[0], &v[1], Some(&v[2]))?;
        reference::linear(&h, &v[1], None)
    };
    check_backward(&o, &r, &t, 1e-5, true, "linear twice")?;
    Ok(())
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    let t = inputs(&[3, 5, 40], 24, 60, DType::F32)?;
    let want = ours(&t)?;
    let r = tensor(&[3, 5, 24], 61, 1.0, DType::F32)?;
    let want_g = grads(&ours, &t, &r, "linear f32")?;
    for (dtype, tol) in [(DType::F64, 1e-5), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
        let what = format!("linear {dtype:?}");
        let td = t
            .iter()
            .map(|x| x.to_dtype(dtype))
            .collect::<Result<Vec<_>>>()?;
        let y = ours(&td)?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&y, &want, tol, &what)?;
        // Against the reference in the same dtype: the same matmul, the same rounding.
        check_forward(
            &ours,
            &refr,
            &td,
            tol / 4.0,
            &format!("{what} vs reference"),
        )?;
        let g = grads(&ours, &td, &r.to_dtype(dtype)?, &what)?;
        for (i, (g, w)) in g.iter().zip(&want_g).enumerate() {
            assert_eq!(g.dtype(), dtype);
            // dW and db sum 15 rows: allow for the rounding of each.
            let tol = if i > 0 { 16.0 * tol } else { 4.0 * tol };
            assert_close(g, w, tol, &format!("{what} gradient {i}"))?;
        }
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    // Enough rows for several column-sum blocks (db) and bias-add tasks.
    let t = inputs(&[700, 129], 70, 70, DType::F32)?;
    check_thread_independent(&ours, &t, "linear")?;
    check_thread_independent(&ours_nb, &t[..2], "linear no bias")
}

#[test]
fn wrong_shapes_are_errors_naming_the_shapes() -> Result<()> {
    let x = tensor(&[2, 3, 4], 80, 1.0, DType::F32)?;
    let dev = &Device::Cpu;
    let w = Tensor::ones((5, 4), DType::F32, dev)?;
    let cases = [
        (
            kernels::linear(&x, &Tensor::ones((5, 6), DType::F32, dev)?, None),
            "[5, 6]",
            "weight",
        ),
        (
            kernels::linear(&x, &Tensor::ones(4, DType::F32, dev)?, None),
            "[4]",
            "weight",
        ),
        (
            kernels::linear(&x, &w, Some(&Tensor::ones(4, DType::F32, dev)?)),
            "[4]",
            "bias",
        ),
        (
            kernels::linear(&x, &w, Some(&Tensor::ones((1, 5), DType::F32, dev)?)),
            "[1, 5]",
            "bias",
        ),
    ];
    for (res, shape, what) in cases {
        let err = res.unwrap_err().to_string();
        assert!(err.contains(shape) && err.contains(what), "{err}");
        assert!(err.contains("[2, 3, 4]") || err.contains("[5, 4]"), "{err}");
    }
    let scalar = Tensor::new(1f32, dev)?;
    let err = kernels::linear(&scalar, &w, None).unwrap_err().to_string();
    assert!(err.contains("scalar"), "{err}");
    let err = kernels::linear(&x, &w.to_dtype(DType::F64)?, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("F64") && err.contains("F32"), "{err}");
    Ok(())
}

#[test]
fn empty_inputs_give_empty_or_zero_results() -> Result<()> {
    let dev = &Device::Cpu;
    // No rows: y is (0, out), the weight gradient zero, the bias gradient zero.
    let x = Var::zeros((0, 4), DType::F32, dev)?;
    let w = Var::from_tensor(&tensor(&[3, 4], 90, 1.0, DType::F32)?)?;
    let b = Var::from_tensor(&tensor(&[3], 91, 1.0, DType::F32)?)?;
    let y = kernels::linear(&x, &w, Some(&b))?;
    assert_eq!(y.dims(), &[0, 3]);
    let g = y.sum_all()?.backward()?;
    assert_eq!(g.get(&w).unwrap().dims(), &[3, 4]);
    assert_eq!(
        g.get(&w).unwrap().abs()?.sum_all()?.to_scalar::<f32>()?,
        0.0
    );
    assert_eq!(
        g.get(&b).unwrap().abs()?.sum_all()?.to_scalar::<f32>()?,
        0.0
    );
    // No input features: y is the bias on every row.
    let x = Tensor::zeros((2, 0), DType::F32, dev)?;
    let w = Tensor::zeros((3, 0), DType::F32, dev)?;
    let y = kernels::linear(&x, &w, Some(&b))?;
    assert_close(
        &y,
        &b.as_tensor().unsqueeze(0)?.repeat((2, 1))?,
        0.0,
        "in = 0",
    )
}

#[test]
fn second_derivative_is_an_error_not_zero() -> Result<()> {
    let t = inputs(&[3, 4], 2, 95, DType::F32)?;
    let x = Var::from_tensor(&t[0])?;
    let w = Var::from_tensor(&t[1])?;
    let y = kernels::linear(&x, &w, None)?.sqr()?.sum_all()?;
    let g = y.backward()?;
    let gx = g.get(&x).unwrap();
    // gx depends on w through the backward op, which has no backward of its own.
    let err = gx.sum_all()?.backward().unwrap_err().to_string();
    assert!(err.contains("cotyle-linear-backward"), "{err}");
    Ok(())
}
