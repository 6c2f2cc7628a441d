//! `trainer bench ops`: the fused `kernels` ops against the slow candle references they
//! replace (issue 3, acceptance): forward and forward+backward time per op, and the VQ
//! nearest-code throughput against candle's matmul + argmax with the memory each needs.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use clap::Args;
use kernels::reference;

#[derive(Args)]
pub struct BenchOpsArgs {
    /// Rows of x for the row-wise ops (x: (rows, dim) f32).
    #[arg(long, default_value_t = 4096)]
    rows: usize,
    #[arg(long, default_value_t = 256)]
    dim: usize,
    /// Timed runs per measurement (the median is printed).
    #[arg(long, default_value_t = 21)]
    runs: usize,
    /// Untimed runs before them.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// VQ: tokens (default 128 images x 196 tokens).
    #[arg(long, default_value_t = 25_088)]
    vq_n: usize,
    /// VQ: codebook entries.
    #[arg(long, default_value_t = 1024)]
    vq_k: usize,
    /// VQ: code width.
    #[arg(long, default_value_t = 64)]
    vq_d: usize,
}

type Op<'a> = &'a dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>;

const EPS: f64 = 1e-5;

pub fn run(a: BenchOpsArgs) -> Result<()> {
    ensure!(
        a.runs > 0 && a.rows > 0 && a.dim > 0,
        "--runs, --rows and --dim must be > 0"
    );
    let threads = candle_core::utils::barrier_pool().n_workers() + 1;
    let (rows, dim) = (a.rows, a.dim);
    println!(
        "bench ops: x ({rows}, {dim}) f32, {threads} threads (candle's pool: RAYON_NUM_THREADS \
         or the cores); median of {} runs after {} warm-up; times in ms",
        a.runs, a.warmup
    );
    println!(
        "{:<18} {:>9} {:>9} {:>8}   {:>9} {:>9} {:>8}",
        "op", "fwd", "slow", "speedup", "fwd+bwd", "slow", "speedup"
    );
    let x = uniform(&[rows, dim], 1, 2.0)?;
    let w = (uniform(&[dim], 2, 0.5)? + 1.0)?;
    let b = uniform(&[dim], 3, 0.5)?;
    let r = uniform(&[rows, dim], 4, 1.0)?;
    let ops: [(&str, Op, Op, Vec<Tensor>); 3] = [
        (
            "softmax_last_dim",
            &|t| kernels::softmax_last_dim(&t[0]),
            &|t| reference::softmax_last_dim(&t[0]),
            vec![x.clone()],
        ),
        (
            "rms_norm",
            &|t| kernels::rms_norm(&t[0], &t[1], EPS),
            &|t| reference::rms_norm(&t[0], &t[1], EPS),
            vec![x.clone(), w.clone()],
        ),
        (
            "layer_norm",
            &|t| kernels::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            &|t| reference::layer_norm(&t[0], &t[1], Some(&t[2]), EPS),
            vec![x.clone(), w, b],
        ),
    ];
    for (name, ours, slow, inputs) in ops {
        let (of, ob) = fwd_bwd(&a, ours, &inputs, &r)?;
        let (sf, sb) = fwd_bwd(&a, slow, &inputs, &r)?;
        println!(
            "{name:<18} {of:9.3} {sf:9.3} {:7.2}x   {ob:9.3} {sb:9.3} {:7.2}x",
            sf / of,
            sb / ob
        );
    }
    linear(&a, &x)?;
    attention(&a)?;
    vq(&a)
}

