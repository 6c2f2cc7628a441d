//! Stage 1, the style codebook (DESIGN.md, "Style codebook"; CoTyle, arXiv 2511.10555): the
//! training loop. Each step draws labelled style pairs (x1, x2, y), extracts the frozen
//! encoder's features of both, quantises x1's through the codebook and minimises
//! L_contrast + a L_recon + b L_vq (`codebook_loss.rs`), with AdamW, warm-up + cosine LR,
//! global-norm clipping and gradient accumulation. Codebook usage is tracked and dead codes
//! are re-seeded from recent features. Metrics go to `metrics.jsonl` and TensorBoard,
//! checkpoints to `out_dir/run/step-N` (resumable bit for bit: data cursor, optimiser and
//! usage state are saved), held-out retrieval runs every `eval_every` steps and at step 0
//! (the untrained baseline). Ctrl-C or SIGTERM saves a checkpoint and stops.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use data::loader::PairLoader;
use data::pairs::{Cursor, PairPlan};
use data::Dataset;

use super::codebook_eval::{evaluate, EvalReport};
use super::codebook_loss::losses;
use super::codebook_parts::CodebookParts;
use crate::config::stages::CodebookConfig;
use crate::models::codebook::CodeUsage;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::run::{self, MicroBatches, Run};

/// What the loop keeps in a checkpoint besides parameters and optimiser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoopState {
    /// The next training batch.
    cursor: Cursor,
    usage: CodeUsage,
}

/// How a run ended, with the last held-out retrieval report.
pub type Outcome = run::Outcome<EvalReport>;

