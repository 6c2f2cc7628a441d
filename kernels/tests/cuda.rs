//! Every op on CUDA against the CPU path: forward and every gradient (the backward ops run on
//! the GPU too), on odd shapes, strided and broadcast inputs, f32, f64, bf16 and f16, plus
//! run-to-run reproducibility; VQ indices and scores bit for bit. Needs the `cuda` feature and
//! a GPU (`cargo test -p cotyle-kernels --features cuda --test cuda`); without a GPU every test
//! prints why it skips and passes.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use common::*;
use kernels::vq::{code_histogram, nearest_code};
use kernels::RopeLayout;

const EPS: f64 = 1e-5;

/// (dtype, tolerance) of the CUDA-vs-CPU comparisons: f32 and f64 differ by summation order
/// and fused multiply-adds only; bf16 and f16 results may round to neighbouring values.
const DTYPES: [(DType, f64); 4] = [
    (DType::F32, 1e-4),
    (DType::F64, 1e-10),
    (DType::BF16, 2e-2),
    (DType::F16, 4e-3),
];

/// Shapes for the row ops: SHAPES plus rows wider than one block (1024 threads x 4) and more
/// rows than one column-sum chunk.
fn row_shapes() -> Vec<Vec<usize>> {
    let mut s: Vec<Vec<usize>> = SHAPES.iter().map(|s| s.to_vec()).collect();
    s.extend([vec![3, 5000], vec![300, 70], vec![2, 1, 3584]]);
    s
}

/// Makes an op's inputs for a shape of x and a dtype.
type Make<'a> = &'a dyn Fn(&[usize], DType) -> Result<Vec<Tensor>>;

/// `op` over `make(shape, dtype)` on CUDA vs CPU for every shape and dtype, and over strided
/// views (transposed, narrowed) of x in f32.
fn check_op(name: &str, op: Op, make: Make, dev: &Device) -> Result<()> {
    for shape in row_shapes() {
        for (dtype, tol) in DTYPES {
            let what = format!("{name} {shape:?} {dtype:?}");
            check_cuda_matches_cpu(op, &make(&shape, dtype)?, dev, tol, &what)?;
        }
    }
    for shape in [&[3usize, 7][..], &[2, 5, 33]] {
        for (view_name, base, view) in view_cases(shape, 91, 2.0)? {
            let mut t = make(shape, DType::F32)?;
            t[0] = base;
            let o = |v: &[Tensor]| {
                let mut v = v.to_vec();
                v[0] = view.apply(&v[0])?;
                op(&v)
            };
            let what = format!("{name} {view_name} {shape:?}");
            check_cuda_matches_cpu(&o, &t, dev, 1e-4, &what)?;
        }
    }
    Ok(())
}

#[test]
fn softmax_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("softmax") else {
        return Ok(());
    };
    let op = |t: &[Tensor]| kernels::softmax_last_dim(&t[0]);
    let make = |s: &[usize], dt| Ok(vec![tensor(s, 1, 4.0, dt)?]);
    check_op("softmax", &op, &make, &dev)?;
    // Masked entries, and a large logit.
    let mut v = values(2 * 9, 50, 3.0);
    for k in [1, 4, 8, 9, 10] {
        v[k] = f64::NEG_INFINITY;
    }
    v[12] = 80.0;
    let x = Tensor::from_vec(v, (2, 9), &Device::Cpu)?.to_dtype(DType::F32)?;
    check_cuda_matches_cpu(&op, &[x], &dev, 1e-5, "masked softmax")
}

#[test]
fn rms_norm_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("rms_norm") else {
        return Ok(());
    };
    let op = |t: &[Tensor]| kernels::rms_norm(&t[0], &t[1], EPS);
    let make = |s: &[usize], dt| {
        let d = s[s.len() - 1];
        Ok(vec![tensor(s, 2, 2.0, dt)?, weight(d, 3, dt)?])
    };
    check_op("rms_norm", &op, &make, &dev)
}

