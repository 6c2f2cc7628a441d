//! Codebook usage over a sliding window of recent optimiser steps, and dead-code
//! re-initialisation (issue 4, item 2; DESIGN.md, "Style codebook"). Loop state kept beside
//! the model: the codebook stage records each micro-batch's indices, closes the step, logs
//! `fraction_used` and `perplexity`, and every `dead_code.reinit_every` steps overwrites the
//! dead rows of the codebook with recent projected features (the usual cure for VQ codebook
//! collapse: Dhariwal et al., "Jukebox", 2020; Zeghidour et al., "SoundStream", 2021). CoTyle
//! (arXiv 2511.10555) does not describe its own; its guard against collapse is L_recon.
//!
//! A code is *dead* when it has been in the codebook for at least a full window (since init
//! or its last re-initialisation) and was used fewer than `min_usage` times in the window: a
//! code is never judged on less evidence than a window, and a fresh one gets a window to
//! prove itself.
//!
//! Counts are integers and the re-initialisation draws from `Rng::new(mix(mix(seed, STREAM),
//! step))`, so a run is reproducible, and serde (into the checkpoint's `state.json`) carries
//! everything, so a resumed run continues bit-identically. Deserialising checks consistency.
//!
//! Data parallel: give `record_counts` the histogram summed over ranks, and re-initialise
//! from features that every rank holds (gathered), so all ranks write the same rows.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use candle_core::{bail, DType, Device, Result, Tensor, Var};
use data::rng::{mix, Rng};
use serde::{Deserialize, Serialize};

use super::{DeadCodeConfig, StyleCodebookConfig};

/// Stream label of the re-initialisation draws ("codereinit" in ASCII, truncated).
const STREAM: u64 = 0x636f_6465_7265_696e;

/// Usage of `codes` codes over the last `window_steps` steps. `Default` is an empty
/// placeholder (no codes) for loop-state structs; build the real one with [`CodeUsage::new`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "State", into = "State")]
pub struct CodeUsage {
    codes: usize,
    window_steps: u64,
    /// Counts of the step under way (records since the last `end_step`): (codes).
    pending: Vec<u64>,
    /// Per-step histograms (codes), oldest first; at most `window_steps` of them.
    recent: VecDeque<Vec<u64>>,
    /// Sum of `recent`: uses of each code over the window.
    totals: Vec<u64>,
    /// Closed steps each code has been in the codebook since init or re-init, capped at the
    /// window.
    age: Vec<u64>,
}

/// The serialised form (`totals` is derived, so not stored).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    codes: usize,
    window_steps: u64,
    pending: Vec<u64>,
    recent: Vec<Vec<u64>>,
    age: Vec<u64>,
}

impl CodeUsage {
    /// An empty window of `dead_code.window_steps` steps for `codes` codes.
    pub fn new(cfg: &StyleCodebookConfig) -> Self {
        Self::with_window(cfg.codes, cfg.dead_code.window_steps)
    }

    /// An empty window of `window_steps` (at least 1) steps for `codes` codes.
    pub fn with_window(codes: usize, window_steps: u64) -> Self {
        CodeUsage {
            codes,
            window_steps: window_steps.max(1),
            pending: vec![0; codes],
            recent: VecDeque::new(),
            totals: vec![0; codes],
            age: vec![0; codes],
        }
    }

    /// Adds code indices (u32 or i64, any shape, e.g. `Quantized::indices`) to the step under
    /// way.
    pub fn record(&mut self, indices: &Tensor) -> Result<()> {
        let counts = kernels::vq::code_histogram(&indices.flatten_all()?, self.codes)?;
        let counts: Vec<u64> = counts
            .to_vec1::<i64>()?
            .into_iter()
            .map(|c| c as u64)
            .collect();
        self.record_counts(&counts)
    }

    /// Adds a histogram (codes) to the step under way, e.g. one summed over ranks.
    pub fn record_counts(&mut self, counts: &[u64]) -> Result<()> {
        if counts.len() != self.codes {
            bail!(
                "code usage: a histogram of {} entries for a codebook of {}",
                counts.len(),
                self.codes
            );
        }
        for (p, &c) in self.pending.iter_mut().zip(counts) {
            *p += c;
        }
        Ok(())
    }

    /// Closes the step under way: its counts enter the window (the oldest step leaves a full
    /// one) and every code ages by a step. Call once per optimiser step.
    pub fn end_step(&mut self) {
        let step = std::mem::replace(&mut self.pending, vec![0; self.codes]);
        if self.recent.len() as u64 >= self.window_steps.max(1) {
            let old = self.recent.pop_front().expect("a full window is not empty");
            for (t, o) in self.totals.iter_mut().zip(old) {
                *t -= o;
            }
        }
        for (t, &c) in self.totals.iter_mut().zip(&step) {
            *t += c;
        }
        self.recent.push_back(step);
        for a in &mut self.age {
            *a = (*a + 1).min(self.window_steps);
        }
    }

    #[cfg(test)]
    /// Closed steps now in the window (up to `window_steps`).
    pub fn steps_in_window(&self) -> usize {
        self.recent.len()
    }

    #[cfg(test)]
    /// Uses of each code over the window: (codes).
    pub fn counts(&self) -> &[u64] {
        &self.totals
    }

    /// Share of the codes used at least once in the window, in [0, 1] (0 without codes).
    pub fn fraction_used(&self) -> f64 {
        let used = self.totals.iter().filter(|&&c| c > 0).count();
        used as f64 / self.codes.max(1) as f64
    }

