//! Code -> style: index sequences from a trained style generator (DESIGN.md, "Autoregressive
//! style generator", inference). The code keys the counter-based RNG (`sample/philox.rs`),
//! the first index is uniform, the rest come from the model through a KV cache and the
//! sampler's processors (`sample/logits.rs`), position by position.
//!
//! Several codes decode together as one batch (the weights are read once per position for
//! all of them, which is what makes sampling fast on a CPU), yet each sequence is exactly what
//! the code alone gives: rows do not interact in the model, and each row draws from its own
//! code's RNG. Logits are moved to the CPU as f32 and sampled there in a fixed order, so
//! the sequence depends only on the logits (see `sample/logits.rs` for what that guarantees
//! across machines).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use data::indices::{IndexFreq, FREQ_FILE};

use crate::config::load_stage_text;
use crate::config::stages::ArConfig;
use crate::models::qwen2::Qwen2;
use crate::sample::{CodeRng, Sampler, SamplingConfig};
use crate::train::checkpoint;

/// A trained style generator ready to sample: model, sampler and where they came from.
pub struct StyleGenerator {
    pub model: Qwen2,
    pub sampler: Sampler,
    /// The sampling settings in force (the checkpoint's, adjusted).
    pub sample: SamplingConfig,
    pub checkpoint: PathBuf,
    pub step: u64,
    /// What made the index sequences it was trained on (`freq.json`'s `made_by`: the
    /// codebook checkpoint, among others).
    pub made_by: serde_json::Value,
}

impl StyleGenerator {
    /// Loads an AR checkpoint (`step-N`, `final`, or a run folder: its `latest`) and the run's
    /// `freq.json`; `adjust` may change the checkpoint config's sampling section.
    pub fn load(
        path: &Path,
        adjust: impl FnOnce(&mut SamplingConfig),
        dev: &Device,
    ) -> Result<Self> {
        let dir = checkpoint::checkpoint_dir(path)?;
        let ck = checkpoint::load(&dir)?;
        let config: ArConfig = load_stage_text(&ck.config_yaml, &dir.join("config.yaml"), "ar")
            .map_err(|p| anyhow::anyhow!("{p}"))?;
        let run = dir.parent().unwrap_or(Path::new("."));
        let freq_path = run.join(FREQ_FILE);
        let freq = IndexFreq::read(&freq_path)
            .with_context(|| format!("the AR run's index frequencies ({})", freq_path.display()))?;
        let model_cfg = &config.model;
        if freq.codes as usize != model_cfg.vocab_size {
            bail!(
                "{} counts {} codes, the model's vocabulary is {}",
                freq_path.display(),
                freq.codes,
                model_cfg.vocab_size
            );
        }
        let tensors = ck
            .model
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(dev)?)))
            .collect::<Result<_>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        let model = Qwen2::new(model_cfg, vb).context("loading the style generator")?;
        let mut sample = config.sample.clone();
        adjust(&mut sample);
        let sampler = Sampler::new(&sample, &freq.counts)?;
        Ok(StyleGenerator {
            model,
            sampler,
            sample,
            checkpoint: dir,
            step: ck.step,
            made_by: freq.made_by,
        })
    }

    /// Tokens per image: the length of every sequence.
    pub fn len(&self) -> usize {
        self.model.config().max_position_embeddings
    }

    /// One index sequence per code, decoded as one batch.
    pub fn sample(&self, codes: &[u64]) -> Result<Vec<Vec<u32>>> {
        sample_codes(&self.model, &self.sampler, codes, self.len())
    }
}

/// `len` indices for each code: index 0 uniform, then one model step per position with the
/// KV cache, all codes in one batch.
pub fn sample_codes(
    model: &Qwen2,
    sampler: &Sampler,
    codes: &[u64],
    len: usize,
) -> Result<Vec<Vec<u32>>> {
    if codes.is_empty() || len == 0 {
        return Ok(vec![Vec::new(); codes.len()]);
    }
    let rngs: Vec<CodeRng> = codes.iter().map(|&c| CodeRng::new(c)).collect();
    let mut seqs: Vec<Vec<u32>> = rngs.iter().map(|r| vec![sampler.first(r)]).collect();
    let mut cache = model.new_cache();
    let dev = model.device().clone();
    for pos in 1..len {
        let last: Vec<u32> = seqs.iter().map(|s| s[pos - 1]).collect();
        let x = Tensor::from_vec(last, (codes.len(), 1), &dev)?;
        let logits = model.forward_cached(&x, &mut cache)?; // (B, 1, V)
        let rows: Vec<Vec<f32>> = logits
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2()?;
        for ((seq, row), rng) in seqs.iter_mut().zip(&rows).zip(&rngs) {
            let next = sampler.next(row, seq, rng, pos as u64)?;
            seq.push(next);
        }
    }
    Ok(seqs)
}

