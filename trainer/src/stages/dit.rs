//! Stage 2, the style-conditioned diffusion transformer (DESIGN.md, "Style-conditioned
//! diffusion transformer"; CoTyle, arXiv 2511.10555, Sec. 3.2): the training loop. Each step
//! draws same-style pairs (x1, x2): the frozen codebook turns x1 into style indices and
//! embeddings, the text branch conditions on them and on x2's prompt, and the MMDiT learns the
//! rectified-flow velocity of x2 (`dit_flow.rs`), with style and prompt dropped at their own
//! rates so classifier-free guidance works on each. AdamW, warm-up + cosine, clipping,
//! accumulation, checkpoints with EMA weights, resume, metrics and progress come from
//! `train/`. Held-out flow loss (fixed timesteps and noise, so it is comparable across steps)
//! runs at step 0 and every `eval_every` steps.
//!
//! Randomness (timesteps, noise, drops) is a function of (train.seed, step, micro-batch), so a
//! resumed run draws what an uninterrupted one would with no RNG state in the checkpoint.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
#[cfg(test)]
use candle_core::Device;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use data::loader::PairLoader;
use data::pairs::{Cursor, PairPlan};
use data::rng::{mix, Rng};
use data::Dataset;

use super::dit_flow::{drop_mask, noisy, sample_timesteps, seeded_noise};
use super::dit_generate::{references, style_gap as style_gap_of, write_grid, StyleGap};
use super::dit_parts::{resolve, DitParts, DIT, EMA};
use crate::config::stages::DitConfig;
use crate::config::to_yaml;
use crate::models::mmdit::unused_params;
use crate::train::ema::Ema;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::run::{self, MicroBatches, Run};

/// Held-out pairs per evaluation (at most the split's images), and the timesteps each is
/// scored at.
const EVAL_PAIRS: usize = 32;
const EVAL_TIMES: [f32; 4] = [0.2, 0.4, 0.6, 0.8];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoopState {
    cursor: Cursor,
}

/// The stage's held-out evaluation.
#[derive(Debug, Clone, Copy)]
pub struct DitEval {
    /// Flow loss at fixed timesteps and noise.
    pub loss: f64,
    /// Style similarity of generated images to their references (at the end of a run).
    pub style_gap: Option<StyleGap>,
}

/// How a run ended, with the last held-out evaluation.
pub type Outcome = run::Outcome<DitEval>;

/// Held-out references (one per style) and prompts of the final style check.
const GAP_REFERENCES: usize = 8;
const GAP_PROMPTS: usize = 2;
/// The contact sheet of the final style check, in the run folder.
pub const STYLE_GRID: &str = "style-check.png";

/// One micro-batch's loss: x1 gives the style, x2 the prompt and the target.
fn flow_loss(
    parts: &DitParts,
    cfg: &DitConfig,
    x1: &Tensor,
    x2: &Tensor,
    prompts: &[&str],
    rng: &mut Rng,
    noise_seed: u64,
) -> Result<Tensor> {
    let b = prompts.len();
    let idx = parts.style_indices(x1)?;
    let drop_style = drop_mask(rng, b, cfg.flow.style_drop);
    let drop_prompt = drop_mask(rng, b, cfg.flow.prompt_drop);
    let prompts: Vec<&str> = prompts
        .iter()
        .zip(&drop_prompt)
        .map(|(p, &d)| if d { "" } else { *p })
        .collect();
    let (text, mask) = parts.condition(&idx, &drop_style, &prompts)?;
    let t = Tensor::new(sample_timesteps(&cfg.flow, rng, b), x2.device())?;
    let seeds: Vec<u64> = (0..b as u64).map(|i| mix(noise_seed, i)).collect();
    let x0 = parts.to_model_space(x2)?;
    let (_, c, h, w) = x0.dims4()?;
    let noise = seeded_noise((b, c, h, w), &seeds, x0.device())?;
    let (xt, v) = noisy(&x0, &noise, &t)?;
    let pred = parts.velocity(&xt, &t, &text, &mask)?;
    Ok((pred - v)?.sqr()?.mean_all()?)
}