    /// exp of the entropy (nats) of the window's code distribution: the number of equally used
    /// codes with the same entropy, from 1 (one code) to `codes` (uniform); 0 before any use.
    pub fn perplexity(&self) -> f64 {
        let total: u64 = self.totals.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let total = total as f64;
        let entropy: f64 = self
            .totals
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total;
                -p * p.ln()
            })
            .sum();
        entropy.exp()
    }

    /// Codes in the codebook for a full window and used fewer than `min_usage` times in it,
    /// in increasing order; none when `min_usage` is 0.
    pub fn dead_codes(&self, min_usage: u64) -> Vec<u32> {
        (0..self.codes)
            .filter(|&i| self.age[i] >= self.window_steps && self.totals[i] < min_usage)
            .map(|i| i as u32)
            .collect()
    }

    /// The loop's call after each optimiser step: re-initialises the dead codes (see
    /// [`reinit_dead`](Self::reinit_dead)) when `cfg.enabled` and `step` is a multiple of
    /// `cfg.reinit_every`; else does nothing. Returns how many rows were written.
    pub fn maybe_reinit(
        &mut self,
        cfg: &DeadCodeConfig,
        codebook: &Var,
        recent_z: &Tensor,
        seed: u64,
        step: u64,
    ) -> Result<usize> {
        if !cfg.enabled || cfg.reinit_every == 0 || !step.is_multiple_of(cfg.reinit_every) {
            return Ok(0);
        }
        self.reinit_dead(codebook, recent_z, cfg.min_usage, seed, step)
    }

    /// Overwrites each dead code's row of `codebook` (K, Dc) with a recent feature, a row of
    /// `recent_z` (M, Dc) (or any (…, Dc), flattened) chosen at random (distinct rows while M
    /// allows), L2-normalised; those codes start a fresh window. The draws depend only on
    /// (seed, step). Returns how many rows were written. The optimiser's moments of those rows
    /// are the caller's to reset (stale moments would push the fresh row around).
    pub fn reinit_dead(
        &mut self,
        codebook: &Var,
        recent_z: &Tensor,
        min_usage: u64,
        seed: u64,
        step: u64,
    ) -> Result<usize> {
        let dead = self.dead_codes(min_usage);
        if dead.is_empty() {
            return Ok(0);
        }
        let (k, dc) = codebook.dims2()?;
        let dz = recent_z.dims().last().copied().unwrap_or(0);
        if k != self.codes || dz != dc {
            bail!(
                "code usage: codebook {:?} and recent features {:?} must be ({}, D) and (…, D)",
                codebook.dims(),
                recent_z.dims(),
                self.codes
            );
        }
        let m = recent_z.elem_count() / dc.max(1);
        if m == 0 {
            bail!(
                "code usage: {} dead codes but no recent features",
                dead.len()
            );
        }
        let mut rng = Rng::new(mix(mix(seed, STREAM), step));
        let picks: Vec<usize> = if m >= dead.len() {
            // Partial Fisher-Yates: the first dead.len() entries of a random permutation.
            let mut rows: Vec<usize> = (0..m).collect();
            for i in 0..dead.len() {
                let j = i + rng.below((m - i) as u64) as usize;
                rows.swap(i, j);
            }
            rows.truncate(dead.len());
            rows
        } else {
            (0..dead.len())
                .map(|_| rng.below(m as u64) as usize)
                .collect()
        };
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            t.to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()
        };
        let mut rows = host(codebook.as_tensor())?;
        let feats = host(recent_z)?;
        for (&code, &pick) in dead.iter().zip(&picks) {
            let f = &feats[pick * dc..(pick + 1) * dc];
            let norm = f.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !(norm > 0.0 && norm.is_finite()) {
                bail!("code usage: recent feature {pick} has norm {norm}, cannot seed a code");
            }
            let row = &mut rows[code as usize * dc..(code as usize + 1) * dc];
            for (r, x) in row.iter_mut().zip(f) {
                *r = x / norm;
            }
            self.age[code as usize] = 0;
        }
        let new = Tensor::from_vec(rows, (k, dc), &Device::Cpu)?
            .to_dtype(codebook.dtype())?
            .to_device(codebook.device())?;
        codebook.set(&new)?;
        Ok(dead.len())
    }
}

impl From<CodeUsage> for State {
    fn from(u: CodeUsage) -> State {
        State {
            codes: u.codes,
            window_steps: u.window_steps,
            pending: u.pending,
            recent: u.recent.into(),
            age: u.age,
        }
    }
}

impl TryFrom<State> for CodeUsage {
    type Error = String;

    /// Refuses an inconsistent state, saying what is wrong (serde adds where).
    fn try_from(s: State) -> std::result::Result<Self, String> {
        let bad = |what: String| Err(format!("code usage state: {what}"));
        if s.recent.len() as u64 > s.window_steps {
            return bad(format!(
                "{} steps in a window of {}",
                s.recent.len(),
                s.window_steps
            ));
        }
        if let Some(i) = s.recent.iter().position(|h| h.len() != s.codes) {
            return bad(format!(
                "histogram {i} has {} entries for {} codes",
                s.recent[i].len(),
                s.codes
            ));
        }
        if s.age.len() != s.codes || s.pending.len() != s.codes {
            return bad(format!(
                "{} ages and {} pending counts for {} codes",
                s.age.len(),
                s.pending.len(),
                s.codes
            ));
        }
        let mut totals = vec![0u64; s.codes];
        for h in &s.recent {
            for (t, &c) in totals.iter_mut().zip(h) {
                *t += c;
            }
        }
        Ok(CodeUsage {
            codes: s.codes,
            window_steps: s.window_steps,
            pending: s.pending,
            recent: s.recent.into(),
            totals,
            age: s.age,
        })
    }
}
