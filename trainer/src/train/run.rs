//! [`Run`]: what every stage's loop does around its own step, so the loops in `stages/` only
//! say what a step computes. It owns the run folder (DESIGN.md, "Rules of the house"):
//! resuming from a checkpoint (`latest`, a step folder or a run folder), the metric sinks
//! (`metrics.jsonl`, TensorBoard), the LR schedule, the progress display, checkpoint cadence
//! (`checkpoint_every`, a `final` checkpoint at the last step, one more when a stop is
//! requested) and the outcome. [`MicroBatches`] sums gradients over accumulation micro-steps
//! and refuses a non-finite loss with the step and the term named.
//!
//! A loop reads:
//! ```text
//! let mut run = Run::open(&cfg.train, yaml, run_dir, resume)?;
//! build the model from run.resumed; opt.load_state(..) when resumed
//! for step in run.first_step(&opt)..=t.steps {
//!     micro-batches -> MicroBatches::add(step, loss terms)
//!     opt.step(grads, run.lr_at(step), clip); run.log(step, values)
//!     if run.end_step(step, should_stop(), || model tensors, &opt, &loop_state)? {
//!         return Ok(run.stopped(last_eval));
//!     }
//! }
//! Ok(run.completed(last_eval))
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use serde::Serialize;

use super::checkpoint::{self, Checkpoint};
use super::metrics::Metrics;
use super::optim::{AdamW, StepReport};
use super::progress::Progress;
use super::schedule::Schedule;
use super::TrainConfig;

/// How a run ended; `E` is the stage's evaluation report.
#[derive(Debug)]
pub struct Outcome<E> {
    /// The last checkpoint written (`final` when the run completed).
    pub checkpoint: PathBuf,
    pub completed: bool,
    /// The last held-out evaluation, if any ran.
    pub last_eval: Option<E>,
}

/// One training run in its folder.
pub struct Run {
    dir: PathBuf,
    t: TrainConfig,
    /// The resolved config, saved with every checkpoint.
    config_yaml: String,
    /// The checkpoint the run resumed from, if any; the loop takes its model, optimiser and
    /// loop state.
    pub resumed: Option<Checkpoint>,
    pub metrics: Metrics,
    pub progress: Progress,
    schedule: Schedule,
    written: Option<PathBuf>,
}

impl Run {
    /// Creates `run_dir`, loads the checkpoint `resume` names (warning when its config differs
    /// from `config_yaml`), and opens the metric sinks (cut back to the resumed step).
    pub fn open(
        t: &TrainConfig,
        config_yaml: &str,
        run_dir: &Path,
        resume: Option<&str>,
    ) -> Result<Run> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating run folder {}", run_dir.display()))?;
        let resumed = match resume {
            Some(arg) => {
                let path = checkpoint::resolve_resume(run_dir, arg)?;
                tracing::info!("resuming from {}", path.display());
                Some(checkpoint::load(&path)?)
            }
            None => None,
        };
        if let Some(ck) = &resumed {
            if ck.config_yaml != config_yaml {
                tracing::warn!("the config differs from the checkpoint's; the new one applies");
            }
        }
        let metrics = Metrics::open(run_dir, resumed.as_ref().map(|c| c.step))?;
        tracing::info!(
            "metrics: {} and {} (tensorboard --logdir)",
            metrics.jsonl_path().display(),
            metrics.tb_path().display()
        );
        let start = resumed.as_ref().map_or(0, |c| c.step);
        Ok(Run {
            dir: run_dir.to_path_buf(),
            t: t.clone(),
            config_yaml: config_yaml.to_string(),
            resumed,
            metrics,
            progress: Progress::new(t.steps, start, t.log_every, t.batch_size, true),
            schedule: Schedule::from_train(t),
            written: None,
        })
    }

    /// The first step to run: one past the optimiser's (restored) step count.
    pub fn first_step(&self, opt: &AdamW) -> u64 {
        opt.steps_taken() + 1
    }

    pub fn lr_at(&self, step: u64) -> f64 {
        self.schedule.lr_at(step)
    }

    /// Shows `values` (the first two on the bar) and writes them to the sinks when due.
    pub fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        self.progress.update(step, &values[..values.len().min(2)]);
        if step.is_multiple_of(self.t.log_every) || step == self.t.steps {
            self.metrics.log(step, values)?;
        }
        Ok(())
    }

    /// The step's update: AdamW at the scheduled learning rate with `train.grad_clip`, and on
    /// the run's first step a warning naming every parameter no gradient reached except the
    /// `expected_dead` ones (candle drops gradients silently; such a parameter would stay at
    /// its init). Returns the learning rate and the optimiser's report.
    pub fn update(
        &self,
        step: u64,
        first: u64,
        opt: &mut AdamW,
        grads: &GradStore,
        expected_dead: &[String],
    ) -> Result<(f64, StepReport)> {
        let lr = self.lr_at(step);
        let rep = opt
            .step(grads, lr, self.t.grad_clip)
            .with_context(|| format!("optimiser step {step}"))?;
        if step == first {
            let odd: Vec<&String> = rep
                .no_grad
                .iter()
                .filter(|n| !expected_dead.contains(n))
                .collect();
            if !odd.is_empty() {
                tracing::warn!("no gradient reached {odd:?}: they stay as they are");
            }
        }
        Ok((lr, rep))
    }

    /// Whether a held-out evaluation is due after `step` (and at the last step).
    pub fn eval_due(&self, step: u64) -> bool {
        self.t.eval_every > 0 && (step.is_multiple_of(self.t.eval_every) || step == self.t.steps)
    }

    /// After the optimiser step `step`: when a checkpoint is due (the cadence, the last step,
    /// or a stop) writes the trained tensors `model` gives, the optimiser's state and the
    /// loop's `state`; returns whether the loop must stop now.
    pub fn end_step(
        &mut self,
        step: u64,
        stop_requested: bool,
        model: impl FnOnce() -> HashMap<String, Tensor>,
        opt: &AdamW,
        state: &impl Serialize,
    ) -> Result<bool> {
        let stopping = stop_requested && step < self.t.steps;
        let last = step == self.t.steps;
        if last || stopping || step.is_multiple_of(self.t.checkpoint_every) {
            let ck = Checkpoint {
                step,
                model: model(),
                optim: opt.state()?,
                state: serde_json::to_value(state)?,
                config_yaml: self.config_yaml.clone(),
            };
            let mut path = checkpoint::save(&self.dir, &ck, self.t.keep_checkpoints)?;
            if last {
                path = checkpoint::save_final(&self.dir, &ck)?;
            }
            self.written = Some(path);
        }
        if stopping {
            self.progress.finish();
            tracing::warn!("stopped at step {step}; resume with --resume latest");
        }
        Ok(stopping)
    }

    /// The outcome of a run stopped by [`Run::end_step`].
    pub fn stopped<E>(self, last_eval: Option<E>) -> Outcome<E> {
        Outcome {
            checkpoint: self.written.expect("end_step saves before it stops"),
            completed: false,
            last_eval,
        }
    }

    /// The outcome of a run that reached its last step.
    pub fn completed<E>(mut self, last_eval: Option<E>) -> Outcome<E> {
        self.progress.finish();
        // Nothing left to train (resumed at the end): the final checkpoint is there already.
        let checkpoint = self.written.unwrap_or_else(|| self.dir.join("final"));
        Outcome {
            checkpoint,
            completed: true,
            last_eval,
        }
    }
}