/// Mean flow loss over the first held-out same-style pairs at fixed timesteps and noise.
fn held_out(parts: &DitParts, cfg: &DitConfig, ds: &Arc<Dataset>) -> Result<f64> {
    let plan = PairPlan {
        seed: cfg.train.seed ^ 0xE7A1,
        rank: 0,
        world: 1,
        batch_size: EVAL_PAIRS.min(ds.items.len()),
        negative_fraction: 0.0,
        window_blocks: cfg.data.window_blocks,
    };
    let mut loader = PairLoader::new(ds.clone(), &cfg.data, plan, Cursor::default())?;
    let batch = loader.next_batch()?;
    let prompts: Vec<&str> = batch
        .pairs
        .iter()
        .map(|p| ds.items[p.other].prompt.as_str())
        .collect();
    let idx = parts.style_indices(&batch.anchor)?;
    let (text, mask) = parts.condition(&idx, &[], &prompts)?;
    let (text, mask) = (text.detach(), mask);
    let x0 = parts.to_model_space(&batch.other)?;
    let (b, c, h, w) = x0.dims4()?;
    let seeds: Vec<u64> = (0..b as u64).collect();
    let noise = seeded_noise((b, c, h, w), &seeds, x0.device())?;
    let mut sum = 0.0;
    for &tv in &EVAL_TIMES {
        let t = Tensor::new(vec![tv; b], batch.other.device())?;
        let (xt, v) = noisy(&x0, &noise, &t)?;
        let pred = parts.velocity(&xt, &t, &text, &mask)?.detach();
        sum += (pred - v)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sum / EVAL_TIMES.len() as f64)
}