#[test]
fn layer_norm_matches_cpu_with_and_without_bias() -> Result<()> {
    let Some(dev) = cuda_device("layer_norm") else {
        return Ok(());
    };
    let make = |s: &[usize], dt| {
        let d = s[s.len() - 1];
        Ok(vec![
            (tensor(s, 4, 2.0, dt)? + 0.7)?,
            weight(d, 5, dt)?,
            tensor(&[d], 6, 0.5, dt)?,
        ])
    };
    let op = |t: &[Tensor]| kernels::layer_norm(&t[0], &t[1], Some(&t[2]), EPS);
    check_op("layer_norm", &op, &make, &dev)?;
    let make_nb = |s: &[usize], dt| Ok(make(s, dt)?[..2].to_vec());
    let op_nb = |t: &[Tensor]| kernels::layer_norm(&t[0], &t[1], None, EPS);
    check_op("layer_norm without bias", &op_nb, &make_nb, &dev)
}

#[test]
fn linear_matches_cpu_with_and_without_bias() -> Result<()> {
    let Some(dev) = cuda_device("linear") else {
        return Ok(());
    };
    // 37 outputs: no multiple of a gemm tile; the weight scaled as torch.nn.Linear's init.
    let make = |s: &[usize], dt| {
        let inp = s[s.len() - 1];
        Ok(vec![
            tensor(s, 13, 1.0, dt)?,
            tensor(&[37, inp], 14, 1.0 / (inp as f64).sqrt(), dt)?,
            tensor(&[37], 15, 0.5, dt)?,
        ])
    };
    let op = |t: &[Tensor]| kernels::linear(&t[0], &t[1], Some(&t[2]));
    check_op("linear", &op, &make, &dev)?;
    let make_nb = |s: &[usize], dt| Ok(make(s, dt)?[..2].to_vec());
    let op_nb = |t: &[Tensor]| kernels::linear(&t[0], &t[1], None);
    check_op("linear without bias", &op_nb, &make_nb, &dev)?;
    // Leading dims that do not merge, a column-major weight, a bias with stride 2.
    let t = [
        tensor(&[5, 4, 33], 16, 1.0, DType::F32)?,
        tensor(&[33, 37], 17, 0.2, DType::F32)?,
        tensor(&[37, 2], 18, 0.5, DType::F32)?,
    ];
    let o =
        |v: &[Tensor]| kernels::linear(&v[0].transpose(0, 1)?, &v[1].t()?, Some(&v[2].i((.., 1))?));
    check_cuda_matches_cpu(&o, &t, &dev, 1e-4, "linear strided")
}

#[test]
fn activations_match_cpu() -> Result<()> {
    let Some(dev) = cuda_device("activations") else {
        return Ok(());
    };
    let one = |s: &[usize], dt| Ok(vec![tensor(s, 7, 9.0, dt)?]);
    let two = |s: &[usize], dt| Ok(vec![tensor(s, 8, 9.0, dt)?, tensor(s, 9, 3.0, dt)?]);
    check_op("silu", &|t: &[Tensor]| kernels::silu(&t[0]), &one, &dev)?;
    check_op(
        "gelu_tanh",
        &|t: &[Tensor]| kernels::gelu_tanh(&t[0]),
        &one,
        &dev,
    )?;
    let swiglu = |t: &[Tensor]| kernels::swiglu(&t[0], &t[1]);
    check_op("swiglu", &swiglu, &two, &dev)?;
    // Scalars, and tails where sigma saturates.
    let x = Tensor::new(
        &[-800f32, -60.0, -1e-3, 0.0, 1e-3, 60.0, 800.0],
        &Device::Cpu,
    )?;
    for (name, op) in [
        ("silu", &(|t: &[Tensor]| kernels::silu(&t[0])) as Op),
        ("gelu_tanh", &|t: &[Tensor]| kernels::gelu_tanh(&t[0])),
    ] {
        check_cuda_matches_cpu(op, std::slice::from_ref(&x), &dev, 1e-5, name)?;
        let s = Tensor::new(0.3f32, &Device::Cpu)?;
        check_cuda_matches_cpu(op, &[s], &dev, 1e-5, &format!("{name} scalar"))?;
    }
    // A broadcast gate (stride 0).
    let g = Tensor::new(&[0.5f32, -1.5, 2.0], &Device::Cpu)?;
    let u = tensor(&[4, 3], 10, 2.0, DType::F32)?;
    let o = |t: &[Tensor]| kernels::swiglu(&t[0].broadcast_as((4, 3))?, &t[1]);
    check_cuda_matches_cpu(&o, &[g, u], &dev, 1e-5, "swiglu broadcast gate")
}