/// Trains from scratch, or from the checkpoint `resume` names (`latest`, a step folder or a
/// run folder), writing into `run_dir`. `config_yaml` is the resolved config, saved with
/// every checkpoint. `should_stop` is polled once per step (the CLI passes the Ctrl-C flag).
pub fn train(
    cfg: &CodebookConfig,
    config_yaml: &str,
    run_dir: &Path,
    resume: Option<&str>,
    should_stop: &dyn Fn() -> bool,
) -> Result<Outcome> {
    let t = &cfg.train;
    let mut run = Run::open(t, config_yaml, run_dir, resume)?;
    let parts = CodebookParts::build(cfg, run.resumed.as_ref().map(|c| &c.model))?;
    let mut opt = AdamW::new(parts.named_vars(), AdamWConfig::from_train(t))?;
    let mut state = LoopState {
        usage: CodeUsage::new(&cfg.codebook),
        ..LoopState::default()
    };
    if let Some(ck) = &run.resumed {
        opt.load_state(&ck.optim)?;
        state = serde_json::from_value(ck.state.clone()).context("checkpoint loop state")?;
    }
    let start = run.first_step(&opt);
    let train_ds = Arc::new(Dataset::open(&cfg.data.root, &cfg.data.train_split)?);
    let eval_ds = Arc::new(Dataset::open(&cfg.data.root, &cfg.data.eval_split)?);
    let plan = PairPlan {
        seed: t.seed,
        rank: 0,
        world: 1,
        batch_size: t.batch_size / t.grad_accum,
        negative_fraction: cfg.data.negative_fraction,
        window_blocks: cfg.data.window_blocks,
    };
    let mut loader = PairLoader::new(train_ds, &cfg.data, plan, state.cursor)?;
    let mut last_eval = None;
    if start == 1 && t.eval_every > 0 {
        let r = evaluate(&parts, eval_ds.clone(), &cfg.data, &cfg.eval)?;
        tracing::info!(
            "untrained: top-1 {:.3} (encoder features {:.3}), mAP {:.3}, {} images of {} held-out styles",
            r.top1, r.feature_top1, r.map, r.images, r.styles
        );
        run.metrics.log(0, &r.metrics())?;
        last_eval = Some(r);
    }
    for step in start..=t.steps {
        let mut mb = MicroBatches::new(t.grad_accum);
        let mut recent_z = None;
        for _ in 0..t.grad_accum {
            let batch = loader.next_batch()?;
            let v1 = parts.features(&batch.anchor)?;
            let v2 = parts.features(&batch.other)?;
            let out = parts.codebook.forward(&v1)?;
            let l = losses(&cfg.loss, &out, &v1, &v2, &batch.label)?;
            mb.add(step, &l.total, &l.values()?)?;
            state.usage.record(&out.indices)?;
            recent_z = Some(out.z.detach());
            state.cursor = batch.next;
        }
        let (lr, rep) = run.update(step, start, &mut opt, mb.grads(), &[])?;
        state.usage.end_step();
        let reseeded = match &recent_z {
            Some(z) => state.usage.maybe_reinit(
                &cfg.codebook.dead_code,
                &parts.codebook_var()?,
                z,
                t.seed,
                step,
            )?,
            None => 0,
        };
        run.log(
            step,
            &[
                ("loss", mb.mean("total")),
                ("loss/contrast", mb.mean("contrast")),
                ("loss/recon", mb.mean("recon")),
                ("loss/vq", mb.mean("vq")),
                ("lr", lr),
                ("grad_norm", rep.grad_norm),
                ("codes/used", state.usage.fraction_used()),
                ("codes/perplexity", state.usage.perplexity()),
                ("codes/reseeded", reseeded as f64),
            ],
        )?;
        if run.eval_due(step) {
            let r = run
                .progress
                .suspend(|| evaluate(&parts, eval_ds.clone(), &cfg.data, &cfg.eval))?;
            tracing::info!(
                "step {step}: held-out top-1 {:.3} mAP {:.3} (features {:.3}), codes used {:.1}%, perplexity {:.1}",
                r.top1, r.map, r.feature_top1, 100.0 * r.usage, r.perplexity
            );
            run.metrics.log(step, &r.metrics())?;
            last_eval = Some(r);
        }
        if run.end_step(
            step,
            should_stop(),
            || parts.trained_tensors(),
            &opt,
            &state,
        )? {
            return Ok(run.stopped(last_eval));
        }
    }
    Ok(run.completed(last_eval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stages::CodebookConfig;
    use crate::train::run::testing::{assert_same_runs, stop_at};
    use data::synth::generate::{generate, SynthConfig};

    /// A dataset of 8 + 4 styles, 32 px, and a config small enough to train in a second.
    fn setup(root: &Path) -> CodebookConfig {
        let synth = SynthConfig {
            styles: 8,
            test_styles: 4,
            per_style: 4,
            size: 32,
            seed: 3,
            ..SynthConfig::default()
        };
        generate(&root.join("synth"), &synth, &|_, _| {}).unwrap();
        let mut cfg = CodebookConfig::default();
        cfg.data.root = root.join("synth");
        cfg.data.image_size = 32;
        cfg.encoder.vision.image_size = 32;
        cfg.codebook.codes = 64;
        cfg.codebook.code_dim = 16;
        cfg.codebook.mlp_hidden = 32;
        cfg.codebook.heads = 4;
        cfg.codebook.dead_code.window_steps = 2;
        cfg.codebook.dead_code.reinit_every = 2;
        let t = &mut cfg.train;
        (t.steps, t.batch_size, t.grad_accum, t.warmup_steps) = (8, 8, 2, 2);
        (t.log_every, t.eval_every, t.checkpoint_every) = (1, 4, 3);
        cfg
    }

    #[test]
    fn a_stopped_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
        let done = train(&cfg, "cfg", &whole, None, &|| false).unwrap();
        assert!(done.completed);
        let r = done.last_eval.unwrap();
        assert!(r.top1.is_finite() && r.usage > 0.0, "{r:?}");

        // Stop after the 5th step (a checkpoint is written on stop), then resume.
        let stop_at_5 = stop_at(5);
        let first = train(&cfg, "cfg", &split, None, &stop_at_5).unwrap();
        assert!(!first.completed);
        assert!(
            first.checkpoint.ends_with("step-5"),
            "{:?}",
            first.checkpoint
        );
        let second = train(&cfg, "cfg", &split, Some("latest"), &|| false).unwrap();
        assert!(second.completed);
        assert_same_runs(&whole, &split);
    }

    #[test]
    fn a_non_finite_loss_stops_with_the_step_and_the_term_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup(dir.path());
        cfg.train.lr = 1e30; // the first update overflows the parameters
        cfg.train.grad_clip = 0.0;
        cfg.train.eval_every = 0;
        let err = train(&cfg, "cfg", &dir.path().join("run"), None, &|| false)
            .expect_err("a diverging run is an error");
        let msg = format!("{err:#}");
        assert!(msg.contains("step 2") && msg.contains("loss `"), "{msg}");
    }
}
