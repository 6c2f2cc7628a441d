//! `trainer bench block`: the training step of one pre-LN transformer block (issue 3,
//! acceptance): LayerNorm with bias, causal multi-head attention, GELU-tanh MLP, residuals,
//! MSE loss against a fixed target, AdamW with global-norm clipping at 1. Default shapes
//! d=256, 4 heads, T=64, B=16, MLP 1024 (790k parameters).
//!
//! Two builds of the same block: `fused` (the `kernels` ops: layer norm, fused attention
//! straight from the packed qkv projection (`attention_packed`), GELU, `kernels::linear` for
//! the four linear layers, our in-place AdamW) and `candle_nn` (the baseline of issue 3: what
//! a candle user has without this crate, the differentiable candle_nn ops:
//! `candle_nn::Linear`, `ops::layer_norm_slow`, attention as matmul + mask + `ops::softmax` +
//! matmul, `Tensor::gelu`, and candle_nn's AdamW; its fused ops (`softmax_last_dim`,
//! `layer_norm`, `sdpa`) would drop gradients). `benches/block_torch.py`
//! runs the identical block in PyTorch and is run side by side when torch imports.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{Tensor, Var};
use candle_nn::{Module, Optimizer};
use clap::Args;

use super::bench_ops::uniform;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::TrainConfig;

#[derive(Args)]
pub struct BenchBlockArgs {
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    seq: usize,
    #[arg(long, default_value_t = 256)]
    dim: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 1024)]
    mlp: usize,
    /// Timed steps per build (the median is printed).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Only the fused build (for profiling).
    #[arg(long)]
    fused_only: bool,
    /// The PyTorch twin; skipped with a message when it cannot run.
    #[arg(long, default_value = "benches/block_torch.py")]
    torch_script: PathBuf,
    #[arg(long, default_value = "python3")]
    python: String,
    /// Do not run the PyTorch twin.
    #[arg(long)]
    no_torch: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Build {
    Fused,
    CandleNn,
}

/// The block's parameters, each a `Var`, in the layout `torch.nn.Linear` uses (out, in).
struct Block {
    ln1: (Var, Var),
    qkv: (Var, Var),
    proj: (Var, Var),
    ln2: (Var, Var),
    fc1: (Var, Var),
    fc2: (Var, Var),
}

const LN_EPS: f64 = 1e-5;

impl Block {
    fn new(c: usize, mlp: usize) -> Result<Self> {
        let mut seed = 10;
        let mut linear = |out: usize, inp: usize| -> Result<(Var, Var)> {
            seed += 2;
            // torch.nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
            let k = 1.0 / (inp as f32).sqrt();
            Ok((
                Var::from_tensor(&uniform(&[out, inp], seed, k)?)?,
                Var::from_tensor(&uniform(&[out], seed + 1, k)?)?,
            ))
        };
        let norm = || -> Result<(Var, Var)> {
            Ok((
                Var::from_tensor(&Tensor::ones(c, candle_core::DType::F32, &cpu())?)?,
                Var::from_tensor(&Tensor::zeros(c, candle_core::DType::F32, &cpu())?)?,
            ))
        };
        Ok(Block {
            ln1: norm()?,
            qkv: linear(3 * c, c)?,
            proj: linear(c, c)?,
            ln2: norm()?,
            fc1: linear(mlp, c)?,
            fc2: linear(c, mlp)?,
        })
    }

    fn named(&self) -> Vec<(String, Var)> {
        let pairs = [
            ("ln1", &self.ln1),
            ("qkv", &self.qkv),
            ("proj", &self.proj),
            ("ln2", &self.ln2),
            ("fc1", &self.fc1),
            ("fc2", &self.fc2),
        ];
        pairs
            .into_iter()
            .flat_map(|(n, (w, b))| {
                [
                    (format!("{n}.weight"), w.clone()),
                    (format!("{n}.bias"), b.clone()),
                ]
            })
            .collect()
    }