/// Trains from scratch, or from the checkpoint `resume` names, writing into `run_dir`.
pub fn train(
    cfg: &DitConfig,
    run_dir: &Path,
    resume: Option<&str>,
    should_stop: &dyn Fn() -> bool,
) -> Result<Outcome> {
    let train_ds = Arc::new(Dataset::open(&cfg.data.root, &cfg.data.train_split)?);
    let eval_ds = Arc::new(Dataset::open(&cfg.data.root, &cfg.data.eval_split)?);
    let cfg = &resolve(cfg, &[&train_ds, &eval_ds])?;
    let config_yaml = &format!("stage: dit\n{}", to_yaml(cfg));
    let t = &cfg.train;
    let mut run = Run::open(t, config_yaml, run_dir, resume)?;
    let parts = DitParts::build(cfg, run.resumed.as_ref().map(|c| &c.model))?;
    let mut opt = AdamW::new(parts.named_vars(), AdamWConfig::from_train(t))?;
    let mut ema = match cfg.ema_decay > 0.0 {
        true => Some(Ema::new(&parts.dit_vars(), cfg.ema_decay)?),
        false => None,
    };
    let mut state = LoopState::default();
    if let Some(ck) = &run.resumed {
        opt.load_state(&ck.optim)?;
        state = serde_json::from_value(ck.state.clone()).context("checkpoint loop state")?;
        if let Some(e) = ema.as_mut() {
            let p = format!("{EMA}.");
            let saved = ck
                .model
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&p)?.to_string(), v.clone())));
            e.load(&saved.collect())
                .context("the checkpoint's EMA weights")?;
        }
    }
    let start = run.first_step(&opt);
    let plan = PairPlan {
        seed: t.seed,
        rank: 0,
        world: 1,
        batch_size: t.batch_size / t.grad_accum,
        // Same-style pairs only: style from one image, prompt and target from the other.
        negative_fraction: 0.0,
        window_blocks: cfg.data.window_blocks,
    };
    let mut loader = PairLoader::new(train_ds.clone(), &cfg.data, plan, state.cursor)?;
    let mut last_eval = None;
    if start == 1 && t.eval_every > 0 {
        let l = held_out(&parts, cfg, &eval_ds)?;
        tracing::info!("untrained: held-out flow loss {l:.4}");
        run.metrics.log(0, &[("eval/loss", l)])?;
        last_eval = Some(DitEval {
            loss: l,
            style_gap: None,
        });
    }
    let dead: Vec<String> = unused_params(&cfg.model)
        .into_iter()
        .map(|n| format!("{DIT}.{n}"))
        .collect();
    for step in start..=t.steps {
        let mut mb = MicroBatches::new(t.grad_accum);
        for micro in 0..t.grad_accum as u64 {
            let batch = loader.next_batch()?;
            let prompts: Vec<&str> = batch
                .pairs
                .iter()
                .map(|p| train_ds.items[p.other].prompt.as_str())
                .collect();
            let seed = mix(mix(t.seed, step), micro);
            let mut rng = Rng::new(seed);
            let loss = flow_loss(
                &parts,
                cfg,
                &batch.anchor,
                &batch.other,
                &prompts,
                &mut rng,
                seed,
            )?;
            let value = loss.to_scalar::<f32>()? as f64;
            mb.add(step, &loss, &[("loss", value)])?;
            state.cursor = batch.next;
        }
        // The last block's text outputs cannot reach the loss (Qwen-Image discards them).
        let (lr, rep) = run.update(step, start, &mut opt, mb.grads(), &dead)?;
        if let Some(e) = ema.as_mut() {
            e.update(&parts.dit_vars(), step - 1)?;
        }
        run.log(
            step,
            &[
                ("loss", mb.mean("loss")),
                ("lr", lr),
                ("grad_norm", rep.grad_norm),
            ],
        )?;
        if run.eval_due(step) {
            let l = run.progress.suspend(|| held_out(&parts, cfg, &eval_ds))?;
            tracing::info!("step {step}: held-out flow loss {l:.4}");
            run.metrics.log(step, &[("eval/loss", l)])?;
            last_eval = Some(DitEval {
                loss: l,
                style_gap: None,
            });
        }
        let model = || {
            let mut model = parts.trained_tensors();
            if let Some(e) = &ema {
                model.extend(
                    e.tensors()
                        .into_iter()
                        .map(|(k, v)| (format!("{EMA}.{k}"), v)),
                );
            }
            model
        };
        if run.end_step(step, should_stop(), model, &opt, &state)? {
            return Ok(run.stopped(last_eval));
        }
    }
    if t.eval_every > 0 {
        let (refs, prompts) = references(&eval_ds, &cfg.data, GAP_REFERENCES, GAP_PROMPTS)?;
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let (g, images) = run
            .progress
            .suspend(|| style_gap_of(&parts, &refs, &prompts, &cfg.sample, t.seed))?;
        let grid = run_dir.join(STYLE_GRID);
        write_grid(&grid, &refs, &images, &cfg.data)?;
        tracing::info!(
            "style check grid: {} (rows: held-out references, then one image per prompt: {prompts:?})",
            grid.display()
        );
        tracing::info!(
            "held-out style check: generated images vs their reference {:.3}, vs the other references {:.3} (gap {:.3}; {} images, {} styles)",
            g.matched, g.mismatched, g.gap(), g.images, g.references
        );
        run.metrics.log(
            t.steps,
            &[
                ("eval/style_matched", g.matched),
                ("eval/style_mismatched", g.mismatched),
            ],
        )?;
        if let Some(e) = last_eval.as_mut() {
            e.style_gap = Some(g);
        }
    }
    Ok(run.completed(last_eval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stages::CodebookConfig;
    use crate::stages::dit_config::StyleInjection;
    use crate::stages::dit_text::word_tokenizer;
    use crate::train::checkpoint;
    use crate::train::run::testing::{assert_same_runs, stop_at};
    use data::synth::generate::{generate, SynthConfig};

    /// A 32 px dataset, a codebook trained on it for a few steps, a tokenizer of its prompts
    /// and a DiT config small enough to train in seconds.
    fn setup(root: &Path) -> DitConfig {
        let synth = SynthConfig {
            styles: 6,
            test_styles: 2,
            per_style: 4,
            size: 32,
            seed: 5,
            ..SynthConfig::default()
        };
        let data = root.join("synth");
        generate(&data, &synth, &|_, _| {}).unwrap();
        let mut cb = CodebookConfig::default();
        cb.data.root = data.clone();
        cb.data.image_size = 32;
        cb.encoder.vision.image_size = 32;
        (
            cb.codebook.codes,
            cb.codebook.code_dim,
            cb.codebook.mlp_hidden,
        ) = (32, 8, 16);
        let t = &mut cb.train;
        (t.steps, t.batch_size, t.eval_every, t.warmup_steps) = (2, 4, 0, 1);
        let cb_run = root.join("codebook");
        // The checkpoint's config is the real one, as the CLI writes it: the DiT reads it.
        let yaml = format!("stage: codebook\n{}", crate::config::to_yaml(&cb));
        crate::stages::codebook::train(&cb, &yaml, &cb_run, None, &|| false).unwrap();
        let prompts: Vec<String> = Dataset::open(&data, "train")
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.prompt)
            .collect();
        let tok = root.join("tokenizer.json");
        std::fs::write(
            &tok,
            word_tokenizer(prompts.iter().map(String::as_str)).unwrap(),
        )
        .unwrap();
        let mut cfg = DitConfig::default();
        cfg.data.root = data;
        cfg.data.image_size = 32;
        cfg.codebook = cb_run.join("final");
        cfg.text.tokenizer = tok;
        cfg.text.lm.hidden_size = cb.encoder.vision.out_hidden_size;
        cfg.text.lm.num_hidden_layers = 1;
        cfg.model.sample_size = 32;
        cfg.model.patch_size = 8;
        (cfg.model.hidden_size, cfg.model.depth, cfg.model.num_heads) = (32, 2, 2);
        cfg.model.text_dim = 0;
        let t = &mut cfg.train;
        (t.steps, t.batch_size, t.grad_accum, t.warmup_steps) = (6, 4, 2, 2);
        (t.log_every, t.eval_every, t.checkpoint_every) = (1, 3, 4);
        cfg
    }

    #[test]
    fn trains_and_resumes_bit_for_bit_with_ema() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
        let done = train(&cfg, &whole, None, &|| false).unwrap();
        assert!(done.completed && done.last_eval.unwrap().loss.is_finite());
        let stop_at_3 = stop_at(3);
        assert!(!train(&cfg, &split, None, &stop_at_3).unwrap().completed);
        assert!(
            train(&cfg, &split, Some("latest"), &|| false)
                .unwrap()
                .completed
        );
        assert_same_runs(&whole, &split);
        let saved = checkpoint::load(&whole.join("final")).unwrap().model;
        assert!(
            saved.keys().any(|k| k.starts_with("ema.dit.")),
            "EMA weights are saved"
        );
        assert!(
            saved.keys().any(|k| k.starts_with("text.model.")),
            "the trainable LM is saved"
        );
    }

    #[test]
    fn sampling_with_a_fixed_seed_is_reproducible_and_the_style_check_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup(dir.path());
        cfg.model.zero_init = false; // a zero model would give the noise back whatever the seed
        let ds = Arc::new(Dataset::open(&cfg.data.root, "test").unwrap());
        let cfg = resolve(&cfg, &[&ds]).unwrap();
        let parts = DitParts::build(&cfg, None).unwrap();
        let (refs, prompts) = references(&ds, &cfg.data, 2, 1).unwrap();
        assert_eq!(refs.dims(), [2, 3, 32, 32]);
        let idx = parts.style_indices(&refs).unwrap();
        let ps = [prompts[0].as_str(), prompts[0].as_str()];
        let mut s = cfg.sample.clone();
        s.steps = 3;
        let run = |seeds: &[u64]| -> Vec<f32> {
            let x = crate::stages::dit_generate::generate(&parts, &idx, &ps, seeds, &s).unwrap();
            assert_eq!(x.dims(), [2, 3, 32, 32]);
            x.flatten_all().unwrap().to_vec1().unwrap()
        };
        let a = run(&[1, 2]);
        assert_eq!(a, run(&[1, 2]), "same seeds, same images");
        assert_ne!(a, run(&[3, 2]), "another seed, another image");
        let (g, made) = style_gap_of(&parts, &refs, &[ps[0]], &s, 0).unwrap();
        let grid = dir.path().join("grid.png");
        write_grid(&grid, &refs, &made, &cfg.data).unwrap();
        let sheet = image::open(&grid).unwrap();
        assert_eq!((sheet.width(), sheet.height()), (2 * 34 + 2, 2 * 34 + 2));
        assert_eq!((g.images, g.references), (2, 2));
        assert!(g.matched.is_finite() && g.mismatched.is_finite());
    }

    #[test]
    fn the_direct_injection_ablation_trains_and_samples() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup(dir.path());
        cfg.text.inject = StyleInjection::Direct;
        cfg.train.steps = 2;
        cfg.sample.steps = 2;
        let done = train(&cfg, &dir.path().join("direct"), None, &|| false).unwrap();
        let eval = done.last_eval.unwrap();
        assert!(eval.loss.is_finite() && eval.style_gap.is_some());
    }

    #[test]
    fn latent_space_trains_and_samples_through_the_vae() {
        use crate::models::vae::VaeConfig;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup(dir.path());
        let vae = VaeConfig {
            z_channels: 4,
            ch: 32,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            ..VaeConfig::default()
        };
        cfg.vae = Some(vae);
        // 32 px images -> 16 x 16 latents of 4 channels.
        (
            cfg.model.in_channels,
            cfg.model.sample_size,
            cfg.model.patch_size,
        ) = (4, 16, 4);
        cfg.train.steps = 2;
        cfg.sample.steps = 2;
        let done = train(&cfg, &dir.path().join("latent"), None, &|| false).unwrap();
        let eval = done.last_eval.unwrap();
        assert!(eval.loss.is_finite());
        assert!(
            eval.style_gap.is_some(),
            "generated latents decode to images"
        );

        let ds = Dataset::open(&cfg.data.root, "test").unwrap();
        let mut pixels = cfg.clone();
        pixels.model.in_channels = 3;
        let e = DitParts::build(&resolve(&pixels, &[&ds]).unwrap(), None)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("do not fit the VAE's latents"),
            "{e}"
        );
        pixels.vae = None;
        let e = DitParts::build(&resolve(&pixels, &[&ds]).unwrap(), None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("needs a `vae:` section"), "{e}");
    }

    #[test]
    fn gradients_reach_the_dit_and_the_trainable_lm_with_either_injection() {
        let dir = tempfile::tempdir().unwrap();
        let mut base = setup(dir.path());
        base.model.zero_init = false; // adaLN-Zero gates would hold the blocks' gradients at 0
                                      // The paper's injection and the ablation: the LM trains either way.
        for inject in [StyleInjection::TextBranch, StyleInjection::Direct] {
            base.text.inject = inject;
            let ds = Dataset::open(&base.data.root, "train").unwrap();
            let cfg = resolve(&base, &[&ds]).unwrap();
            let parts = DitParts::build(&cfg, None).unwrap();
            let img = |seed: u64| {
                let v: Vec<f32> = {
                    let mut r = Rng::new(seed);
                    (0..2 * 3 * 32 * 32).map(|_| r.normal()).collect()
                };
                Tensor::from_vec(v, (2, 3, 32, 32), &Device::Cpu).unwrap()
            };
            let mut rng = Rng::new(1);
            let mut no_drop = cfg.clone();
            (no_drop.flow.style_drop, no_drop.flow.prompt_drop) = (0.0, 0.0);
            let loss = flow_loss(
                &parts,
                &no_drop,
                &img(1),
                &img(2),
                &["a star", "two ovals"],
                &mut rng,
                9,
            )
            .unwrap();
            let grads = loss.backward().unwrap();
            let unused: Vec<String> = unused_params(&cfg.model)
                .into_iter()
                .map(|n| format!("dit.{n}"))
                .collect();
            for (name, var) in parts.named_vars() {
                let g = grads.get(&var).map(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                });
                if unused.contains(&name) {
                    continue;
                }
                let g = g.unwrap_or_else(|| panic!("{inject:?}: {name}: no gradient"));
                assert!(g > 0.0 && g.is_finite(), "{inject:?}: {name}: {g}");
            }
        }
    }
}
