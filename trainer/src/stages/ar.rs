//! Stage 3, the autoregressive style generator (DESIGN.md, "Autoregressive style generator";
//! CoTyle, arXiv 2511.10555): the training loop. A Qwen2 decoder (`models/qwen2.rs`) learns
//! next-token prediction on the codebook index sequences `trainer extract` wrote, with the
//! shared pieces of `train/` (AdamW, warm-up + cosine, clipping, accumulation, checkpoints,
//! resume, metrics, progress). Held-out per-token loss runs every `eval_every` steps and at
//! step 0, against the unigram entropy of the training indices (the loss of a model that
//! ignores context).
//!
//! The run folder holds, besides the checkpoints, what sampling needs without the codebook
//! run: `freq.json` (copied from the indices' folder; the sampler's high-frequency
//! suppression reads it) and `config.json` (HF `Qwen2ForCausalLM`), so `model.safetensors`
//! of any checkpoint loads in `transformers` as it is.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use data::indices::{IndexFreq, IndexSet, FREQ_FILE};

use super::ar_data::{sequences, unigram_entropy, SequenceBatches, SequenceCursor};
use crate::config::stages::ArConfig;
use crate::config::to_yaml;
use crate::models::qwen2::{self, next_token_loss, Qwen2};
use crate::models::varmap_from;
use crate::train::checkpoint::restore;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::run::{self, MicroBatches, Run};

/// The HF config of the model, in the run folder.
pub const HF_CONFIG: &str = "config.json";

/// What the loop keeps in a checkpoint besides parameters and optimiser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoopState {
    /// The next training batch.
    cursor: SequenceCursor,
}

/// Held-out per-token loss against the unigram entropy of the training indices (nats).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HeldOut {
    pub loss: f64,
    pub unigram_entropy: f64,
    pub sequences: usize,
}

/// How a run ended, with the last held-out loss.
pub type Outcome = run::Outcome<HeldOut>;

/// The config with the model's vocabulary and context taken from the index set where left
/// at 0; an error when they are set and cannot hold the data.
pub fn resolve(cfg: &ArConfig, set: &IndexSet) -> Result<ArConfig> {
    let mut cfg = cfg.clone();
    let (codes, tokens) = (set.codes() as usize, set.tokens());
    let m = &mut cfg.model;
    if m.vocab_size == 0 {
        m.vocab_size = codes;
    } else if m.vocab_size < codes {
        bail!(
            "model.vocab_size {} is smaller than the codebook of the indices ({codes} codes, {})",
            m.vocab_size,
            set.made_by()
        );
    }
    if m.max_position_embeddings == 0 {
        m.max_position_embeddings = tokens;
    } else if m.max_position_embeddings < tokens {
        bail!(
            "model.max_position_embeddings {} is shorter than the sequences ({tokens} tokens)",
            m.max_position_embeddings
        );
    }
    m.check_resolved()?;
    Ok(cfg)
}

/// The trainable model: fresh from `train.seed`, or the `trained` tensors of a checkpoint.
pub fn build(
    cfg: &ArConfig,
    trained: Option<&HashMap<String, Tensor>>,
    dev: &Device,
) -> Result<(Qwen2, VarMap)> {
    let mut tensors = qwen2::init_tensors(&cfg.model, cfg.train.seed)?;
    if let Some(trained) = trained {
        restore(&mut tensors, trained, "style generator")?;
    }
    let varmap = varmap_from(tensors)?;
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let model = Qwen2::new(&cfg.model, vb).context("building the Qwen2 style generator")?;
    Ok((model, varmap))
}