/// `kernels::linear` against `reference::linear` (reshape, matmul with Wᵀ, broadcast add) for
/// x (rows, dim) -> 4 * dim (an MLP's first layer), weight and bias as torch.nn.Linear's init.
/// Both run the same matmuls; the difference is the bias add and candle's autograd bookkeeping.
fn linear(a: &BenchOpsArgs, x: &Tensor) -> Result<()> {
    let (rows, dim) = x.dims2()?;
    let out = 4 * dim;
    let k = 1.0 / (dim as f32).sqrt();
    let inputs = [
        x.clone(),
        uniform(&[out, dim], 11, k)?,
        uniform(&[out], 12, k)?,
    ];
    let r = uniform(&[rows, out], 13, 1.0)?;
    let ours: Op = &|t| kernels::linear(&t[0], &t[1], Some(&t[2]));
    let slow: Op = &|t| reference::linear(&t[0], &t[1], Some(&t[2]));
    let (of, ob) = fwd_bwd(a, ours, &inputs, &r)?;
    let (sf, sb) = fwd_bwd(a, slow, &inputs, &r)?;
    let name = format!("linear {dim}->{out}");
    println!(
        "{name:<18} {of:9.3} {sf:9.3} {:7.2}x   {ob:9.3} {sb:9.3} {:7.2}x",
        sf / of,
        sb / ob
    );
    Ok(())
}

/// Fused causal attention against `reference::attention` (matmul, causal mask, softmax,
/// matmul) at the transformer shapes, q, k, v (B, H, T, D) f32: a d=256 block (the PyTorch
/// comparison of `bench block`), longer sequences, and one decoding step over a KV cache.
fn attention(a: &BenchOpsArgs) -> Result<()> {
    let opts = kernels::AttentionOpts {
        causal: true,
        ..Default::default()
    };
    println!("attention, causal: (B, H, Tq, Tk), D = 64");
    for (b, h, tq, tk) in [(16, 4, 64, 64), (4, 8, 256, 256), (16, 4, 1, 256)] {
        let d = 64;
        let inputs = [
            uniform(&[b, h, tq, d], 7, 1.0)?,
            uniform(&[b, h, tk, d], 8, 1.0)?,
            uniform(&[b, h, tk, d], 9, 1.0)?,
        ];
        let r = uniform(&[b, h, tq, d], 10, 1.0)?;
        let ours: Op = &|t| kernels::attention(&t[0], &t[1], &t[2], &opts);
        let slow: Op = &|t| reference::attention(&t[0], &t[1], &t[2], &opts);
        let (of, ob) = fwd_bwd(a, ours, &inputs, &r)?;
        let (sf, sb) = fwd_bwd(a, slow, &inputs, &r)?;
        let name = format!("attn {b}x{h}x{tq}x{tk}");
        println!(
            "{name:<18} {of:9.3} {sf:9.3} {:7.2}x   {ob:9.3} {sb:9.3} {:7.2}x",
            sf / of,
            sb / ob
        );
    }
    // From one fused projection's output qkv (B, T, 3 H D) to (B, T, H D): `attention_packed`
    // against what it replaces, the view ops (reshape, permute, get; transpose, reshape)
    // around `attention`, whose graph nodes cost in the backward.
    println!(
        "attention from packed qkv (B, T, 3 H D), causal, D = 64; \"slow\" = views + attention"
    );
    for (b, h, t) in [(16, 4, 64), (4, 8, 256)] {
        let d = 64;
        let inputs = [uniform(&[b, t, 3 * h * d], 11, 1.0)?];
        let r = uniform(&[b, t, h * d], 12, 1.0)?;
        let ours: Op = &|x| kernels::attention_packed(&x[0], h, h, None, &opts);
        let split: Op = &|x| {
            let qkv = x[0].reshape((b, t, 3, h, d))?.permute((2, 0, 3, 1, 4))?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            kernels::attention(&q, &k, &v, &opts)?
                .transpose(1, 2)?
                .reshape((b, t, h * d))
        };
        let (of, ob) = fwd_bwd(a, ours, &inputs, &r)?;
        let (sf, sb) = fwd_bwd(a, split, &inputs, &r)?;
        let name = format!("packed {b}x{h}x{t}");
        println!(
            "{name:<18} {of:9.3} {sf:9.3} {:7.2}x   {ob:9.3} {sb:9.3} {:7.2}x",
            sf / of,
            sb / ob
        );
    }
    Ok(())
}

