//! `kernels::layer_norm` with and without bias against `kernels::reference::layer_norm`
//! ((x - mean) / sqrt(var + eps) * w + b of slow candle ops): forward, gradients of x, weight
//! and bias (reference autograd and finite differences), strided inputs and parameters, other
//! dtypes, thread-count independence, shape errors.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use common::*;
use kernels::reference;

const EPS: f64 = 1e-5;

/// Inputs [x, w, b]: with bias.
fn ours(t: &[Tensor]) -> Result<Tensor> {
    kernels::layer_norm(&t[0], &t[1], Some(&t[2]), EPS)
}

fn refr(t: &[Tensor]) -> Result<Tensor> {
    reference::layer_norm(&t[0], &t[1], Some(&t[2]), EPS)
}

/// Inputs [x, w]: without bias.
fn ours_nb(t: &[Tensor]) -> Result<Tensor> {
    kernels::layer_norm(&t[0], &t[1], None, EPS)
}

fn refr_nb(t: &[Tensor]) -> Result<Tensor> {
    reference::layer_norm(&t[0], &t[1], None, EPS)
}

/// [x, w, b] for x of `shape`; x has a non-zero mean so centring matters.
fn inputs(shape: &[usize], seed: u64, dtype: DType) -> Result<Vec<Tensor>> {
    let d = shape[shape.len() - 1];
    Ok(vec![
        (tensor(shape, seed, 2.0, dtype)? + 0.7)?,
        weight(d, seed + 1000, dtype)?,
        tensor(&[d], seed + 2000, 0.5, dtype)?,
    ])
}

#[test]
fn forward_matches_reference_with_and_without_bias() -> Result<()> {
    for (i, shape) in SHAPES.iter().enumerate() {
        let t = inputs(shape, i as u64, DType::F32)?;
        check_forward(&ours, &refr, &t, 1e-5, &format!("layer_norm {shape:?}"))?;
        let what = format!("layer_norm no bias {shape:?}");
        check_forward(&ours_nb, &refr_nb, &t[..2], 1e-5, &what)?;
    }
    Ok(())
}