    /// x: (B, T, C) -> (B, T, C).
    fn forward(&self, x: &Tensor, heads: usize, build: Build) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hd = c / heads;
        let norm = |x: &Tensor, (w, bias): &(Var, Var)| match build {
            Build::Fused => kernels::layer_norm(x, w, Some(bias), LN_EPS),
            Build::CandleNn => candle_nn::ops::layer_norm_slow(x, w, bias, LN_EPS as f32),
        };
        let lin = |x: &Tensor, p: &(Var, Var)| linear(x, p, build);
        // The slow build's linear gives (B*T, out), the fused one (B, T, out): no reshape
        // (a graph node even to the same shape) where it is (B, T, C) already.
        let btc = |y: Tensor| -> Result<Tensor> {
            if y.dims() == [b, t, c] {
                Ok(y)
            } else {
                Ok(y.reshape((b, t, c))?)
            }
        };
        let qkv = lin(&norm(x, &self.ln1)?, &self.qkv)?;
        let y = match build {
            // (B, T, 3C) -> (B, T, C) in one op forward and one backward: no graph nodes for
            // the head split and merge (their backwards zero-pad and copy full-size buffers).
            Build::Fused => kernels::attention_packed(
                &qkv,
                heads,
                heads,
                None,
                &kernels::AttentionOpts {
                    causal: true,
                    ..Default::default()
                },
            )?,
            Build::CandleNn => {
                // (B, T, 3C) -> (3, B, H, T, hd): q, k, v are strided views of one buffer.
                let qkv = qkv
                    .reshape((b, t, 3, heads, hd))?
                    .permute((2, 0, 3, 1, 4))?;
                let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
                // (B, H, T, hd) -> (B, T, C)
                slow_causal_attention(&q, &k, &v)?
                    .transpose(1, 2)?
                    .reshape((b, t, c))?
            }
        };
        let x = (x + btc(lin(&y, &self.proj)?)?)?;
        let h = lin(&norm(&x, &self.ln2)?, &self.fc1)?;
        let h = match build {
            Build::Fused => kernels::gelu_tanh(&h)?,
            Build::CandleNn => h.gelu()?,
        };
        Ok((&x + btc(lin(&h, &self.fc2)?)?)?)
    }
}

fn cpu() -> candle_core::Device {
    candle_core::Device::Cpu
}

/// Fused: `kernels::linear`, one op forward and one backward. Slow: `candle_nn::Linear`.
/// x: (…, in) -> (…, out).
fn linear(x: &Tensor, (w, b): &(Var, Var), build: Build) -> Result<Tensor> {
    Ok(match build {
        Build::Fused => kernels::linear(x, w, Some(b))?,
        Build::CandleNn => {
            candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).forward(x)?
        }
    })
}

/// softmax(q kᵀ / sqrt(d) + causal mask) v from candle_nn's differentiable ops; (B, H, T, D).
fn slow_causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (.., t, d) = q.dims4()?;
    let mask: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &cpu())?;
    let s = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?;
    let p = candle_nn::ops::softmax(&s.broadcast_add(&mask)?, candle_core::D::Minus1)?;
    Ok(p.matmul(&v.contiguous()?)?)
}

/// Median times of one build's training step, in ms.
#[derive(Debug, Clone, Copy)]
struct StepTimes {
    fwd: f64,
    bwd: f64,
    optim: f64,
    step: f64,
}