/// Nearest code by cosine: ours against scores = z·cᵀ (gemm) then argmax over K.
fn vq(a: &BenchOpsArgs) -> Result<()> {
    let (n, k, d) = (a.vq_n, a.vq_k, a.vq_d);
    ensure!(
        n > 0 && k > 0 && d > 0,
        "--vq-n, --vq-k and --vq-d must be > 0"
    );
    let z = normalised(uniform(&[n, d], 5, 1.0)?)?;
    let c = normalised(uniform(&[k, d], 6, 1.0)?)?;
    let ours = time(a, || {
        kernels::vq::nearest_code(&z, &c)?;
        Ok(())
    })?;
    let slow = time(a, || {
        let s = z.matmul(&c.t()?)?;
        s.argmax(D::Minus1)?;
        s.max(D::Minus1)?;
        Ok(())
    })?;
    let argmax_only = time(a, || {
        z.matmul(&c.t()?)?.argmax(D::Minus1)?;
        Ok(())
    })?;
    // Same answers? (Rows whose top two scores differ by ~1e-7 may legitimately differ.)
    let (idx, _) = kernels::vq::nearest_code(&z, &c)?;
    let want = z.matmul(&c.t()?)?.argmax(D::Minus1)?;
    let differ = idx
        .ne(&want)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()?;
    let mb = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let tps = |ms: f64| n as f64 / ms * 1e3 / 1e6;
    println!("\nvq nearest code: z ({n}, {d}), codebook ({k}, {d}), f32, cosine");
    println!(
        "{:<28} {:>9} {:>12} {:>14}",
        "", "ms", "Mtokens/s", "extra MiB"
    );
    // Ours: (N) indices + (N) scores, the packed codebook, ~30 KiB per task in flight.
    let ours_mem = n * 8 + k.next_multiple_of(32) * d * 4;
    let ref_mem = n * k * 4 + n * 8;
    println!(
        "{:<28} {ours:9.2} {:12.2} {:14.2}",
        "kernels::vq::nearest_code",
        tps(ours),
        mb(ours_mem)
    );
    println!(
        "{:<28} {slow:9.2} {:12.2} {:14.2}",
        "matmul + argmax + max",
        tps(slow),
        mb(ref_mem)
    );
    println!(
        "{:<28} {argmax_only:9.2} {:12.2} {:14.2}",
        "matmul + argmax",
        tps(argmax_only),
        mb(n * k * 4 + n * 4)
    );
    println!(
        "speedup {:.2}x over matmul + argmax + max, {:.2}x over matmul + argmax; \
         {differ} of {n} indices differ (near-ties)",
        slow / ours,
        argmax_only / ours
    );
    println!(
        "extra memory: ours O(N) = N x 8 B + K x D x 4 B = {:.2} MiB; reference N x K x 4 B = {:.1} MiB",
        mb(ours_mem),
        mb(n * k * 4)
    );
    Ok(())
}

/// Median forward time, and median forward + backward time of loss = sum(y * r) with every
/// input a `Var` (the gradients are checked present).
fn fwd_bwd(a: &BenchOpsArgs, op: Op, inputs: &[Tensor], r: &Tensor) -> Result<(f64, f64)> {
    let fwd = time(a, || {
        op(inputs)?;
        Ok(())
    })?;
    let vars = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let both = time(a, || {
        let g = (op(&ts)? * r)?.sum_all()?.backward()?;
        ensure!(
            vars.iter().all(|v| g.get(v).is_some()),
            "a gradient is missing"
        );
        Ok(())
    })?;
    Ok((fwd, both))
}

/// Median wall time of `f` in ms over `a.runs` runs after `a.warmup` untimed ones.
fn time(a: &BenchOpsArgs, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..a.warmup {
        f()?;
    }
    let mut ts = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

/// A (shape) f32 tensor uniform in [-scale, scale) from a seeded LCG (no global RNG).
pub(super) fn uniform(shape: &[usize], seed: u64, scale: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Rows scaled to unit L2 norm.
fn normalised(x: Tensor) -> Result<Tensor> {
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
}
