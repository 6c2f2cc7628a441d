//! `kernels::{silu, gelu_tanh, swiglu}` against `kernels::reference` (the formulas of slow
//! candle ops, with candle's `tanh`) and against candle's own `silu`/`gelu` forward: forward,
//! gradients of every input (reference autograd and finite differences in f64), strided
//! inputs, both tails, other dtypes, thread-count independence, shape errors.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::*;
use kernels::reference;

type Pair = (
    &'static str,
    fn(&[Tensor]) -> Result<Tensor>,
    fn(&[Tensor]) -> Result<Tensor>,
    usize,
);

/// (name, ours, reference, number of inputs) for every op.
const OPS: &[Pair] = &[
    (
        "silu",
        |t| kernels::silu(&t[0]),
        |t| reference::silu(&t[0]),
        1,
    ),
    (
        "gelu_tanh",
        |t| kernels::gelu_tanh(&t[0]),
        |t| reference::gelu_tanh(&t[0]),
        1,
    ),
    (
        "swiglu",
        |t| kernels::swiglu(&t[0], &t[1]),
        |t| reference::swiglu(&t[0], &t[1]),
        2,
    ),
];

fn inputs(n: usize, shape: &[usize], seed: u64, dtype: DType) -> Result<Vec<Tensor>> {
    (0..n)
        .map(|i| tensor(shape, seed + 100 * i as u64, 6.0, dtype))
        .collect()
}

#[test]
fn forward_matches_reference() -> Result<()> {
    for &(name, ours, refr, n) in OPS {
        for (i, shape) in SHAPES.iter().enumerate() {
            let t = inputs(n, shape, i as u64, DType::F32)?;
            check_forward(&ours, &refr, &t, 1e-5, &format!("{name} {shape:?}"))?;
        }
    }
    Ok(())
}

#[test]
fn forward_matches_candle_builtins() -> Result<()> {
    // candle's `gelu` is the tanh approximation; `silu` is x / (1 + exp(-x)).
    let x = tensor(&[7, 129], 3, 8.0, DType::F64)?;
    assert_close(&kernels::silu(&x)?, &x.silu()?, 1e-12, "silu vs candle")?;
    assert_close(
        &kernels::gelu_tanh(&x)?,
        &x.gelu()?,
        1e-12,
        "gelu vs candle",
    )?;
    Ok(())
}

#[test]
fn known_values() -> Result<()> {
    // The formulas in f64 with libm tanh/exp (Python `math`): 0.5 x (1 + tanh(u)), x / (1 + e^-x).
    let x = Tensor::new(&[-3.0f64, -0.5, 0.0, 1.0, 2.5], &Device::Cpu)?;
    let gelu = Tensor::new(
        &[
            -0.003_637_392_081_772_994_3f64,
            -0.154_285_990_174_856_06,
            0.0,
            0.841_191_990_608_276_8,
            2.484_915_733_910_001,
        ],
        &Device::Cpu,
    )?;
    let silu = Tensor::new(
        &[
            -0.142_277_619_532_700_35f64,
            -0.188_770_334_399_072_7,
            0.0,
            0.731_058_578_630_004_9,
            2.310_354_549_946_891_4,
        ],
        &Device::Cpu,
    )?;
    assert_close(&kernels::gelu_tanh(&x)?, &gelu, 1e-12, "gelu values")?;
    assert_close(&kernels::silu(&x)?, &silu, 1e-12, "silu values")?;
    Ok(())
}

/// `n` different tensors from one base: base * (1 - 0.3 i) + 0.5 i.
fn variants(base: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    (0..n)
        .map(|i| base.affine(1.0 - 0.3 * i as f64, 0.5 * i as f64))
        .collect()
}

#[test]
fn forward_on_strided_inputs_matches_reference() -> Result<()> {
    for &(name, ours, refr, n) in OPS {
        for shape in [&[3usize, 7][..], &[2, 5, 33], &[2, 3, 129]] {
            for (vname, base, view) in view_cases(shape, 11, 6.0)? {
                let t = variants(&base, n)?
                    .iter()
                    .map(|b| view.apply(b))
                    .collect::<Result<Vec<_>>>()?;
                let what = format!("{name} {vname} {shape:?}");
                check_forward(&ours, &refr, &t, 1e-5, &what)?;
            }
        }
    }
    Ok(())
}

#[test]
fn gradients_match_reference_autograd() -> Result<()> {
    for &(name, ours, refr, n) in OPS {
        for (i, shape) in SHAPES.iter().enumerate() {
            let t = inputs(n, shape, 20 + i as u64, DType::F32)?;
            check_backward(&ours, &refr, &t, 1e-4, true, &format!("{name} {shape:?}"))?;
        }
    }
    Ok(())
}