/// cos and sin tables (T, D/2) for positions p0.., as in Llama.
fn tables(t: usize, d: usize, p0: usize, dtype: DType) -> Result<(Tensor, Tensor)> {
    let h = d / 2;
    let ang: Vec<f64> = (0..t * h)
        .map(|k| (p0 + k / h) as f64 * 10000f64.powf(-2.0 * (k % h) as f64 / d as f64))
        .collect();
    let a = Tensor::from_vec(ang, (t, h), &Device::Cpu)?;
    Ok((a.cos()?.to_dtype(dtype)?, a.sin()?.to_dtype(dtype)?))
}

#[test]
fn rope_matches_cpu_in_both_layouts() -> Result<()> {
    let Some(dev) = cuda_device("rope") else {
        return Ok(());
    };
    for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
        for s in [
            [1, 1, 1, 2],
            [2, 3, 5, 6],
            [1, 2, 7, 34],
            [2, 1, 4, 64],
            [1, 3, 3, 130],
            [1, 2, 9, 600],
        ] {
            for (dtype, tol) in DTYPES {
                let (c, sn) = tables(s[2], s[3], 3, dtype)?;
                let x = tensor(&s, 11, 2.0, dtype)?;
                // cos and sin get no gradient: not inputs of the check, moved to x's device.
                let o = |t: &[Tensor]| {
                    let on = |v: &Tensor| v.to_device(t[0].device());
                    kernels::rope(&t[0], &on(&c)?, &on(&sn)?, layout)
                };
                let what = format!("rope {layout:?} {s:?} {dtype:?}");
                check_cuda_matches_cpu(&o, &[x], &dev, tol, &what)?;
            }
        }
        // x as (B, T, H, D).transpose(1, 2), tables narrowed to positions 5.. of a longer one.
        let (b, h, t, d) = (2, 3, 6, 16);
        let xt = tensor(&[b, t, h, d], 12, 2.0, DType::F32)?;
        let (c, sn) = tables(t + 9, d, 0, DType::F32)?;
        let o = |v: &[Tensor]| {
            let on = |u: &Tensor| u.to_device(v[0].device())?.narrow(0, 5, t);
            kernels::rope(&v[0].transpose(1, 2)?, &on(&c)?, &on(&sn)?, layout)
        };
        let what = format!("rope {layout:?} strided");
        check_cuda_matches_cpu(&o, &[xt], &dev, 1e-5, &what)?;
    }
    Ok(())
}

