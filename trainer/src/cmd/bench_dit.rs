//! `trainer bench dit`: the style-conditioned MMDiT on this CPU (issue 6): training images per
//! second (one rectified-flow step: forward, MSE to the velocity, backward, our AdamW) and
//! sampling seconds per image (Euler steps with classifier-free guidance: two forwards a step),
//! for a preset's shape with seeded random weights and random conditioning tokens.
//!
//! `benches/dit_torch.py` builds the same architecture in PyTorch (same parameter names and
//! shapes: it loads our checkpoints strictly), runs the same step with `torch.optim.AdamW` on
//! the same thread count, and is run side by side when torch imports. The text branch and the
//! frozen codebook are left out on both sides: they are not the MMDiT (the whole stage's rate
//! is in the training log).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Args;

use data::rng::Rng;

use crate::models::mmdit::{init_tensors, param_shapes, Mmdit, MmditConfig};
use crate::models::varmap_from;
use crate::stages::dit_flow::{noisy, seeded_noise};
use crate::stages::dit_sample::{euler, guide, Guidance};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::TrainConfig;

#[derive(Args)]
pub struct BenchDitArgs {
    /// MMDiT preset: demo (configs/dit.yaml's shape), tiny.
    #[arg(long, default_value = "demo")]
    preset: String,
    /// Width of the conditioning tokens (the demo's text LM: 128).
    #[arg(long, default_value_t = 128)]
    text_dim: usize,
    /// Conditioning tokens per example (the demo's templated prompts: 16 style tokens and
    /// about 30 more).
    #[arg(long, default_value_t = 48)]
    text_len: usize,
    /// Training batch (configs/dit.yaml: 16).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Timed training steps (the best is reported) after one warm-up step.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Euler steps per sample (configs/dit.yaml: 20).
    #[arg(long, default_value_t = 20)]
    sample_steps: usize,
    /// Images sampled together.
    #[arg(long, default_value_t = 8)]
    sample_batch: usize,
    /// Guidance scale (not 1: two forwards per step).
    #[arg(long, default_value_t = 3.0)]
    guidance: f64,
    #[arg(long, default_value = "benches/dit_torch.py")]
    torch_script: PathBuf,
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_torch: bool,
}

/// Standard normal (dims), from `seed`.
fn normal(dims: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

/// What one side measured.
struct Figures {
    step_s: f64,
    sample_s_per_image: f64,
}

pub fn run(a: BenchDitArgs) -> Result<()> {
    ensure!(
        a.batch > 0 && a.runs > 0 && a.sample_batch > 0 && a.sample_steps > 0,
        "--batch, --runs, --sample-batch and --sample-steps must be positive"
    );
    let cfg = MmditConfig {
        text_dim: a.text_dim,
        // Speed does not depend on the init; a zero output projection would only hide bugs.
        zero_init: false,
        ..MmditConfig::preset(&a.preset)?
    };
    cfg.check_resolved()?;
    let threads = candle_core::utils::get_num_threads();
    let params: usize = param_shapes(&cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    println!(
        "bench dit: MMDiT `{}` ({:.2}M parameters; {} px, patch {}, width {}, {} blocks), \
         {} conditioning tokens of width {}, f32, {threads} threads",
        a.preset,
        params as f64 / 1e6,
        cfg.sample_size,
        cfg.patch_size,
        cfg.hidden_size,
        cfg.depth,
        a.text_len,
        a.text_dim
    );
    let ours = measure(&a, &cfg)?;
    let torch = if a.no_torch {
        Err("--no-torch".to_string())
    } else {
        torch_figures(&a, &cfg, threads)
    };
    println!(
        "{:<28} {:>12} {:>12} {:>16}",
        "", "step s", "images/s", "sample s/image"
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<28} {:>12.3} {:>12.1} {:>16.3}",
            f.step_s,
            a.batch as f64 / f.step_s,
            f.sample_s_per_image
        )
    };
    row("ours (candle + kernels)", &ours);
    match &torch {
        Ok(t) => {
            row("pytorch", t);
            println!(
                "ratio (ours over pytorch, above 1: ours is faster): training {:.2}x, sampling {:.2}x",
                t.step_s / ours.step_s,
                t.sample_s_per_image / ours.sample_s_per_image
            );
        }
        Err(why) => println!("pytorch skipped: {why}"),
    }
    println!(
        "training: batch {}, best of {} steps after a warm-up (forward, MSE, backward, AdamW); \
         sampling: {} images together, {} Euler steps, guidance {} ({} forwards a step)",
        a.batch,
        a.runs,
        a.sample_batch,
        a.sample_steps,
        a.guidance,
        if a.guidance != 1.0 { 2 } else { 1 }
    );
    Ok(())
}