/// Gradients and loss terms summed over the micro-batches of one optimiser step: each
/// micro-batch's loss is divided by their number, so the sum is the mean over the batch.
pub struct MicroBatches {
    count: usize,
    grads: Option<GradStore>,
    /// Mean of each loss term over the micro-batches, in the order first given.
    pub terms: Vec<(&'static str, f64)>,
}

impl MicroBatches {
    pub fn new(count: usize) -> Self {
        MicroBatches {
            count: count.max(1),
            grads: None,
            terms: Vec::new(),
        }
    }

    /// Backpropagates `total / count` and adds the terms' values (scalars, `total` among them
    /// or not). A non-finite term is an error naming the step and the term.
    pub fn add(&mut self, step: u64, total: &Tensor, terms: &[(&'static str, f64)]) -> Result<()> {
        for (k, &(name, value)) in terms.iter().enumerate() {
            if !value.is_finite() {
                bail!("step {step}: loss `{name}` is {value}; stopping (last checkpoint kept)");
            }
            match self.terms.get_mut(k) {
                Some(t) => t.1 += value / self.count as f64,
                None => self.terms.push((name, value / self.count as f64)),
            }
        }
        let g = (total / self.count as f64)?.backward()?;
        match self.grads.as_mut() {
            Some(acc) => acc.extend(g)?,
            None => self.grads = Some(g),
        }
        Ok(())
    }

    /// The summed gradients (after at least one `add`).
    pub fn grads(&self) -> &GradStore {
        self.grads
            .as_ref()
            .expect("MicroBatches::add ran at least once")
    }

    /// The mean of the term called `name`.
    pub fn mean(&self, name: &str) -> f64 {
        self.terms
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |t| t.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn micro_batches_average_terms_and_sum_scaled_gradients() {
        let w = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let mut mb = MicroBatches::new(2);
        for scale in [1f32, 3.0] {
            let loss = (w.as_tensor() * scale as f64).unwrap().sum_all().unwrap();
            let v = loss.to_scalar::<f32>().unwrap() as f64;
            mb.add(1, &loss, &[("loss", v)]).unwrap();
        }
        assert_eq!(mb.mean("loss"), (3.0 + 9.0) / 2.0);
        let g: Vec<f32> = mb.grads().get(&w).unwrap().to_vec1().unwrap();
        assert_eq!(g, [2.0, 2.0]); // (1 + 3) / 2 per element
        let e = mb
            .add(
                7,
                &w.as_tensor().sum_all().unwrap(),
                &[("loss/recon", f64::NAN)],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("step 7") && e.contains("loss/recon"), "{e}");
    }
}

/// What the stages' resume tests share.
#[cfg(test)]
pub mod testing {
    use std::path::Path;

    /// A `should_stop` that says yes on its `n`-th call (after step n of a fresh run).
    pub fn stop_at(n: u32) -> impl Fn() -> bool {
        let calls = std::cell::Cell::new(0);
        move || {
            calls.set(calls.get() + 1);
            calls.get() == n
        }
    }

    /// Every line of a run's `metrics.jsonl` without its wall time.
    pub fn logged(run: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("time");
                v.to_string()
            })
            .collect()
    }

    /// Two runs logged the same values and ended with bit-identical `final` tensors.
    pub fn assert_same_runs(a: &Path, b: &Path) {
        assert_eq!(logged(a), logged(b));
        let load = |r: &Path| super::checkpoint::load(&r.join("final")).unwrap();
        let (a, b) = (load(a), load(b));
        assert_eq!(a.model.len(), b.model.len());
        for (name, t) in &a.model {
            let d = (t - &b.model[name])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{name}");
        }
    }
}