/// Rows of `shape` (…, D) from the LCG, L2-normalised.
fn unit(shape: &[usize], seed: u64) -> Result<Tensor> {
    let x = tensor(shape, seed, 1.0, DType::F32)?;
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

/// nearest_code on CUDA gives the CPU's indices and the CPU's scores, bit for bit.
fn check_nearest(z: &Tensor, c: &Tensor, dev: &Device, what: &str) -> Result<()> {
    let (i_cpu, b_cpu) = nearest_code(z, c)?;
    let (i_dev, b_dev) = nearest_code(&z.to_device(dev)?, &c.to_device(dev)?)?;
    assert!(
        i_dev.device().same_device(dev),
        "{what}: result not on the GPU"
    );
    assert_eq!(b_dev.dtype(), b_cpu.dtype(), "{what}: score dtype");
    let bits = |t: &Tensor| -> Result<Vec<u64>> {
        let v = t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        Ok(v.to_vec1::<f64>()?.iter().map(|f| f.to_bits()).collect())
    };
    let (got, want) = (i_dev.to_vec1::<u32>()?, i_cpu.to_vec1::<u32>()?);
    if let Some(r) = (0..got.len()).find(|&r| got[r] != want[r]) {
        panic!("{what}: row {r}: CUDA index {} vs CPU {}", got[r], want[r]);
    }
    assert_eq!(bits(&b_dev)?, bits(&b_cpu)?, "{what}: scores differ");
    Ok(())
}

#[test]
fn nearest_code_matches_cpu_exactly() -> Result<()> {
    let Some(dev) = cuda_device("vq::nearest_code") else {
        return Ok(());
    };
    // Few rows (the codebook is split across blocks), many rows, odd sizes, D past one stage.
    for (n, k, d) in [
        (1, 1, 1),
        (5, 3, 17),
        (196, 1024, 64),
        (200, 130, 17),
        (4100, 1024, 64),
        (97, 300, 200),
    ] {
        let (z, c) = (unit(&[n, d], 1)?, unit(&[k, d], 2)?);
        check_nearest(&z, &c, &dev, &format!("nearest_code ({n}, {k}, {d})"))?;
        // Duplicated codes make exact ties: the lowest index must win on both.
        let cc = Tensor::cat(&[&c, &c], 0)?;
        check_nearest(&z, &cc, &dev, &format!("nearest_code ties ({n}, {k}, {d})"))?;
    }
    // Strided inputs, other dtypes.
    // z.t(): (64, 40), c.t(): (70, 40).
    let (z, c) = (unit(&[40, 64], 3)?, unit(&[40, 70], 4)?);
    check_nearest(&z.t()?, &c.t()?, &dev, "nearest_code transposed")?;
    for dt in [DType::F64, DType::BF16, DType::F16] {
        let (zd, cd) = (z.to_dtype(dt)?, c.t()?.contiguous()?.to_dtype(dt)?);
        check_nearest(&zd.t()?, &cd, &dev, &format!("nearest_code {dt:?}"))?;
    }
    // A NaN row: index 0 and a NaN score on both.
    let mut v = z
        .t()?
        .i(0..3)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    v[..40].fill(f32::NAN);
    let zn = Tensor::from_vec(v, (3, 40), &Device::Cpu)?;
    let (i, b) = nearest_code(&zn.to_device(&dev)?, &c.t()?.to_device(&dev)?)?;
    assert_eq!(i.to_vec1::<u32>()?[0], 0);
    assert!(b.to_vec1::<f32>()?[0].is_nan());
    check_nearest(&zn, &c.t()?, &dev, "nearest_code NaN row")
}

#[test]
fn code_histogram_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("vq::code_histogram") else {
        return Ok(());
    };
    let k = 37;
    let idx: Vec<u32> = values(5000, 3, 1.0)
        .iter()
        .map(|v| ((v.abs() * 1e6) as u32) % k as u32)
        .collect();
    let idx = Tensor::from_vec(idx, 5000, &Device::Cpu)?;
    for t in [
        idx.clone(),
        idx.to_dtype(DType::I64)?,
        idx.reshape((50, 100))?.t()?.i(3)?,
        idx.i(7..4007)?,
    ] {
        let want = code_histogram(&t, k)?.to_vec1::<i64>()?;
        let got = code_histogram(&t.to_device(&dev)?, k)?;
        assert_eq!(got.dtype(), DType::I64);
        assert_eq!(got.to_vec1::<i64>()?, want);
    }
    // An index out of range: the same error as on the CPU, naming the first bad position.
    let bad = Tensor::new(&[1i64, 40, 2, -3], &Device::Cpu)?;
    let want = code_histogram(&bad, k).unwrap_err().to_string();
    let got = code_histogram(&bad.to_device(&dev)?, k)
        .unwrap_err()
        .to_string();
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn integer_inputs_are_errors_on_cuda() -> Result<()> {
    let Some(dev) = cuda_device("dtype errors") else {
        return Ok(());
    };
    let x = Tensor::new(&[1u32, 2, 3], &dev)?;
    let err = kernels::softmax_last_dim(&x).unwrap_err().to_string();
    assert!(err.contains("U32"), "{err}");
    let err = kernels::silu(&x).unwrap_err().to_string();
    assert!(err.contains("U32"), "{err}");
    Ok(())
}

/// (dtype, tolerance) for attention: as DTYPES, with more room for bf16 and f16, whose
/// gradients also go through the forward's rounded output (Dl = rowsum(dO * o)).
const ATT_DTYPES: [(DType, f64); 4] = [
    (DType::F32, 1e-4),
    (DType::F64, 1e-10),
    (DType::BF16, 3e-2),
    (DType::F16, 1e-2),
];

/// q (B, H, Tq, D), k and v (B, Hkv, Tk, D) for sizes (B, H, Hkv, Tq, Tk, D).
fn attention_inputs(s: [usize; 6], seed: u64, dtype: DType) -> Result<Vec<Tensor>> {
    let [b, h, hkv, tq, tk, d] = s;
    Ok(vec![
        tensor(&[b, h, tq, d], seed, 1.0, dtype)?,
        tensor(&[b, hkv, tk, d], seed + 1, 1.0, dtype)?,
        tensor(&[b, hkv, tk, d], seed + 2, 1.0, dtype)?,
    ])
}

/// Attention over t = [q, k, v] with these options; the mask (no gradient, not an input of
/// the check) is moved to q's device.
fn attention_op(
    causal: bool,
    scale: Option<f64>,
    mask: Option<&Tensor>,
) -> impl Fn(&[Tensor]) -> Result<Tensor> + Sync + '_ {
    move |t: &[Tensor]| {
        let mask = match mask {
            Some(m) => Some(m.to_device(t[0].device())?),
            None => None,
        };
        let opts = kernels::AttentionOpts {
            causal,
            scale,
            mask: mask.as_ref(),
        };
        kernels::attention(&t[0], &t[1], &t[2], &opts)
    }
}