#[test]
fn forward_on_strided_input_and_parameters_matches_reference() -> Result<()> {
    for shape in [&[3usize, 7][..], &[2, 5, 33], &[2, 3, 129]] {
        let d = shape[shape.len() - 1];
        // Parameters with stride 2: the columns of a (D, 2) tensor.
        let wb = tensor(&[d, 2], 5, 0.5, DType::F32)?;
        let (w, b) = ((wb.i((.., 0))? + 1.0)?, wb.i((.., 1))?);
        assert!(!b.is_contiguous());
        for (name, base, view) in view_cases(shape, 11, 2.0)? {
            let t = [view.apply(&base)?, w.clone(), b.clone()];
            check_forward(
                &ours,
                &refr,
                &t,
                1e-5,
                &format!("layer_norm {name} {shape:?}"),
            )?;
            let what = format!("layer_norm no bias {name} {shape:?}");
            check_forward(&ours_nb, &refr_nb, &t[..2], 1e-5, &what)?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_reference_autograd_with_and_without_bias() -> Result<()> {
    for (i, shape) in SHAPES.iter().enumerate() {
        let t = inputs(shape, 20 + i as u64, DType::F32)?;
        // With one feature x̂ = 0: dx and dw are exactly 0 (db is not).
        let nonzero = shape[shape.len() - 1] > 1;
        let what = format!("layer_norm {shape:?}");
        let g = check_backward(&ours, &refr, &t, 1e-4, nonzero, &what)?;
        check_grads_usable(&g[2..], true, &format!("{what} bias"))?;
        let what = format!("layer_norm no bias {shape:?}");
        check_backward(&ours_nb, &refr_nb, &t[..2], 1e-4, nonzero, &what)?;
    }
    Ok(())
}

#[test]
fn gradients_through_strided_views_match_reference() -> Result<()> {
    for shape in [&[3usize, 7][..], &[2, 5, 33]] {
        let d = shape[shape.len() - 1];
        for (name, base, view) in view_cases(shape, 30, 2.0)? {
            let o =
                |t: &[Tensor]| kernels::layer_norm(&view.apply(&t[0])?, &t[1], Some(&t[2]), EPS);
            let r =
                |t: &[Tensor]| reference::layer_norm(&view.apply(&t[0])?, &t[1], Some(&t[2]), EPS);
            let t = [
                base,
                weight(d, 31, DType::F32)?,
                tensor(&[d], 32, 0.5, DType::F32)?,
            ];
            check_backward(
                &o,
                &r,
                &t,
                1e-4,
                true,
                &format!("layer_norm {name} {shape:?}"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    let t = inputs(&[3, 7], 40, DType::F64)?;
    check_finite_diff(&ours, &t, 1e-6, 1e-6, "layer_norm f64")?;
    check_finite_diff(&ours_nb, &t[..2], 1e-6, 1e-6, "layer_norm no bias f64")
}

#[test]
fn frozen_parameters_still_give_x_its_gradient() -> Result<()> {
    let t = inputs(&[4, 9], 45, DType::F32)?;
    let (w, b) = (t[1].clone(), t[2].clone());
    let o = |x: &[Tensor]| kernels::layer_norm(&x[0], &w, Some(&b), EPS);
    let r = |x: &[Tensor]| reference::layer_norm(&x[0], &w, Some(&b), EPS);
    check_backward(&o, &r, &t[..1], 1e-4, true, "layer_norm frozen parameters")?;
    // Only the bias trainable.
    let o = |x: &[Tensor]| kernels::layer_norm(&x[0], &w, Some(&x[1]), EPS);
    let r = |x: &[Tensor]| reference::layer_norm(&x[0], &w, Some(&x[1]), EPS);
    let t = [t[0].clone(), t[2].clone()];
    check_backward(&o, &r, &t, 1e-4, true, "layer_norm frozen weight")?;
    Ok(())
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    let t = inputs(&[3, 5, 40], 60, DType::F32)?;
    let want = ours(&t)?;
    let r = tensor(&[3, 5, 40], 61, 1.0, DType::F32)?;
    let want_g = grads(&ours, &t, &r, "layer_norm f32")?;
    for (dtype, tol) in [(DType::F64, 1e-5), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
        let what = format!("layer_norm {dtype:?}");
        let td = t
            .iter()
            .map(|x| x.to_dtype(dtype))
            .collect::<Result<Vec<_>>>()?;
        let y = ours(&td)?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&y, &want, tol, &what)?;
        let g = grads(&ours, &td, &r.to_dtype(dtype)?, &what)?;
        for (i, (g, w)) in g.iter().zip(&want_g).enumerate() {
            assert_eq!(g.dtype(), dtype);
            // Parameter gradients sum 15 rows: allow for the rounding of each.
            let tol = if i > 0 { 16.0 * tol } else { 4.0 * tol };
            assert_close(g, w, tol, &format!("{what} gradient {i}"))?;
        }
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    let t = inputs(&[300, 129], 70, DType::F32)?;
    check_thread_independent(&ours, &t, "layer_norm")?;
    check_thread_independent(&ours_nb, &t[..2], "layer_norm no bias")
}

#[test]
fn wrong_parameter_shapes_are_errors_naming_the_shapes() -> Result<()> {
    let x = tensor(&[2, 3, 4], 80, 1.0, DType::F32)?;
    let ok = Tensor::ones(4, DType::F32, &Device::Cpu)?;
    let bad = Tensor::ones(5, DType::F32, &Device::Cpu)?;
    let cases = [
        (kernels::layer_norm(&x, &bad, None, EPS), "weight"),
        (kernels::layer_norm(&x, &bad, Some(&ok), EPS), "weight"),
        (kernels::layer_norm(&x, &ok, Some(&bad), EPS), "bias"),
    ];
    for (res, what) in cases {
        let err = res.unwrap_err().to_string();
        assert!(err.contains("[2, 3, 4]") && err.contains("[5]"), "{err}");
        assert!(err.contains(what), "{err}");
    }
    Ok(())
}
