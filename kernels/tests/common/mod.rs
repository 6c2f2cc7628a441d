//! Shared checks for the op tests: deterministic inputs (an LCG, not `Tensor::randn`), forward
//! against the slow reference, gradients against the reference's autograd and against
//! central finite differences in f64, gradient presence (candle drops gradients silently, so
//! a missing one must fail), and independence from the thread count.
#![allow(dead_code)]

use candle_core::{DType, Device, Error, Result, Tensor, Var};

/// Shapes every op is checked on: T=1, odd sizes, non-multiples of any vector width.
pub const SHAPES: &[&[usize]] = &[&[1, 1], &[3, 7], &[2, 5, 33], &[4, 1, 64], &[2, 3, 129]];

/// An op under test, or its reference, over a list of inputs.
pub type Op<'a> = &'a (dyn Fn(&[Tensor]) -> Result<Tensor> + Sync);

/// `n` values uniform in [-scale, scale), from a 64-bit LCG seeded with `seed`.
pub fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A CPU tensor of `shape` filled by `values`, in `dtype`.
pub fn tensor(shape: &[usize], seed: u64, scale: f64, dtype: DType) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed, scale), shape, &Device::Cpu)?.to_dtype(dtype)
}

/// A per-feature weight around 1: (D).
pub fn weight(d: usize, seed: u64, dtype: DType) -> Result<Tensor> {
    tensor(&[d], seed, 0.5, dtype)? + 1.0
}

/// Errors unless got and want have one shape and |got - want| <= tol * max(1, |want|).
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) -> Result<()> {
    if got.dims() != want.dims() {
        return Err(Error::Msg(format!(
            "{what}: shape {:?} != {:?}",
            got.dims(),
            want.dims()
        )));
    }
    let g = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let w = want.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a - b).abs() <= tol * b.abs().max(1.0) || (a == b);
        if !ok {
            return Err(Error::Msg(format!(
                "{what}: element {i}: got {a}, want {b} (tol {tol}, shape {:?})",
                got.dims()
            )));
        }
    }
    Ok(())
}

/// Checks that `ours` and `reference` agree on `inputs` within `tol`.
pub fn check_forward(
    ours: Op,
    reference: Op,
    inputs: &[Tensor],
    tol: f64,
    what: &str,
) -> Result<()> {
    assert_close(&ours(inputs)?, &reference(inputs)?, tol, what)
}

/// Gradients of loss = sum(op(inputs) * r) for every input, made `Var`s. An error, naming
/// the input, when one has no gradient (a `bwd` that returned None).
pub fn grads(op: Op, inputs: &[Tensor], r: &Tensor, what: &str) -> Result<Vec<Tensor>> {
    let vars = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = (op(&ts)? * r)?.sum_all()?;
    let store = loss.backward()?;
    vars.iter()
        .enumerate()
        .map(|(i, v)| {
            store.get(v).cloned().ok_or_else(|| {
                Error::Msg(format!(
                    "{what}: input {i} got no gradient (dropped by bwd)"
                ))
            })
        })
        .collect()
}

/// Errors unless every gradient is finite and, when `nonzero`, not all zero.
pub fn check_grads_usable(gs: &[Tensor], nonzero: bool, what: &str) -> Result<()> {
    for (i, g) in gs.iter().enumerate() {
        let v = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        if let Some(k) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::Msg(format!("{what}: gradient {i}[{k}] = {}", v[k])));
        }
        if nonzero && v.iter().all(|&x| x == 0.0) {
            return Err(Error::Msg(format!("{what}: gradient {i} is all zero")));
        }
    }
    Ok(())
}

/// The upstream gradient r used by `check_backward` for an output like `y`.
fn upstream(y: &Tensor, seed: u64) -> Result<Tensor> {
    tensor(y.dims(), seed, 1.0, y.dtype())
}

/// Gradients of ours and of the reference (candle autograd) for loss = sum(y * r), r random:
/// every input gets one, they agree within `tol`, are finite, and non-zero when `nonzero`.
pub fn check_backward(
    ours: Op,
    reference: Op,
    inputs: &[Tensor],
    tol: f64,
    nonzero: bool,
    what: &str,
) -> Result<Vec<Tensor>> {
    let r = upstream(&ours(inputs)?, 99)?;
    let got = grads(ours, inputs, &r, what)?;
    let want = grads(reference, inputs, &r, &format!("{what} (reference)"))?;
    check_grads_usable(&got, nonzero, what)?;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(g, w, tol, &format!("{what}: gradient of input {i}"))?;
    }
    Ok(got)
}

/// Gradients of ours (f64 inputs) against central finite differences of the loss
/// sum(y * r): |analytic - fd| <= tol * max(1, |fd|) for every element of every input.
pub fn check_finite_diff(
    ours: Op,
    inputs: &[Tensor],
    step: f64,
    tol: f64,
    what: &str,
) -> Result<()> {
    let r = upstream(&ours(inputs)?, 7)?;
    let analytic = grads(ours, inputs, &r, what)?;
    let loss = |ts: &[Tensor]| -> Result<f64> { (ours(ts)? * &r)?.sum_all()?.to_scalar::<f64>() };
    for (i, x) in inputs.iter().enumerate() {
        let base = x.flatten_all()?.to_vec1::<f64>()?;
        let a = analytic[i].flatten_all()?.to_vec1::<f64>()?;
        for k in 0..base.len() {
            let at = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[k] += delta;
                let mut ts = inputs.to_vec();
                ts[i] = Tensor::from_vec(v, x.dims(), x.device())?;
                loss(&ts)
            };
            let fd = (at(step)? - at(-step)?) / (2.0 * step);
            if (a[k] - fd).abs() > tol * fd.abs().max(1.0) {
                return Err(Error::Msg(format!(
                    "{what}: input {i}[{k}]: analytic {} vs finite difference {fd}",
                    a[k]
                )));
            }
        }
    }
    Ok(())
}