#[test]
fn attention_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("attention") else {
        return Ok(());
    };
    // (B, H, Hkv, Tq, Tk, D), causal: T = 1, odd D, GQA, decoding over several key tiles,
    // Tq < Tk and Tq > Tk (leading rows with no visible key) under bottom-right alignment,
    // several query and key blocks, D = 100 and D = 128 (the widest; past 48 KiB of shared
    // memory, so the opt-in path runs).
    for (s, causal) in [
        ([1, 1, 1, 1, 1, 1], false),
        ([2, 3, 3, 5, 5, 7], true),
        ([1, 4, 2, 9, 9, 33], true),
        ([2, 2, 1, 1, 70, 16], true),
        ([1, 2, 1, 70, 130, 20], true),
        ([1, 2, 2, 70, 20, 16], true),
        ([2, 4, 2, 37, 37, 64], true),
        ([1, 1, 1, 33, 65, 100], false),
        ([1, 2, 2, 40, 40, 128], false),
        ([1, 2, 1, 17, 50, 128], true),
    ] {
        for (dtype, tol) in ATT_DTYPES {
            let t = attention_inputs(s, 3, dtype)?;
            let what = format!("attention {s:?} causal {causal} {dtype:?}");
            check_cuda_matches_cpu(&attention_op(causal, None, None), &t, &dev, tol, &what)?;
        }
    }
    // An explicit scale.
    let t = attention_inputs([1, 2, 1, 20, 30, 24], 4, DType::F32)?;
    let op = attention_op(true, Some(0.3), None);
    check_cuda_matches_cpu(&op, &t, &dev, 1e-4, "attention scale 0.3")
}

#[test]
fn attention_with_masks_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("attention masks") else {
        return Ok(());
    };
    let mk = |shape: &[usize], v: Vec<f64>| -> Result<Tensor> {
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(DType::F32)
    };
    let (b, tq, tk) = (2, 40, 40);
    // Window blocks of 16 (Tq, Tk), with row 3 masked entirely.
    let mut w: Vec<f64> = (0..tq * tk)
        .map(|x| match x / tk / 16 == x % tk / 16 {
            true => 0.0,
            false => f64::NEG_INFINITY,
        })
        .collect();
    w[3 * tk..4 * tk].fill(f64::NEG_INFINITY);
    let window = mk(&[tq, tk], w)?;
    // Key padding (B, 1, 1, Tk): batch 1 sees no key at all.
    let mut pad = vec![0.0; b * tk];
    pad[tk - 5..tk].fill(f64::NEG_INFINITY);
    pad[tk..].fill(f64::NEG_INFINITY);
    let padding = mk(&[b, 1, 1, tk], pad)?;
    // Finite biases: full (B, H, Tq, Tk), per key (Tk), per row broadcast over keys (Tq, 1).
    let full = tensor(&[b, 4, tq, tk], 20, 2.0, DType::F32)?;
    let keys = tensor(&[tk], 21, 2.0, DType::F32)?;
    let rows = tensor(&[tq, 1], 22, 2.0, DType::F32)?;
    let s = [b, 4, 2, tq, tk, 24];
    for (name, mask) in [
        ("window", &window),
        ("padding", &padding),
        ("full", &full),
        ("keys", &keys),
        ("rows", &rows),
    ] {
        for causal in [false, true] {
            for (dtype, tol) in ATT_DTYPES {
                let t = attention_inputs(s, 5, dtype)?;
                let what = format!("attention mask {name} causal {causal} {dtype:?}");
                let op = attention_op(causal, None, Some(mask));
                check_cuda_matches_cpu(&op, &t, &dev, tol, &what)?;
            }
        }
    }
    // (B, 1, Tq, Tk) with Tq != Tk, causal, and a mask in q's dtype (bf16) rather than f32.
    let s = [2, 2, 1, 12, 30, 16];
    let m = tensor(&[2, 1, 12, 30], 23, 1.0, DType::F32)?;
    let op = attention_op(true, None, Some(&m));
    let t = attention_inputs(s, 6, DType::F32)?;
    check_cuda_matches_cpu(&op, &t, &dev, 1e-4, "(B, 1, Tq, Tk)")?;
    let mb = m.to_dtype(DType::BF16)?;
    let op = attention_op(true, None, Some(&mb));
    let t = attention_inputs(s, 6, DType::BF16)?;
    check_cuda_matches_cpu(&op, &t, &dev, 3e-2, "bf16 mask")?;
    // Rows with every key masked give exactly 0 and contribute no gradient, never NaN.
    let t: Vec<Tensor> = attention_inputs([b, 4, 2, tq, tk, 24], 7, DType::F32)?
        .iter()
        .map(|x| x.to_device(&dev))
        .collect::<Result<_>>()?;
    let op = attention_op(false, None, Some(&window));
    let r = tensor(&[b, 4, tq, 24], 8, 1.0, DType::F32)?.to_device(&dev)?;
    let y = op(&t)?;
    let g = grads(&op, &t, &r, "masked row")?;
    check_grads_usable(&g, true, "masked row")?;
    for (what, x) in [("output", &y), ("dq", &g[0])] {
        let row = x.i((.., .., 3))?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(row, 0.0, "{what} of the masked row");
    }
    let op = attention_op(true, None, Some(&padding));
    let y = op(&t)?;
    let g = grads(&op, &t, &r, "masked batch")?;
    for (what, x) in [("output", &y), ("dq", &g[0]), ("dk", &g[1]), ("dv", &g[2])] {
        let v = x.i(1)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(v, 0.0, "{what} of the masked batch");
    }
    Ok(())
}

