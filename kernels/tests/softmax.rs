//! `kernels::softmax_last_dim` against `kernels::reference::softmax_last_dim` (exp / sum of
//! slow candle ops): forward, gradients (reference autograd and finite differences), strided
//! inputs, masked rows, other dtypes, thread-count independence.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::*;
use kernels::reference;

fn ours(t: &[Tensor]) -> Result<Tensor> {
    kernels::softmax_last_dim(&t[0])
}

fn refr(t: &[Tensor]) -> Result<Tensor> {
    reference::softmax_last_dim(&t[0])
}

#[test]
fn forward_matches_reference() -> Result<()> {
    for (i, shape) in SHAPES.iter().enumerate() {
        let x = tensor(shape, i as u64, 4.0, DType::F32)?;
        check_forward(&ours, &refr, &[x], 1e-5, &format!("softmax {shape:?}"))?;
    }
    Ok(())
}

#[test]
fn forward_on_strided_input_matches_reference() -> Result<()> {
    for shape in [&[3usize, 7][..], &[2, 5, 33], &[2, 3, 129]] {
        for (name, base, view) in view_cases(shape, 11, 4.0)? {
            let x = view.apply(&base)?;
            check_forward(
                &ours,
                &refr,
                &[x],
                1e-5,
                &format!("softmax {name} {shape:?}"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn gradient_matches_reference_autograd() -> Result<()> {
    for (i, shape) in SHAPES.iter().enumerate() {
        let x = tensor(shape, 20 + i as u64, 4.0, DType::F32)?;
        // A row of one element has softmax 1 whatever x is: its gradient is exactly 0.
        let nonzero = shape[shape.len() - 1] > 1;
        check_backward(
            &ours,
            &refr,
            &[x],
            1e-4,
            nonzero,
            &format!("softmax {shape:?}"),
        )?;
    }
    Ok(())
}

#[test]
fn gradient_through_strided_views_matches_reference() -> Result<()> {
    for shape in [&[3usize, 7][..], &[2, 5, 33]] {
        for (name, base, view) in view_cases(shape, 30, 4.0)? {
            let o = |t: &[Tensor]| kernels::softmax_last_dim(&view.apply(&t[0])?);
            let r = |t: &[Tensor]| reference::softmax_last_dim(&view.apply(&t[0])?);
            check_backward(
                &o,
                &r,
                &[base],
                1e-4,
                true,
                &format!("softmax {name} {shape:?}"),
            )?;
        }
    }
    Ok(())
}

#[test]
fn gradient_matches_finite_differences_f64() -> Result<()> {
    let x = tensor(&[3, 7], 40, 2.0, DType::F64)?;
    check_finite_diff(&ours, &[x], 1e-6, 1e-6, "softmax f64")
}

#[test]
fn masked_entries_get_zero_probability_and_finite_gradients() -> Result<()> {
    let mut v = values(2 * 9, 50, 3.0);
    for k in [1, 4, 8, 9, 10] {
        v[k] = f64::NEG_INFINITY;
    }
    v[12] = 80.0; // large but finite logits must not overflow
    let x = Tensor::from_vec(v, (2, 9), &Device::Cpu)?.to_dtype(DType::F32)?;
    let y = ours(std::slice::from_ref(&x))?;
    assert_close(&y, &refr(std::slice::from_ref(&x))?, 1e-6, "masked softmax")?;
    let y = y.to_vec2::<f32>()?;
    assert_eq!((y[0][1], y[0][4], y[0][8], y[1][0]), (0.0, 0.0, 0.0, 0.0));
    let r = tensor(&[2, 9], 51, 1.0, DType::F32)?;
    check_grads_usable(
        &grads(&ours, &[x], &r, "masked softmax")?,
        true,
        "masked softmax",
    )
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    let x = tensor(&[3, 5, 40], 60, 3.0, DType::F32)?;
    let want = ours(std::slice::from_ref(&x))?;
    let r = tensor(&[3, 5, 40], 61, 1.0, DType::F32)?;
    let want_g = grads(&ours, std::slice::from_ref(&x), &r, "softmax f32")?;
    for (dtype, tol) in [(DType::F64, 1e-6), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
        let what = format!("softmax {dtype:?}");
        let xd = x.to_dtype(dtype)?;
        let y = ours(std::slice::from_ref(&xd))?;
        assert_eq!(y.dtype(), dtype);
        assert_close(&y, &want, tol, &what)?;
        let g = grads(&ours, &[xd], &r.to_dtype(dtype)?, &what)?;
        assert_eq!(g[0].dtype(), dtype);
        assert_close(&g[0], &want_g[0], 4.0 * tol, &format!("{what} gradient"))?;
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    let x = tensor(&[300, 129], 70, 4.0, DType::F32)?;
    check_thread_independent(&ours, &[x], "softmax")
}

#[test]
fn scalar_and_integer_inputs_are_errors() -> Result<()> {
    let err = kernels::softmax_last_dim(&Tensor::new(1f32, &Device::Cpu)?).unwrap_err();
    assert!(err.to_string().contains("scalar"), "{err}");
    let err = kernels::softmax_last_dim(&Tensor::new(&[1u32, 2], &Device::Cpu)?).unwrap_err();
    assert!(err.to_string().contains("U32"), "{err}");
    Ok(())
}
