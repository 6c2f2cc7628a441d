//! Ad-hoc timing of the fused ops against the slow reference and candle-nn's forward-only
//! fused ops, at x: (64*64, 256) f32. Not a test (ignored, asserts nothing about time); the
//! project's benchmark will be `trainer bench ops`. fwd+bwd is loss = sum(y * r) and
//! `backward()`, so it includes candle's own backprop of the loss (the "harness" row).
//! Run with the allocator settings `trainer` uses (else fresh-page faults dominate):
//!   GLIBC_TUNABLES=glibc.malloc.mmap_threshold=134217728:glibc.malloc.trim_threshold=268435456:glibc.malloc.arena_max=1 \
//!   RAYON_NUM_THREADS=2 cargo test --release -p cotyle-kernels --test bench_ops -- --ignored --nocapture

mod common;

use candle_core::{DType, Result, Tensor, Var};
use common::tensor;
use kernels::reference;
use std::time::Instant;

const ROWS: usize = 64 * 64;
const D: usize = 256;
const EPS: f64 = 1e-5;

/// Median wall time of `f` in milliseconds, after warm-up.
fn time(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut ts = Vec::new();
    for _ in 0..21 {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

type Op<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

/// Forward, and forward + backward of loss = sum(y * r), with every input a `Var`.
fn fwd_bwd(op: Op, inputs: &[Tensor], r: &Tensor) -> Result<(f64, f64)> {
    let fwd = time(|| op(inputs).map(|_| ()))?;
    let vars = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let both = time(|| {
        let g = (op(&ts)? * r)?.sum_all()?.backward()?;
        assert!(vars.iter().all(|v| g.get(v).is_some()));
        Ok(())
    })?;
    Ok((fwd, both))
}

fn row(name: &str, ours: Op, slow: Op, nn: Option<Op>, inputs: &[Tensor]) -> Result<()> {
    let r = tensor(&[ROWS, D], 3, 1.0, DType::F32)?;
    let (of, ob) = fwd_bwd(ours, inputs, &r)?;
    let (sf, sb) = fwd_bwd(slow, inputs, &r)?;
    let nn = match nn {
        Some(op) => format!("{:8.3}", time(|| op(inputs).map(|_| ()))?),
        None => "       -".into(),
    };
    println!(
        "{name:<20} {of:8.3} {sf:8.3} {:6.1}x {nn}   {ob:8.3} {sb:8.3} {:6.1}x",
        sf / of,
        sb / ob
    );
    Ok(())
}

#[test]
#[ignore = "timing, run by hand (see the header)"]
fn bench_ops() -> Result<()> {
    let x = tensor(&[ROWS, D], 1, 2.0, DType::F32)?;
    let w = (tensor(&[D], 2, 0.5, DType::F32)? + 1.0)?;
    let b = tensor(&[D], 4, 0.5, DType::F32)?;
    println!(
        "x: ({ROWS}, {D}) f32, {} rayon threads; times in ms (median of 21)",
        rayon::current_num_threads()
    );
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>8}   {:>8} {:>8} {:>7}",
        "op", "fwd", "slow", "ratio", "nn-fwd", "fwd+bwd", "slow", "ratio"
    );
    let r = tensor(&[ROWS, D], 3, 1.0, DType::F32)?;
    let (_, harness) = fwd_bwd(&|t| Ok(t[0].clone()), std::slice::from_ref(&x), &r)?;
    println!(
        "{:<20} {:>8} {:>8} {:>7} {:>8}   {harness:8.3}  (y = x: the loss and backprop alone)",
        "harness", "", "", "", ""
    );
    row(
        "softmax_last_dim",
        &|t| kernels::softmax_last_dim(&t[0]),
        &|t| reference::softmax_last_dim(&t[0]),
        Some(&|t| candle_nn::ops::softmax_last_dim(&t[0])),
        std::slice::from_ref(&x),
    )?;
    row(
        "rms_norm",
        &|t| kernels::rms_norm(&t[0], &t[1], EPS),
        &|t| reference::rms_norm(&t[0], &t[1], EPS),
        Some(&|t| candle_nn::ops::rms_norm(&t[0], &t[1], EPS as f32)),
        &[x.clone(), w.clone()],
    )?;
    row(
        "layer_norm",
        &|t| kernels::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
        &|t| reference::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
        Some(&|t| candle_nn::ops::layer_norm(&t[0], &t[1], &t[2], EPS as f32)),
        &[x.clone(), w.clone(), b.clone()],
    )?;
    row(
        "layer_norm (no bias)",
        &|t| kernels::layer_norm(&t[0], &t[1], None, EPS),
        &|t| reference::layer_norm(&t[0], &t[1], None, EPS),
        None,
        &[x, w],
    )?;
    Ok(())
}