/// Trains from scratch, or from the checkpoint `resume` names, writing into `run_dir`.
/// `should_stop` is polled once per step (the CLI passes the Ctrl-C flag).
pub fn train(
    cfg: &ArConfig,
    run_dir: &Path,
    resume: Option<&str>,
    should_stop: &dyn Fn() -> bool,
) -> Result<Outcome> {
    let d = &cfg.data;
    let train_set = IndexSet::open(&d.indices, &d.train_split)?;
    let eval_set = IndexSet::open(&d.indices, &d.eval_split)?;
    if (eval_set.codes(), eval_set.tokens()) != (train_set.codes(), train_set.tokens()) {
        bail!(
            "splits `{}` and `{}` of {} come from different codebooks or resolutions",
            d.train_split,
            d.eval_split,
            d.indices.display()
        );
    }
    let freq = IndexFreq::read(&d.freq())?;
    if freq.codes != train_set.codes() {
        bail!(
            "{} counts {} codes, the indices have {}",
            d.freq().display(),
            freq.codes,
            train_set.codes()
        );
    }
    let cfg = &resolve(cfg, &train_set)?;
    let t = &cfg.train;
    let yaml = format!("stage: ar\n{}", to_yaml(cfg));
    let mut run = Run::open(t, &yaml, run_dir, resume)?;
    freq.write(&run_dir.join(FREQ_FILE))?;
    std::fs::write(run_dir.join(HF_CONFIG), cfg.model.to_hf_json()?)
        .with_context(|| format!("writing {}", run_dir.join(HF_CONFIG).display()))?;
    let dev = Device::Cpu;
    let (model, varmap) = build(cfg, run.resumed.as_ref().map(|c| &c.model), &dev)?;
    let named = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .clone()
        .into_iter()
        .collect();
    let mut opt = AdamW::new(named, AdamWConfig::from_train(t))?;
    let mut state = LoopState::default();
    if let Some(ck) = &run.resumed {
        opt.load_state(&ck.optim)?;
        state = serde_json::from_value(ck.state.clone()).context("checkpoint loop state")?;
    }
    let start = run.first_step(&opt);
    let micro = t.batch_size / t.grad_accum;
    let mut batches = SequenceBatches::new(&train_set, t.seed, micro, state.cursor);
    let entropy = unigram_entropy(&freq.counts);
    let held_out = |model: &Qwen2| -> Result<HeldOut> {
        Ok(HeldOut {
            loss: held_out_loss(model, &eval_set, d.eval_max, micro, &dev)?,
            unigram_entropy: entropy,
            sequences: eval_len(&eval_set, d.eval_max),
        })
    };
    let log_eval = |run: &mut Run, step: u64, h: &HeldOut| -> Result<()> {
        tracing::info!(
            "step {step}: held-out loss {:.4} nats/token (unigram entropy of the training indices {:.4}), {} sequences",
            h.loss, h.unigram_entropy, h.sequences
        );
        run.metrics.log(
            step,
            &[
                ("eval/loss", h.loss),
                ("eval/unigram_entropy", h.unigram_entropy),
            ],
        )
    };
    let mut last_eval = None;
    if start == 1 && t.eval_every > 0 {
        let h = held_out(&model)?;
        log_eval(&mut run, 0, &h)?;
        last_eval = Some(h);
    }
    let len = train_set.tokens();
    for step in start..=t.steps {
        let mut mb = MicroBatches::new(t.grad_accum);
        for _ in 0..t.grad_accum {
            let (seq, next) = batches.next_batch(&dev)?;
            // Row t of the logits predicts token t + 1.
            let logits = model.forward(&seq.narrow(1, 0, len - 1)?)?;
            let loss = next_token_loss(&logits, &seq.narrow(1, 1, len - 1)?)?;
            let value = loss.to_scalar::<f32>()? as f64;
            mb.add(step, &loss, &[("loss", value)])?;
            state.cursor = next;
        }
        let (lr, rep) = run.update(step, start, &mut opt, mb.grads(), &[])?;
        run.log(
            step,
            &[
                ("loss", mb.mean("loss")),
                ("lr", lr),
                ("grad_norm", rep.grad_norm),
            ],
        )?;
        if run.eval_due(step) {
            let h = run.progress.suspend(|| held_out(&model))?;
            log_eval(&mut run, step, &h)?;
            last_eval = Some(h);
        }
        let model = || {
            let vars = varmap.data().lock().expect("varmap lock");
            vars.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect()
        };
        if run.end_step(step, should_stop(), model, &opt, &state)? {
            return Ok(run.stopped(last_eval));
        }
    }
    Ok(run.completed(last_eval))
}

fn eval_len(set: &IndexSet, max: usize) -> usize {
    if max == 0 {
        set.len()
    } else {
        set.len().min(max)
    }
}

