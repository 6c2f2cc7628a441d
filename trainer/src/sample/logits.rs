//! The AR style generator's sampler (CoTyle, arXiv 2511.10555, section 3.3; DESIGN.md,
//! "Autoregressive style generator"): its config, the logits processors and the draw of one
//! index from one position's logits.
//!
//! The pipeline, in order, all in f64:
//! 1. repetition penalty (Hugging Face `RepetitionPenaltyLogitsProcessor`, after Keskar et al.
//!    2019, CTRL): each distinct index already in the sequence has its logit divided by p when
//!    positive, multiplied by p when not;
//! 2. high-frequency suppression (below);
//! 3. temperature: divide by T;
//! 4. top-k: keep the k highest scores (score descending, ties to the lower index);
//! 5. top-p (nucleus, Holtzman et al. 2020): of those, in that order, keep the shortest prefix
//!    whose softmax mass reaches top_p;
//! 6. the draw, by inverse CDF over the kept entries in that order, with the code's uniform
//!    for this position (`CodeRng::uniform(Stream::Token, position)`).
//!
//! Every reduction (max, sums, the cumulative walk) is a plain sequential loop in that fixed
//! order, and the order itself is total, so a style code gives the same index sequence on
//! every machine and thread count (DESIGN.md, "Determinism"); nothing here is parallel or
//! vectorised by the compiler in a way that reassociates f64 sums.
//!
//! High-frequency suppression. The paper: s(i) = 1 if f(i) < tau, else exp(-k (f(i) - tau)),
//! f(i) = how often index i occurs in the training set's index sequences, with the logits
//! "multiplied" by s(i) (tau = 90000 counts, k = 1e-4). Multiplying a raw, signed logit by
//! s < 1 pulls it toward 0: a frequent index with a positive logit is demoted, but one with a
//! negative logit is *promoted*, the opposite of the intent. Our default therefore multiplies
//! the unnormalised probability exp(logit) by s(i), i.e. adds ln s(i) = -k (f(i) - tau) to the
//! logit (`SuppressApply::Probabilities`): every high-frequency index is demoted whatever its
//! logit's sign, by a factor independent of the other logits. `SuppressApply::Logits` is the
//! literal reading (logit * s(i)), kept to replicate the paper.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use super::philox::{CodeRng, Stream};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Divides the scores; 1.0 (the paper's) leaves the model's distribution as it is.
    pub temperature: f64,
    /// Keep only the k most likely indices; 0 = off. The paper: 200.
    pub top_k: usize,
    /// Nucleus: keep the fewest indices whose probability sums to at least this; 1.0 = off.
    /// The paper: 0.95.
    pub top_p: f64,
    /// Hugging Face semantics; 1.0 = off. The paper names a repetition penalty but gives no
    /// value, so it is off by default.
    pub repetition_penalty: f64,
    pub suppression: SuppressionConfig,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: 200,
            top_p: 0.95,
            repetition_penalty: 1.0,
            suppression: SuppressionConfig::default(),
        }
    }
}

/// High-frequency suppression: s(i) = 1 if f(i) < tau, else exp(-k (f(i) - tau)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// Off: the paper's "no suppression" ablation (its diversity drops 0.7764 -> 0.7488).
    pub enabled: bool,
    /// Threshold, in counts over the training set's index sequences (the paper: 90000).
    pub tau: f64,
    /// Decay per count above tau (the paper: 1e-4).
    pub k: f64,
    /// Where s(i) applies; see `SuppressApply`.
    pub apply: SuppressApply,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            enabled: true,
            tau: 90000.0,
            k: 1e-4,
            apply: SuppressApply::Probabilities,
        }
    }
}

/// Where the suppression factor s(i) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressApply {
    /// Multiply exp(logit), i.e. add ln s(i) to the logit: always demotes (the default).
    Probabilities,
    /// Multiply the raw logit (the paper's literal wording): demotes an index with a positive
    /// logit but promotes one with a negative logit toward 0.
    Logits,
}

