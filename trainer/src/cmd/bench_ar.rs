//! `trainer bench ar`: sampling throughput of the style generator on this CPU (issue 5): codes
//! per second and tokens per second for the demo and the full-size (Qwen2-0.5B) model, with
//! seeded random weights, sequences of `--len` tokens (196 as the paper) sampled as
//! `trainer sample-style` does (KV cache, temperature 1.0, top-k 200, top-p 0.95, a uniform
//! first index), for several batch sizes (codes decoded together).
//!
//! `benches/ar_torch.py` runs the same configs through Hugging Face `transformers`
//! (`Qwen2ForCausalLM.generate` with its KV cache, `do_sample=True`, same length, same batch,
//! same thread count) and is run side by side when torch and transformers import.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use clap::Args;

use crate::models::qwen2::{init_tensors, Qwen2, Qwen2Config};
use crate::sample::{Sampler, SamplingConfig};
use crate::stages::ar_sample::sample_codes;

#[derive(Args)]
pub struct BenchArArgs {
    /// Model presets to run (repeatable): demo, full, tiny.
    #[arg(long = "preset", default_values_t = ["demo".to_string(), "full".to_string()])]
    presets: Vec<String>,
    /// Codes decoded together (repeatable).
    #[arg(long = "batch", default_values_t = [1usize, 8])]
    batches: Vec<usize>,
    /// Tokens per sequence (the context).
    #[arg(long, default_value_t = 196)]
    len: usize,
    /// Vocabulary: the codebook size.
    #[arg(long, default_value_t = 1024)]
    vocab: usize,
    /// Timed runs per setting (the best is reported) after one warm-up run.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    #[arg(long, default_value = "benches/ar_torch.py")]
    torch_script: PathBuf,
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_torch: bool,
}

/// One measured setting.
struct Rate {
    secs: f64,
    codes_per_s: f64,
    tokens_per_s: f64,
}

impl Rate {
    fn new(secs: f64, batch: usize, len: usize) -> Rate {
        Rate {
            secs,
            codes_per_s: batch as f64 / secs,
            tokens_per_s: (batch * len) as f64 / secs,
        }
    }
}

pub fn run(a: BenchArArgs) -> Result<()> {
    ensure!(
        a.len >= 2 && a.vocab >= 2 && a.runs > 0,
        "--len and --vocab must be >= 2"
    );
    let threads = candle_core::utils::get_num_threads();
    println!(
        "bench ar: sampling {} tokens per code, vocabulary {}, f32, {threads} threads, KV cache, \
         temperature 1.0, top-k 200, top-p 0.95; best of {} run(s) after a warm-up",
        a.len, a.vocab, a.runs
    );
    println!(
        "{:<8} {:>6} {:>10} {:>10} {:>12} {:>10} {:>12} {:>8}",
        "preset", "batch", "params", "ours s", "ours tok/s", "torch s", "torch tok/s", "ratio"
    );
    for preset in &a.presets {
        let cfg = Qwen2Config {
            vocab_size: a.vocab,
            max_position_embeddings: a.len,
            ..Qwen2Config::preset(preset)?
        };
        let started = Instant::now();
        let vb = VarBuilder::from_tensors(init_tensors(&cfg, 0)?, DType::F32, &Device::Cpu);
        let model = Qwen2::new(&cfg, vb)?;
        let params: usize = crate::models::qwen2::param_shapes(&cfg)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        tracing::info!("{preset}: built in {:.1}s", started.elapsed().as_secs_f64());
        // Equal counts: no index is high-frequency, as HF's generate has no such processor.
        let sampler = Sampler::new(&SamplingConfig::default(), &vec![1; a.vocab])?;
        for &batch in &a.batches {
            let codes: Vec<u64> = (0..batch as u64).collect();
            sample_codes(&model, &sampler, &codes, a.len.min(8))?; // warm-up
            let mut best = f64::INFINITY;
            for _ in 0..a.runs {
                let t = Instant::now();
                let seqs = sample_codes(&model, &sampler, &codes, a.len)?;
                best = best.min(t.elapsed().as_secs_f64());
                ensure!(seqs.iter().all(|s| s.len() == a.len));
            }
            let ours = Rate::new(best, batch, a.len);
            let torch = if a.no_torch {
                Err("--no-torch".to_string())
            } else {
                torch_rate(&a, &cfg, batch, threads)
            };
            let (ts, ttok, ratio) = match &torch {
                Ok(t) => (
                    format!("{:.2}", t.secs),
                    format!("{:.1}", t.tokens_per_s),
                    format!("{:.2}x", ours.tokens_per_s / t.tokens_per_s),
                ),
                Err(_) => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "{preset:<8} {batch:>6} {:>9.1}M {:>10.2} {:>12.1} {ts:>10} {ttok:>12} {ratio:>8}   ({:.2} codes/s ours)",
                params as f64 / 1e6,
                ours.secs,
                ours.tokens_per_s,
                ours.codes_per_s
            );
            if let Err(why) = torch {
                if !a.no_torch {
                    println!("  pytorch skipped: {why}");
                }
            }
        }
    }
    println!("ratio: our tokens/s over PyTorch's (above 1: ours is faster)");
    Ok(())
}

/// The PyTorch twin's time for one setting, or why there is none.
fn torch_rate(
    a: &BenchArArgs,
    cfg: &Qwen2Config,
    batch: usize,
    threads: usize,
) -> std::result::Result<Rate, String> {
    let config = cfg.to_hf_json().map_err(|e| e.to_string())?;
    let v = super::bench::torch_twin(
        &a.python,
        &a.torch_script,
        &[
            ("--config-json", config),
            ("--batch", batch.to_string()),
            ("--len", a.len.to_string()),
            ("--threads", threads.to_string()),
            ("--runs", a.runs.to_string()),
        ],
    )?;
    let secs = v.number("secs")?;
    Ok(Rate::new(secs, batch, a.len))
}