/// What `trainer sample-style` reports about a sequence.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceStats {
    pub distinct: usize,
    /// Share of positions holding a high-frequency index (count >= tau in `freq.json`).
    pub high_frequency_share: f64,
}

pub fn stats(seq: &[u32], sampler: &Sampler) -> SequenceStats {
    let mut sorted = seq.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let high = seq
        .iter()
        .filter(|&&i| sampler.is_high_frequency(i))
        .count();
    SequenceStats {
        distinct: sorted.len(),
        high_frequency_share: if seq.is_empty() {
            0.0
        } else {
            high as f64 / seq.len() as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2::{init_tensors, Qwen2Config};
    use crate::sample::interpolate;

    /// A fixed "checkpoint": seeded weights at a large scale, so logits are far apart and the
    /// draws do not hinge on the last bit of a logit.
    fn model() -> Qwen2 {
        let cfg = Qwen2Config {
            vocab_size: 64,
            max_position_embeddings: 12,
            hidden_size: 32,
            intermediate_size: 48,
            initializer_range: 0.5,
            ..Qwen2Config::tiny()
        };
        let vb =
            VarBuilder::from_tensors(init_tensors(&cfg, 42).unwrap(), DType::F32, &Device::Cpu);
        Qwen2::new(&cfg, vb).unwrap()
    }

    fn sampler() -> Sampler {
        // Indices 0..8 are frequent, the rest rare.
        let counts: Vec<u64> = (0..64).map(|i| if i < 8 { 500 } else { 10 }).collect();
        let mut cfg = SamplingConfig {
            top_k: 20,
            ..SamplingConfig::default()
        };
        (cfg.suppression.tau, cfg.suppression.k) = (100.0, 0.01);
        Sampler::new(&cfg, &counts).unwrap()
    }

    fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    /// Code 1234's sequence under `model()` and `sampler()`. Changing it means a code no
    /// longer gives the style it gave: only with a deliberate, documented change of the
    /// sampling contract.
    const PINNED: [u32; 12] = [8, 52, 18, 18, 62, 35, 48, 52, 54, 63, 55, 52];

    #[test]
    fn a_code_gives_its_pinned_sequence_on_one_and_two_threads_and_in_any_batch() {
        let (m, s) = (model(), sampler());
        let one = in_pool(1, || sample_codes(&m, &s, &[1234], 12).unwrap());
        let two = in_pool(2, || sample_codes(&m, &s, &[1234], 12).unwrap());
        eprintln!("code 1234: {:?}", one[0]);
        assert_eq!(one, two);
        assert_eq!(one[0], PINNED, "the pinned sequence of code 1234 changed");
        let batch = in_pool(2, || {
            sample_codes(&m, &s, &[7, 1234, u64::MAX], 12).unwrap()
        });
        assert_eq!(batch[1], one[0], "a code's sequence depends on its batch");
        assert_ne!(batch[0], batch[1]);
        assert_ne!(batch[2], batch[1]);
    }

    #[test]
    fn interpolation_with_all_weight_on_one_code_is_that_codes_sequence() {
        let (m, s) = (model(), sampler());
        let seqs = sample_codes(&m, &s, &[5, 6], 12).unwrap();
        let rng = CodeRng::new(5);
        assert_eq!(interpolate(&seqs, &[0.0, 1.0], &rng).unwrap(), seqs[1]);
        assert_eq!(interpolate(&seqs, &[1.0, 0.0], &rng).unwrap(), seqs[0]);
        let mixed = interpolate(&seqs, &[1.0, 1.0], &rng).unwrap();
        assert!(mixed
            .iter()
            .enumerate()
            .all(|(t, &i)| i == seqs[0][t] || i == seqs[1][t]));
    }

    #[test]
    fn stats_count_distinct_and_high_frequency_indices() {
        let st = stats(&[1, 1, 9, 30], &sampler());
        assert_eq!(st.distinct, 3);
        assert_eq!(st.high_frequency_share, 0.5);
    }
}