impl SamplingConfig {
    /// Rules beyond the types, as `(key, message)`; `prefix` is this section's dotted key.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut r = crate::config::rules::Rules::new(prefix);
        let t = self.temperature;
        r.need(
            t > 0.0 && t.is_finite(),
            "temperature",
            format!("{t} must be a positive number"),
        );
        let p = self.top_p;
        r.need(
            p > 0.0 && p <= 1.0,
            "top_p",
            format!("{p} must be within (0, 1] (1 = off)"),
        );
        let rp = self.repetition_penalty;
        r.need(
            rp > 0.0 && rp.is_finite(),
            "repetition_penalty",
            format!("{rp} must be a positive number (1 = off)"),
        );
        let s = &self.suppression;
        for (key, v) in [("suppression.tau", s.tau), ("suppression.k", s.k)] {
            r.need(
                v >= 0.0 && v.is_finite(),
                key,
                format!("{v} must be a non-negative number"),
            );
        }
        r.into_vec()
    }
}

/// ln s(i) per index: -k (f(i) - tau) where f(i) >= tau, else 0 (0 everywhere when disabled).
/// Kept in the log domain so a huge count demotes by a large finite amount instead of
/// underflowing s to 0.
fn log_factors(counts: &[u64], cfg: &SuppressionConfig) -> Vec<f64> {
    counts
        .iter()
        .map(|&c| {
            let f = c as f64;
            if cfg.enabled && f >= cfg.tau {
                -cfg.k * (f - cfg.tau)
            } else {
                0.0
            }
        })
        .collect()
}

/// s(i) per index: exactly 1.0 below tau (and everywhere when disabled), exp(-k (f(i) - tau))
/// at or above it.
pub fn suppression_factors(counts: &[u64], cfg: &SuppressionConfig) -> Vec<f64> {
    log_factors(counts, cfg).into_iter().map(f64::exp).collect()
}

/// Draws indices from the generator's logits under one `SamplingConfig` and one vocabulary's
/// index frequencies.
pub struct Sampler {
    cfg: SamplingConfig,
    /// s(i), for `SuppressApply::Logits`.
    factors: Vec<f64>,
    /// ln s(i), for `SuppressApply::Probabilities`.
    log_factors: Vec<f64>,
    high_frequency: Vec<bool>,
}

/// What survives steps 1-5 for one position.
struct Kept {
    /// Processed score of every index (after temperature), index order.
    z: Vec<f64>,
    /// The kept indices, score descending, ties to the lower index.
    order: Vec<u32>,
    /// exp(z - max) of each kept index, in `order`.
    weights: Vec<f64>,
}