fn bench_build(a: &BenchBlockArgs, build: Build) -> Result<StepTimes> {
    let block = Block::new(a.dim, a.mlp)?;
    let x = uniform(&[a.batch, a.seq, a.dim], 1, 1.7)?;
    let target = uniform(&[a.batch, a.seq, a.dim], 2, 1.7)?;
    let named = block.named();
    let train = TrainConfig::default();
    let cfg = AdamWConfig::from_train(&train);
    let mut ours = AdamW::new(named.clone(), cfg)?;
    let mut stock = candle_nn::AdamW::new(
        named.iter().map(|(_, v)| v.clone()).collect(),
        candle_nn::ParamsAdamW {
            lr: train.lr,
            beta1: cfg.betas[0],
            beta2: cfg.betas[1],
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        },
    )?;
    let mut samples = Vec::with_capacity(a.runs);
    for i in 0..a.warmup + a.runs {
        let t0 = Instant::now();
        let loss = (block.forward(&x, a.heads, build)? - &target)?
            .sqr()?
            .mean_all()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        match build {
            Build::Fused => {
                let rep = ours.step(&grads, train.lr, 1.0)?;
                ensure!(
                    rep.no_grad.is_empty(),
                    "no gradient reached {:?}",
                    rep.no_grad
                );
            }
            Build::CandleNn => {
                // Both builds must train every parameter, or the comparison means nothing.
                let missing: Vec<&str> = named
                    .iter()
                    .filter(|(_, v)| grads.get(v).is_none())
                    .map(|(n, _)| n.as_str())
                    .collect();
                ensure!(missing.is_empty(), "no gradient reached {missing:?}");
                // candle_nn's AdamW has no clipping: the global norm is still computed (from
                // tensor ops), so both builds (and PyTorch's clip_grad_norm_) do that work.
                ours.grad_norm(&grads)?;
                stock.step(&grads)?;
            }
        }
        let t3 = Instant::now();
        let l = loss.to_scalar::<f32>()?;
        ensure!(l.is_finite(), "loss is {l} at step {i}");
        if i >= a.warmup {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            samples.push(StepTimes {
                fwd: ms(t0, t1),
                bwd: ms(t1, t2),
                optim: ms(t2, t3),
                step: ms(t0, t3),
            });
        }
    }
    let med = |f: fn(&StepTimes) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(StepTimes {
        fwd: med(|s| s.fwd),
        bwd: med(|s| s.bwd),
        optim: med(|s| s.optim),
        step: med(|s| s.step),
    })
}

/// The PyTorch twin's times, or why there are none.
fn torch_times(a: &BenchBlockArgs, threads: usize) -> std::result::Result<StepTimes, String> {
    let v = super::bench::torch_twin(
        &a.python,
        &a.torch_script,
        &[
            ("--batch", a.batch.to_string()),
            ("--seq", a.seq.to_string()),
            ("--dim", a.dim.to_string()),
            ("--heads", a.heads.to_string()),
            ("--mlp", a.mlp.to_string()),
            ("--threads", threads.to_string()),
            ("--runs", a.runs.to_string()),
            ("--warmup", a.warmup.to_string()),
        ],
    )?;
    let f = |k: &str| v.number(k);
    Ok(StepTimes {
        fwd: f("fwd_ms")?,
        bwd: f("bwd_ms")?,
        optim: f("optim_ms")?,
        step: f("step_ms")?,
    })
}

pub fn run(a: BenchBlockArgs) -> Result<()> {
    ensure!(
        a.runs > 0 && a.heads > 0 && a.dim.is_multiple_of(a.heads),
        "--runs must be > 0 and --dim a multiple of --heads"
    );
    let threads = candle_core::utils::barrier_pool().n_workers() + 1;
    let params: usize = Block::new(a.dim, a.mlp)?
        .named()
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum();
    println!(
        "bench block: pre-LN transformer block, B={} T={} d={} heads={} mlp={} ({params} params), \
         causal, MSE + AdamW (clip 1.0), f32, {threads} threads; median of {} steps after {} \
         warm-up; ms",
        a.batch, a.seq, a.dim, a.heads, a.mlp, a.runs, a.warmup
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8}",
        "build", "step", "fwd", "bwd", "optim"
    );
    let row = |name: &str, s: &StepTimes| {
        println!(
            "{name:<34} {:8.2} {:8.2} {:8.2} {:8.2}",
            s.step, s.fwd, s.bwd, s.optim
        )
    };
    let fused = bench_build(&a, Build::Fused)?;
    row("fused (kernels ops, our AdamW)", &fused);
    if !a.fused_only {
        let slow = bench_build(&a, Build::CandleNn)?;
        row("candle_nn (differentiable ops)", &slow);
        println!("fused vs candle_nn: {:.2}x faster", slow.step / fused.step);
    }
    if a.no_torch || a.fused_only {
        return Ok(());
    }
    match torch_times(&a, threads) {
        Ok(t) => {
            row("pytorch (benches/block_torch.py)", &t);
            println!(
                "fused vs pytorch: {:.2}x ({})",
                t.step / fused.step,
                if t.step >= fused.step {
                    "ours is faster"
                } else {
                    "pytorch is faster"
                }
            );
        }
        Err(why) => println!("pytorch: skipped ({why})"),
    }
    Ok(())
}
