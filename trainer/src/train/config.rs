//! The `train` section shared by every stage's loop: steps, batch, optimiser, schedule,
//! clipping, logging and checkpoint cadence. Defaults suit the tiny CPU configs; the paper's
//! numbers live in `configs/full/`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seeds parameters, data order, augmentation and dropout: the run is a function of it.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Examples per optimiser step, summed over ranks and accumulation micro-steps.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// The cosine schedule ends at lr * min_lr_ratio.
    pub min_lr_ratio: f64,
    /// Linear warm-up steps from 0 to lr (a run shorter than this never reaches lr: handy
    /// for smoke runs with `--set train.steps=3`, so it is not an error).
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    pub grad_clip: f64,
    pub log_every: u64,
    /// Held-out evaluation cadence in steps; 0 disables it.
    pub eval_every: u64,
    pub checkpoint_every: u64,
    /// Newest checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Runs are written to out_dir/run.
    pub out_dir: PathBuf,
    /// Run name; empty means one is made from the stage and the time.
    pub run: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            steps: 200,
            batch_size: 32,
            grad_accum: 1,
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            weight_decay: 0.01,
            betas: [0.9, 0.999],
            eps: 1e-8,
            grad_clip: 1.0,
            log_every: 10,
            eval_every: 100,
            checkpoint_every: 100,
            keep_checkpoints: 3,
            out_dir: PathBuf::from("checkpoints"),
            run: String::new(),
        }
    }
}

impl TrainConfig {
    /// Rules beyond the types, as `(key, message)`.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut rules = crate::config::rules::Rules::new(prefix);
        let mut need = |ok: bool, k: &str, msg: String| rules.need(ok, k, msg);
        need(self.steps > 0, "steps", "must be at least 1".into());
        need(
            self.batch_size > 0,
            "batch_size",
            "must be at least 1".into(),
        );
        need(
            self.grad_accum > 0,
            "grad_accum",
            "must be at least 1".into(),
        );
        need(
            self.batch_size.is_multiple_of(self.grad_accum.max(1)),
            "batch_size",
            format!(
                "{} is not divisible by grad_accum {}",
                self.batch_size, self.grad_accum
            ),
        );
        need(
            self.lr > 0.0 && self.lr.is_finite(),
            "lr",
            "must be a positive number".into(),
        );
        need(
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "min_lr_ratio",
            "must be within [0, 1]".into(),
        );
        need(
            self.weight_decay >= 0.0,
            "weight_decay",
            "must not be negative".into(),
        );
        need(
            self.betas.iter().all(|b| (0.0..1.0).contains(b)),
            "betas",
            "each must be within [0, 1)".into(),
        );
        need(self.eps > 0.0, "eps", "must be positive".into());
        need(
            self.grad_clip >= 0.0,
            "grad_clip",
            "must not be negative (0 disables clipping)".into(),
        );
        need(self.log_every > 0, "log_every", "must be at least 1".into());
        need(
            self.checkpoint_every > 0,
            "checkpoint_every",
            "must be at least 1".into(),
        );
        need(
            self.keep_checkpoints > 0,
            "keep_checkpoints",
            "must be at least 1".into(),
        );
        rules.into_vec()
    }
}