#[test]
fn attention_on_strided_inputs_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("attention strided") else {
        return Ok(());
    };
    // q, k, v as (B, T, H, D) projections transposed to (B, H, T, D), and D narrowed out of
    // wider rows: both compacted on the GPU before the kernels.
    let (b, h, hkv, tq, tk, d) = (2, 4, 2, 19, 23, 24);
    let t = vec![
        tensor(&[b, tq, h, d], 30, 1.0, DType::F32)?,
        tensor(&[b, tk, hkv, d], 31, 1.0, DType::F32)?,
        tensor(&[b, hkv, tk, d + 5], 32, 1.0, DType::F32)?,
    ];
    for causal in [false, true] {
        let op = |v: &[Tensor]| {
            let opts = kernels::AttentionOpts {
                causal,
                ..Default::default()
            };
            let q = v[0].transpose(1, 2)?;
            let k = v[1].transpose(1, 2)?;
            let vv = v[2].narrow(3, 2, d)?;
            kernels::attention(&q, &k, &vv, &opts)
        };
        let what = format!("attention strided causal {causal}");
        check_cuda_matches_cpu(&op, &t, &dev, 1e-4, &what)?;
    }
    Ok(())
}

#[test]
fn attention_packed_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device("attention_packed") else {
        return Ok(());
    };
    // RoPE tables and a mask, moved to qkv's device (no gradient, not inputs of the check).
    let tables = |t: usize, d: usize, dtype: DType| -> Result<(Tensor, Tensor)> {
        let a = tensor(&[t, d / 2], 50, 3.0, DType::F64)?;
        Ok((a.cos()?.to_dtype(dtype)?, a.sin()?.to_dtype(dtype)?))
    };
    let mask = tensor(&[2, 1, 19, 19], 51, 2.0, DType::F32)?;
    // (B, T, H, Hkv, D, RoPE layout, causal, mask): H == Hkv and GQA, T = 1, odd D, both RoPE
    // layouts, a mask; every dtype.
    let half = Some(kernels::RopeLayout::Half);
    let inter = Some(kernels::RopeLayout::Interleaved);
    let cases = [
        (2, 19, 3, 3, 7, None, true, None),
        (1, 1, 4, 2, 16, half, true, None),
        (2, 19, 4, 2, 24, inter, false, Some(&mask)),
        (2, 19, 2, 1, 64, half, true, None),
        (1, 40, 2, 2, 128, inter, true, None),
    ];
    for (b, t, h, hkv, d, layout, causal, mask) in cases {
        for (dtype, tol) in ATT_DTYPES {
            let (cos, sin) = tables(t, d, dtype)?;
            let op = |x: &[Tensor]| {
                let on = |y: &Tensor| y.to_device(x[0].device());
                let (cos, sin, mask) = (on(&cos)?, on(&sin)?, mask.map(on).transpose()?);
                let opts = kernels::AttentionOpts {
                    causal,
                    scale: None,
                    mask: mask.as_ref(),
                };
                let rope = layout.map(|l| (&cos, &sin, l));
                kernels::attention_packed(&x[0], h, hkv, rope, &opts)
            };
            let x = tensor(&[b, t, (h + 2 * hkv) * d], 52, 1.0, dtype)?;
            let what =
                format!("attention_packed B={b} T={t} H={h} Hkv={hkv} D={d} {layout:?} {dtype:?}");
            check_cuda_matches_cpu(&op, &[x], &dev, tol, &what)?;
        }
    }
    // qkv as a strided view.
    let op = |x: &[Tensor]| {
        let opts = kernels::AttentionOpts {
            causal: true,
            ..Default::default()
        };
        kernels::attention_packed(&x[0].transpose(1, 2)?, 2, 1, None, &opts)
    };
    let x = tensor(&[2, 4 * 12, 23], 53, 1.0, DType::F32)?;
    check_cuda_matches_cpu(&op, &[x], &dev, 1e-4, "attention_packed strided")
}

