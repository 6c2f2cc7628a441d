//! `kernels::rms_norm` against `kernels::reference::rms_norm` (x / sqrt(mean(x^2) + eps) * w
//! of slow candle ops): forward, gradients of x and weight (reference autograd and finite
//! differences), strided inputs and weight, other dtypes, thread-count independence, shape
//! errors.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use common::*;
use kernels::reference;

const EPS: f64 = 1e-5;

fn ours(t: &[Tensor]) -> Result<Tensor> {
    kernels::rms_norm(&t[0], &t[1], EPS)
}

fn refr(t: &[Tensor]) -> Result<Tensor> {
    reference::rms_norm(&t[0], &t[1], EPS)
}

fn inputs(shape: &[usize], seed: u64, dtype: DType) -> Result<Vec<Tensor>> {
    let d = shape[shape.len() - 1];
    Ok(vec![
        tensor(shape, seed, 2.0, dtype)?,
        weight(d, seed + 1000, dtype)?,
    ])
}

#[test]
fn forward_matches_reference() -> Result<()> {
    for (i, shape) in SHAPES.iter().enumerate() {
        let what = format!("rms_norm {shape:?}");
        check_forward(
            &ours,
            &refr,
            &inputs(shape, i as u64, DType::F32)?,
            1e-5,
            &what,
        )?;
    }
    Ok(())
}

#[test]
fn forward_on_strided_input_and_weight_matches_reference() -> Result<()> {
    for shape in [&[3usize, 7][..], &[2, 5, 33], &[2, 3, 129]] {
        let d = shape[shape.len() - 1];
        // A weight with stride 2: column 0 of a (D, 2) tensor.
        let w = weight(2 * d, 5, DType::F32)?.reshape((d, 2))?.i((.., 0))?;
        assert!(!w.is_contiguous());
        for (name, base, view) in view_cases(shape, 11, 2.0)? {
            let t = [view.apply(&base)?, w.clone()];
            check_forward(
                &ours,
                &refr,
                &t,
                1e-5,
                &format!("rms_norm {name} {shape:?}"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_reference_autograd() -> Result<()> {
    for (i, shape) in SHAPES.iter().enumerate() {
        let t = inputs(shape, 20 + i as u64, DType::F32)?;
        check_backward(&ours, &refr, &t, 1e-4, true, &format!("rms_norm {shape:?}"))?;
    }
    Ok(())
}

#[test]
fn gradients_through_strided_views_match_reference() -> Result<()> {
    for shape in [&[3usize, 7][..], &[2, 5, 33]] {
        let d = shape[shape.len() - 1];
        for (name, base, view) in view_cases(shape, 30, 2.0)? {
            let o = |t: &[Tensor]| kernels::rms_norm(&view.apply(&t[0])?, &t[1], EPS);
            let r = |t: &[Tensor]| reference::rms_norm(&view.apply(&t[0])?, &t[1], EPS);
            let t = [base, weight(d, 31, DType::F32)?];
            check_backward(
                &o,
                &r,
                &t,
                1e-4,
                true,
                &format!("rms_norm {name} {shape:?}"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    let t = inputs(&[3, 7], 40, DType::F64)?;
    check_finite_diff(&ours, &t, 1e-6, 1e-6, "rms_norm f64")
}

#[test]
fn frozen_weight_still_gives_x_its_gradient() -> Result<()> {
    let t = inputs(&[4, 9], 45, DType::F32)?;
    let frozen = t[1].clone();
    let o = |x: &[Tensor]| kernels::rms_norm(&x[0], &frozen, EPS);
    let r = |x: &[Tensor]| reference::rms_norm(&x[0], &frozen, EPS);
    check_backward(&o, &r, &t[..1], 1e-4, true, "rms_norm frozen weight")?;
    Ok(())
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    let t = inputs(&[3, 5, 40], 60, DType::F32)?;
    let want = ours(&t)?;
    let r = tensor(&[3, 5, 40], 61, 1.0, DType::F32)?;
    let want_g = grads(&ours, &t, &r, "rms_norm f32")?;
    for (dtype, tol) in [(DType::F64, 1e-5), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
        let what = format!("rms_norm {dtype:?}");
        let td = [t[0].to_dtype(dtype)?, t[1].to_dtype(dtype)?];
        let y = ours(&td)?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&y, &want, tol, &what)?;
        let g = grads(&ours, &td, &r.to_dtype(dtype)?, &what)?;
        for (i, (g, w)) in g.iter().zip(&want_g).enumerate() {
            assert_eq!(g.dtype(), dtype);
            // The weight gradient sums 15 rows: allow for the rounding of each.
            let tol = if i == 1 { 16.0 * tol } else { 4.0 * tol };
            assert_close(g, w, tol, &format!("{what} gradient {i}"))?;
        }
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    check_thread_independent(&ours, &inputs(&[300, 129], 70, DType::F32)?, "rms_norm")
}

#[test]
fn wrong_weight_shape_is_an_error_naming_the_shapes() -> Result<()> {
    let x = tensor(&[2, 3, 4], 80, 1.0, DType::F32)?;
    for w in [
        Tensor::ones(5, DType::F32, &Device::Cpu)?,
        Tensor::ones((1, 4), DType::F32, &Device::Cpu)?,
    ] {
        let err = kernels::rms_norm(&x, &w, EPS).unwrap_err().to_string();
        assert!(err.contains("[2, 3, 4]"), "{err}");
        assert!(err.contains(&format!("{:?}", w.dims())), "{err}");
        assert!(err.contains("weight"), "{err}");
    }
    let w16 = Tensor::ones(4, DType::F16, &Device::Cpu)?;
    let err = kernels::rms_norm(&x, &w16, EPS).unwrap_err().to_string();
    assert!(err.contains("dtype"), "{err}");
    Ok(())
}