/// Runs `f` on a rayon pool of `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool")
        .install(f)
}

/// Errors unless forward and gradients of `op` are bit-identical on candle's thread pool
/// (outside rayon) and on rayon pools of 1 and 3 threads.
pub fn check_thread_independent(op: Op, inputs: &[Tensor], what: &str) -> Result<()> {
    let r = upstream(&op(inputs)?, 5)?;
    let run = || -> Result<Vec<Vec<f32>>> {
        let mut out = vec![op(inputs)?];
        out.extend(grads(op, inputs, &r, what)?);
        out.iter()
            .map(|t| t.flatten_all()?.to_vec1::<f32>())
            .collect()
    };
    let base = run()?;
    for threads in [1, 3] {
        if with_threads(threads, run)? != base {
            return Err(Error::Msg(format!(
                "{what}: results on {threads} rayon threads differ from candle's pool"
            )));
        }
    }
    Ok(())
}

/// Non-contiguous views of `shape` (rank >= 2) built from fresh tensors: a transposed one
/// and one narrowed along the last dim. Each as (name, base tensor, view of the base).
pub fn view_cases(shape: &[usize], seed: u64, scale: f64) -> Result<Vec<(String, Tensor, View)>> {
    let rank = shape.len();
    let mut swapped = shape.to_vec();
    swapped.swap(rank - 2, rank - 1);
    let mut wider = shape.to_vec();
    wider[rank - 1] += 5;
    let d = shape[rank - 1];
    Ok(vec![
        (
            "transposed".into(),
            tensor(&swapped, seed, scale, DType::F32)?,
            View::Transpose,
        ),
        (
            "narrowed".into(),
            tensor(&wider, seed, scale, DType::F32)?,
            View::Narrow(2, d),
        ),
    ])
}

/// A view applied to a base tensor inside the op, so gradients flow through it.
#[derive(Debug, Clone, Copy)]
pub enum View {
    Transpose,
    Narrow(usize, usize),
}

impl View {
    pub fn apply(self, t: &Tensor) -> Result<Tensor> {
        let last = t.rank() - 1;
        let v = match self {
            View::Transpose => t.transpose(last - 1, last)?,
            View::Narrow(start, len) => t.narrow(last, start, len)?,
        };
        assert!(
            !v.is_contiguous(),
            "view {self:?} of {:?} is contiguous",
            t.dims()
        );
        Ok(v)
    }
}

/// The first CUDA device, or None, with a message saying why, when this build has no CUDA
/// support (the `cuda` feature) or the machine no GPU: the CUDA comparisons then skip.
pub fn cuda_device(what: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            eprintln!("skipping {what} on CUDA: no CUDA device ({e})");
            None
        }
    }
}

/// Forward and every input's gradient (loss = sum(y * r)) of `op` on `inputs`, as f64 bits.
fn run_bits(op: Op, inputs: &[Tensor], r: &Tensor, what: &str) -> Result<Vec<Vec<u64>>> {
    let mut out = vec![op(inputs)?];
    out.extend(grads(op, inputs, r, what)?);
    out.iter()
        .map(|t| {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            Ok(v.iter().map(|f| f.to_bits()).collect())
        })
        .collect()
}

/// `op` on CPU `inputs` and on copies of them on `dev` (views, if any, applied inside `op`, so
/// the device sees strided layouts): the forward and the gradient of every input for
/// loss = sum(y * r) agree within `tol` (relative, as `assert_close`); the results stay on
/// `dev`; and a second run on `dev` gives the same bits (no run-to-run variation).
pub fn check_cuda_matches_cpu(
    op: Op,
    inputs: &[Tensor],
    dev: &Device,
    tol: f64,
    what: &str,
) -> Result<()> {
    let y = op(inputs)?;
    let r = upstream(&y, 13)?;
    let g = grads(op, inputs, &r, what)?;
    let on_dev = inputs
        .iter()
        .map(|t| t.to_device(dev))
        .collect::<Result<Vec<_>>>()?;
    let r_dev = r.to_device(dev)?;
    let what_dev = format!("{what} (CUDA)");
    let y_dev = op(&on_dev)?;
    if !y_dev.device().same_device(dev) || y_dev.dtype() != y.dtype() {
        return Err(Error::Msg(format!(
            "{what_dev}: result on {:?} as {:?}, want {dev:?} as {:?}",
            y_dev.device(),
            y_dev.dtype(),
            y.dtype()
        )));
    }
    assert_close(&y_dev.to_device(&Device::Cpu)?, &y, tol, &what_dev)?;
    let g_dev = grads(op, &on_dev, &r_dev, &what_dev)?;
    for (i, (gd, gc)) in g_dev.iter().zip(&g).enumerate() {
        let w = format!("{what_dev}: gradient of input {i}");
        assert_close(&gd.to_device(&Device::Cpu)?, gc, tol, &w)?;
    }
    if run_bits(op, &on_dev, &r_dev, &what_dev)? != run_bits(op, &on_dev, &r_dev, &what_dev)? {
        return Err(Error::Msg(format!("{what_dev}: two runs differ")));
    }
    Ok(())
}