#[test]
fn attention_past_the_widest_head_is_an_error_on_cuda() -> Result<()> {
    let Some(dev) = cuda_device("attention D > 128") else {
        return Ok(());
    };
    let t: Vec<Tensor> = attention_inputs([1, 1, 1, 3, 3, 130], 40, DType::F32)?
        .iter()
        .map(|x| x.to_device(&dev))
        .collect::<Result<_>>()?;
    let err = attention_op(false, None, None)(&t).unwrap_err().to_string();
    assert!(err.contains("at most 128"), "{err}");
    Ok(())
}

#[test]
fn adamw_matches_cpu_over_steps() -> Result<()> {
    use kernels::{adamw_step, AdamWStep};
    let Some(dev) = cuda_device("adamw") else {
        return Ok(());
    };
    // Several grid-stride rounds' worth of elements (not a multiple of the block), a strided
    // gradient, a gradient scale and weight decay. The kernels do the CPU's unfused operations
    // in its order, so the results are expected to be identical; checked to 1e-6 (f32).
    let (rows, cols) = (123, 457);
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-12)] {
        let p0 = tensor(&[rows, cols], 50, 1.0, dtype)?;
        let p_cpu = candle_core::Var::from_tensor(&p0)?;
        let p_dev = candle_core::Var::from_tensor(&p0.to_device(&dev)?)?;
        let m_cpu = Tensor::zeros((2, rows * cols), dtype, &Device::Cpu)?;
        let m_dev = Tensor::zeros((2, rows * cols), dtype, &dev)?;
        for step in 1..=5u64 {
            let g = tensor(&[cols, rows], 50 + step, 2.0, dtype)?;
            let s = AdamWStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: if step == 3 { 0.0 } else { 0.1 },
                step,
                grad_scale: if step % 2 == 0 { 0.7 } else { 1.0 },
            };
            adamw_step(&p_cpu, &g.t()?, &m_cpu, &s)?;
            adamw_step(&p_dev, &g.to_device(&dev)?.t()?, &m_dev, &s)?;
        }
        assert!(p_dev.device().same_device(&dev) && m_dev.device().same_device(&dev));
        let what = format!("adamw {dtype:?}");
        assert_close(&p_dev.to_device(&Device::Cpu)?, &p_cpu, tol, &what)?;
        assert_close(&m_dev.to_device(&Device::Cpu)?, &m_cpu, tol, &what)?;
    }
    // bf16 master weights are an error on CUDA too.
    let p = candle_core::Var::zeros(4, DType::BF16, &dev)?;
    let z = Tensor::zeros(4, DType::BF16, &dev)?;
    let s = AdamWStep {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
        grad_scale: 1.0,
    };
    let err = adamw_step(&p, &z, &Tensor::zeros((2, 4), DType::BF16, &dev)?, &s).unwrap_err();
    assert!(err.to_string().contains("f32 or f64"), "{err}");
    Ok(())
}