#[test]
fn gradients_through_strided_views_match_reference() -> Result<()> {
    for &(name, ours, refr, n) in OPS {
        for shape in [&[3usize, 7][..], &[2, 5, 33]] {
            for (vname, base, view) in view_cases(shape, 30, 6.0)? {
                let o = |t: &[Tensor]| {
                    let v = t
                        .iter()
                        .map(|t| view.apply(t))
                        .collect::<Result<Vec<_>>>()?;
                    ours(&v)
                };
                let r = |t: &[Tensor]| {
                    let v = t
                        .iter()
                        .map(|t| view.apply(t))
                        .collect::<Result<Vec<_>>>()?;
                    refr(&v)
                };
                let t = variants(&base, n)?;
                let what = format!("{name} {vname} {shape:?}");
                check_backward(&o, &r, &t, 1e-4, true, &what)?;
            }
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences_f64() -> Result<()> {
    for &(name, ours, _, n) in OPS {
        let t = inputs(n, &[3, 7], 40, DType::F64)?;
        check_finite_diff(&ours, &t, 1e-6, 1e-7, &format!("{name} f64"))?;
    }
    Ok(())
}

#[test]
fn tails_are_finite_and_match_reference() -> Result<()> {
    // Large |x|: no NaN or inf from exp overflow, in forward or gradients.
    let v = [-200.0f32, -90.0, -40.0, -12.0, 12.0, 40.0, 90.0, 200.0];
    let x = Tensor::new(&v, &Device::Cpu)?;
    let up = Tensor::new(&[1.5f32; 8], &Device::Cpu)?;
    for &(name, ours, refr, n) in OPS {
        let t = [x.clone(), up.clone()][..n].to_vec();
        let r = Tensor::ones(8, DType::F32, &Device::Cpu)?;
        let y = ours(&t)?;
        check_grads_usable(std::slice::from_ref(&y), true, name)?;
        let g = grads(&ours, &t, &r, name)?;
        check_grads_usable(&g, true, name)?;
        // The reference overflows at the far tails (tanh, exp): compare where it is finite.
        let want = refr(&t)?.to_vec1::<f32>()?;
        for (k, (a, b)) in y.to_vec1::<f32>()?.iter().zip(&want).enumerate() {
            if b.is_finite() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{name}[{k}]: {a} vs {b}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn frozen_up_still_gives_gate_its_gradient() -> Result<()> {
    let t = inputs(2, &[4, 9], 45, DType::F32)?;
    let frozen = t[1].clone();
    let o = |x: &[Tensor]| kernels::swiglu(&x[0], &frozen);
    let r = |x: &[Tensor]| reference::swiglu(&x[0], &frozen);
    check_backward(&o, &r, &t[..1], 1e-4, true, "swiglu frozen up")?;
    let frozen = t[0].clone();
    let o = |x: &[Tensor]| kernels::swiglu(&frozen, &x[0]);
    let r = |x: &[Tensor]| reference::swiglu(&frozen, &x[0]);
    check_backward(&o, &r, &t[1..], 1e-4, true, "swiglu frozen gate")?;
    Ok(())
}

#[test]
fn other_dtypes_match_f32() -> Result<()> {
    for &(name, ours, _, n) in OPS {
        let t = inputs(n, &[3, 5, 40], 60, DType::F32)?;
        let want = ours(&t)?;
        let r = tensor(&[3, 5, 40], 61, 1.0, DType::F32)?;
        let want_g = grads(&ours, &t, &r, name)?;
        for (dtype, tol) in [(DType::F64, 1e-5), (DType::BF16, 2e-2), (DType::F16, 2e-3)] {
            let what = format!("{name} {dtype:?}");
            // Round the inputs to the dtype first, so only the computation differs.
            let td = t
                .iter()
                .map(|x| x.to_dtype(dtype))
                .collect::<Result<Vec<_>>>()?;
            let t32 = td
                .iter()
                .map(|x| x.to_dtype(DType::F32))
                .collect::<Result<Vec<_>>>()?;
            let (want, want_g) = if dtype == DType::F64 {
                (want.clone(), want_g.clone())
            } else {
                (
                    ours(&t32)?,
                    grads(&ours, &t32, &r.to_dtype(dtype)?.to_dtype(DType::F32)?, name)?,
                )
            };
            let y = ours(&td)?;
            assert_eq!(y.dtype(), dtype);
            assert_close(&y, &want, tol, &what)?;
            let g = grads(&ours, &td, &r.to_dtype(dtype)?, &what)?;
            for (i, (g, w)) in g.iter().zip(&want_g).enumerate() {
                assert_eq!(g.dtype(), dtype);
                assert_close(g, w, tol, &format!("{what} gradient {i}"))?;
            }
        }
    }
    Ok(())
}

#[test]
fn results_do_not_depend_on_thread_count() -> Result<()> {
    for &(name, ours, _, n) in OPS {
        check_thread_independent(&ours, &inputs(n, &[300, 129], 70, DType::F32)?, name)?;
    }
    Ok(())
}

#[test]
fn swiglu_shape_mismatch_is_an_error_naming_the_shapes() -> Result<()> {
    let g = tensor(&[2, 3, 4], 80, 1.0, DType::F32)?;
    for u in [
        Tensor::ones((2, 3, 5), DType::F32, &Device::Cpu)?,
        Tensor::ones((3, 4), DType::F32, &Device::Cpu)?,
    ] {
        let err = kernels::swiglu(&g, &u).unwrap_err().to_string();
        assert!(err.contains("[2, 3, 4]"), "{err}");
        assert!(err.contains(&format!("{:?}", u.dims())), "{err}");
    }
    let u16 = Tensor::ones((2, 3, 4), DType::F16, &Device::Cpu)?;
    let err = kernels::swiglu(&g, &u16).unwrap_err().to_string();
    assert!(err.contains("dtype"), "{err}");
    Ok(())
}

#[test]
fn integer_input_is_an_error_naming_the_op() -> Result<()> {
    let x = Tensor::new(&[1u32, 2, 3], &Device::Cpu)?;
    let err = kernels::gelu_tanh(&x).unwrap_err().to_string();
    assert!(err.contains("gelu_tanh") && err.contains("U32"), "{err}");
    Ok(())
}