/// Mean next-token loss (nats) over the first `max` sequences of `set` (0 = all), in
/// batches of `batch`, without a graph.
pub fn held_out_loss(
    model: &Qwen2,
    set: &IndexSet,
    max: usize,
    batch: usize,
    dev: &Device,
) -> Result<f64> {
    let (n, len) = (eval_len(set, max), set.tokens());
    let (mut sum, mut count) = (0f64, 0usize);
    let mut from = 0;
    while from < n {
        let b = batch.min(n - from);
        let seq = sequences(set, from, b, dev)?;
        let logits = model.forward(&seq.narrow(1, 0, len - 1)?)?.detach();
        let loss = next_token_loss(&logits, &seq.narrow(1, 1, len - 1)?)?;
        sum += loss.to_scalar::<f32>()? as f64 * b as f64;
        count += b;
        from += b;
    }
    if count == 0 {
        bail!("the held-out split `{}` is empty", set.split());
    }
    Ok(sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::run::testing::{assert_same_runs, stop_at};
    use data::indices::IndexShardWriter;

    /// Index sequences with structure to learn: each "style" s walks the codes with its own
    /// stride (token t = (start + s t) mod 32), so the next token follows from the previous
    /// two, while every code is about equally frequent (high unigram entropy).
    fn setup(root: &Path) -> ArConfig {
        let made_by = serde_json::json!({"test": true});
        for (split, n, seed) in [("train", 96, 1u64), ("test", 24, 2)] {
            let mut w = IndexShardWriter::create(root, split, made_by.clone(), 32, 8).unwrap();
            let mut rng = data::rng::Rng::new(seed);
            for i in 0..n {
                let (start, s) = (rng.below(32) as usize, 1 + rng.below(5) as usize);
                let seq: Vec<u16> = (0..8).map(|t| ((start + s * t) % 32) as u16).collect();
                w.push(&format!("{split}{i}"), &format!("s{s}"), &seq)
                    .unwrap();
            }
            w.finish().unwrap();
        }
        let set = IndexSet::open(root, "train").unwrap();
        IndexFreq::from_set(&set)
            .write(&root.join(FREQ_FILE))
            .unwrap();
        let mut cfg = ArConfig::default();
        cfg.data.indices = root.to_path_buf();
        cfg.model.hidden_size = 32;
        cfg.model.intermediate_size = 64;
        cfg.sample.suppression.tau = 30.0;
        let t = &mut cfg.train;
        (t.steps, t.batch_size, t.grad_accum, t.warmup_steps, t.lr) = (40, 16, 2, 4, 3e-3);
        (t.log_every, t.eval_every, t.checkpoint_every) = (1, 20, 7);
        cfg
    }

    #[test]
    fn learns_below_the_unigram_entropy_and_resumes_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
        let done = train(&cfg, &whole, None, &|| false).unwrap();
        assert!(done.completed);
        let h = done.last_eval.unwrap();
        eprintln!(
            "held-out loss {:.3}, unigram entropy {:.3}",
            h.loss, h.unigram_entropy
        );
        assert!(h.loss < 0.8 * h.unigram_entropy, "{h:?}");
        // The run folder has what sampling needs, and the generator loads from it.
        assert!(whole.join(FREQ_FILE).exists() && whole.join(HF_CONFIG).exists());
        let gen =
            super::super::ar_sample::StyleGenerator::load(&whole, |_| {}, &Device::Cpu).unwrap();
        let seqs = gen.sample(&[1, 2]).unwrap();
        assert_eq!((seqs[0].len(), gen.len()), (8, 8));

        let stop_at_10 = stop_at(10);
        let first = train(&cfg, &split, None, &stop_at_10).unwrap();
        assert!(!first.completed && first.checkpoint.ends_with("step-10"));
        let second = train(&cfg, &split, Some("latest"), &|| false).unwrap();
        assert!(second.completed);
        assert_same_runs(&whole, &split);
    }

    #[test]
    fn a_vocabulary_too_small_for_the_indices_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup(dir.path());
        cfg.model.vocab_size = 16;
        let e = train(&cfg, &dir.path().join("run"), None, &|| false).expect_err("refused");
        assert!(format!("{e:#}").contains("vocab_size 16"), "{e:#}");
    }
}