/// Our training step and sampling time.
fn measure(a: &BenchDitArgs, cfg: &MmditConfig) -> Result<Figures> {
    let dev = Device::Cpu;
    let varmap = varmap_from(init_tensors(cfg, 0)?)?;
    let model = Mmdit::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let named: Vec<_> = {
        let vars = varmap.data().lock().expect("varmap lock");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let train = TrainConfig::default();
    let mut opt = AdamW::new(named, AdamWConfig::from_train(&train))?;
    let (b, c, s) = (a.batch, cfg.in_channels, cfg.sample_size);
    let x0 = normal(&[b, c, s, s], 1)?;
    let noise = normal(&[b, c, s, s], 2)?;
    let text = normal(&[b, a.text_len, a.text_dim], 3)?;
    let mask = Tensor::ones((b, a.text_len), DType::F32, &dev)?;
    let t = Tensor::from_vec(
        (0..b).map(|i| (i as f32 + 0.5) / b as f32).collect(),
        b,
        &dev,
    )?;
    let (xt, v) = noisy(&x0, &noise, &t)?;
    let mut best = f64::INFINITY;
    for i in 0..=a.runs {
        let started = Instant::now();
        let loss = (model.forward(&xt, &t, &text, Some(&mask))? - &v)?
            .sqr()?
            .mean_all()?;
        let grads = loss.backward()?;
        opt.step(&grads, train.lr, train.grad_clip)?;
        if i > 0 {
            best = best.min(started.elapsed().as_secs_f64());
        }
        tracing::info!("training step {i}: {:.3}s", started.elapsed().as_secs_f64());
    }

    let n = a.sample_batch;
    let text = normal(&[n, a.text_len, a.text_dim], 4)?;
    let mask = Tensor::ones((n, a.text_len), DType::F32, &dev)?;
    let uncond = text.zeros_like()?;
    let seeds: Vec<u64> = (0..n as u64).collect();
    let start = seeded_noise((n, c, s, s), &seeds, &dev)?;
    let g = Guidance {
        scale: a.guidance,
        rescale: true,
    };
    let mut velocity = |x: &Tensor, t: f64| -> Result<Tensor> {
        let tt = Tensor::new(vec![t as f32; n], x.device())?;
        let cond = model.forward(x, &tt, &text, Some(&mask))?.detach();
        if a.guidance == 1.0 {
            return Ok(cond);
        }
        let u = model.forward(x, &tt, &uncond, Some(&mask))?.detach();
        guide(&cond, &u, &g)
    };
    let started = Instant::now();
    let out = euler(&mut velocity, start, a.sample_steps, 1.0)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(out.dims() == [n, c, s, s]);
    Ok(Figures {
        step_s: best,
        sample_s_per_image: secs / n as f64,
    })
}

/// The PyTorch twin's figures, or why there are none.
fn torch_figures(
    a: &BenchDitArgs,
    cfg: &MmditConfig,
    threads: usize,
) -> std::result::Result<Figures, String> {
    let config = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
    let v = super::bench::torch_twin(
        &a.python,
        &a.torch_script,
        &[
            ("--config-json", config),
            ("--batch", a.batch.to_string()),
            ("--text-len", a.text_len.to_string()),
            ("--threads", threads.to_string()),
            ("--runs", a.runs.to_string()),
            ("--sample-steps", a.sample_steps.to_string()),
            ("--sample-batch", a.sample_batch.to_string()),
            ("--guidance", a.guidance.to_string()),
        ],
    )?;
    let field = |k: &str| v.number(k);
    Ok(Figures {
        step_s: field("train_step_s")?,
        sample_s_per_image: field("sample_s_per_image")?,
    })
}