impl Sampler {
    /// counts: index frequencies (freq.json), one per vocabulary entry.
    pub fn new(cfg: &SamplingConfig, counts: &[u64]) -> Result<Sampler> {
        ensure!(
            !counts.is_empty(),
            "sampler: no index frequencies (empty vocabulary)"
        );
        ensure!(
            counts.len() <= u32::MAX as usize,
            "sampler: vocabulary of {} entries does not fit u32 indices",
            counts.len()
        );
        let problems = cfg.problems("sample");
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("sampler config: {}", lines.join("; "));
        }
        let log_factors = log_factors(counts, &cfg.suppression);
        Ok(Sampler {
            cfg: cfg.clone(),
            factors: suppression_factors(counts, &cfg.suppression),
            log_factors,
            high_frequency: counts
                .iter()
                .map(|&c| c as f64 >= cfg.suppression.tau)
                .collect(),
        })
    }

    pub fn vocab(&self) -> usize {
        self.factors.len()
    }

    /// Whether index i is at or above tau (the stats' "high-frequency" share, counted whether
    /// or not suppression is enabled). Panics if i >= vocab.
    pub fn is_high_frequency(&self, i: u32) -> bool {
        self.high_frequency[i as usize]
    }

    /// The first index: uniform over the vocabulary, floor(u * V) with
    /// u = rng.uniform(Stream::First, 0).
    pub fn first(&self, rng: &CodeRng) -> u32 {
        let v = self.vocab();
        let i = (rng.uniform(Stream::First, 0) * v as f64) as usize;
        // u < 1, but u * V may round up to V when V has many significant bits.
        i.min(v - 1) as u32
    }

    /// The processed scores in f64 (index order), -inf for removed entries: the pipeline minus
    /// the draw. For tests. Panics on logits of the wrong length or a
    /// history index out of range (`next` checks these and errors instead).
    #[cfg(test)]
    pub fn scores(&self, logits: &[f32], history: &[u32]) -> Vec<f64> {
        let kept = self.process(logits, history);
        let mut out = vec![f64::NEG_INFINITY; logits.len()];
        for &i in &kept.order {
            out[i as usize] = kept.z[i as usize];
        }
        out
    }

    /// Draws the index at sequence position `position` (>= 1; position 0 is `first`'s) from
    /// logits (length V) given the indices so far (`history`, for the repetition penalty),
    /// with u = rng.uniform(Stream::Token, position).
    pub fn next(
        &self,
        logits: &[f32],
        history: &[u32],
        rng: &CodeRng,
        position: u64,
    ) -> Result<u32> {
        let v = self.vocab();
        ensure!(
            logits.len() == v,
            "{} logits for a vocabulary of {v}",
            logits.len()
        );
        for (i, &l) in logits.iter().enumerate() {
            ensure!(!l.is_nan(), "logit of index {i} is NaN");
            ensure!(l != f32::INFINITY, "logit of index {i} is +inf");
        }
        if let Some(&h) = history.iter().find(|&&h| h as usize >= v) {
            bail!("history index {h} is outside the vocabulary of {v}");
        }
        let kept = self.process(logits, history);
        let Some(&top) = kept.order.first() else {
            bail!("every logit is -inf: nothing to sample at position {position}");
        };
        ensure!(
            kept.z[top as usize].is_finite(),
            "score of index {top} overflowed to +inf (logit {}); temperature or repetition \
             penalty too small",
            logits[top as usize]
        );
        // Inverse CDF, sequentially in the kept order.
        let total: f64 = kept.weights.iter().fold(0.0, |a, &w| a + w);
        let target = rng.uniform(Stream::Token, position) * total;
        let mut acc = 0.0;
        for (&i, &w) in kept.order.iter().zip(&kept.weights) {
            acc += w;
            if acc > target {
                return Ok(i);
            }
        }
        // Rounding left u * total at or past the last partial sum.
        Ok(*kept.order.last().expect("order is non-empty"))
    }

    /// Steps 1-5 of the pipeline (see the module doc).
    fn process(&self, logits: &[f32], history: &[u32]) -> Kept {
        assert_eq!(logits.len(), self.vocab(), "logits for another vocabulary");
        let cfg = &self.cfg;
        let mut z: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        // 1. Repetition penalty, once per distinct index.
        if cfg.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            let p = cfg.repetition_penalty;
            for &i in &seen {
                let x = &mut z[i as usize];
                *x = if *x > 0.0 { *x / p } else { *x * p };
            }
        }
        // 2. Suppression (an index at -inf stays there: -inf * 0 would be NaN).
        if cfg.suppression.enabled {
            for (i, x) in z.iter_mut().enumerate() {
                if *x != f64::NEG_INFINITY {
                    match cfg.suppression.apply {
                        SuppressApply::Probabilities => *x += self.log_factors[i],
                        SuppressApply::Logits => *x *= self.factors[i],
                    }
                }
            }
        }
        // 3. Temperature.
        if cfg.temperature != 1.0 {
            let t = cfg.temperature;
            z.iter_mut().for_each(|x| *x /= t);
        }
        // 4. Top-k over the entries still possible, in the total order (score descending,
        //    ties to the lower index), so which tie survives never depends on the sort.
        let by_score = |a: &u32, b: &u32| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b));
        let mut order: Vec<u32> = (0..z.len() as u32)
            .filter(|&i| z[i as usize] != f64::NEG_INFINITY)
            .collect();
        let k = cfg.top_k;
        if k > 0 && order.len() > k {
            order.select_nth_unstable_by(k - 1, by_score);
            order.truncate(k);
        }
        order.sort_unstable_by(by_score);
        // 5. Top-p: softmax over the survivors (max-subtracted), shortest prefix reaching p.
        let max = order.first().map_or(0.0, |&i| z[i as usize]);
        let mut weights: Vec<f64> = order.iter().map(|&i| (z[i as usize] - max).exp()).collect();
        if cfg.top_p < 1.0 {
            let total: f64 = weights.iter().fold(0.0, |a, &w| a + w);
            let mut cum = 0.0;
            let mut n = weights.len();
            for (j, &w) in weights.iter().enumerate() {
                cum += w / total;
                if cum >= cfg.top_p {
                    n = j + 1;
                    break;
                }
            }
            order.truncate(n);
            weights.truncate(n);
        }
        Kept { z, order, weights }
    }
}

#[cfg(test)]
mod tests;
