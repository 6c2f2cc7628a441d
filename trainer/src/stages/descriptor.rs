//! The offline style descriptor (issue 7, item 2): what evaluation uses when CSD weights are
//! absent (always in CI and the demo). A small model of CSD's design (Somepalli et al. 2024,
//! "Measuring Style Similarity in Diffusion Models", arXiv 2404.01292: `eval::csd::Csd`, a
//! CLIP ViT + bias-free style head, L2-normalised) trained with CSD's style objective, the
//! supervised-contrastive loss over style labels (Khosla et al. 2020, "Supervised
//! Contrastive Learning", L^sup_out; CSD's `SupConLoss`) on synthetic styles disjoint from
//! every stage's (`descriptor_data.rs`). CSD also trains its content head, self-supervised
//! on augmentations; here the content head is left out of the loss and out of the
//! optimiser: it keeps its seeded initial values and evaluation never reads it.
//!
//! The loop is the stages' (`train/run.rs`): AdamW, warm-up + cosine, clipping,
//! accumulation, checkpoints and bit-identical resume (the loop state is the number of
//! batches drawn). Held-out retrieval (`eval::retrieval` on the style embeddings of the
//! test split, top-1 and mAP) runs at step 0, the untrained baseline, every `eval_every`
//! steps and at the end. A completed run writes `RUN/descriptor/`: `model.safetensors` with
//! CSD's tensor names (`Csd::from_safetensors` loads it) and `descriptor.json`
//! ([`DescriptorRecord`]: its `CsdConfig` and what made it), read back by [`load`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use data::synth::generate::SynthConfig;
use data::Dataset;
use eval::csd::{self, Csd, CsdConfig, CONTENT_HEAD};

use super::descriptor_data::{prepare, style_ids, HeldOut, StyleBatches};
use crate::config::stages::DescriptorConfig;
use crate::models::init::tensor_rng;
use crate::models::varmap_from;
use crate::train::checkpoint::restore;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::run::{self, MicroBatches, Run};

/// The folder of the exported descriptor, in the run folder.
pub const DESCRIPTOR_DIR: &str = "descriptor";
/// The weights, CSD's names.
pub const MODEL_FILE: &str = "model.safetensors";
/// The [`DescriptorRecord`].
pub const RECORD_FILE: &str = "descriptor.json";

/// Held-out retrieval of the style embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldOutRetrieval {
    pub top1: f64,
    pub map: f64,
    pub images: usize,
    pub styles: usize,
}

/// What made an exported descriptor; evaluation reports name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescriptorRecord {
    pub kind: String,
    /// The model's shape: `Csd::from_safetensors(&record.csd, ..)`.
    pub csd: CsdConfig,
    /// Inputs go through `eval::csd::preprocess` at `csd.image_size`.
    pub preprocess: String,
    pub data_root: PathBuf,
    /// The synthesis settings, when the command rendered the data.
    pub synth: Option<SynthConfig>,
    /// Style ids (inclusive) of the training and held-out splits, when numeric.
    pub train_styles: Option<[u64; 2]>,
    pub test_styles: Option<[u64; 2]>,
    pub seed: u64,
    pub steps: u64,
    pub batch_size: usize,
    pub images_per_style: usize,
    pub temperature: f64,
    pub untrained: Option<HeldOutRetrieval>,
    pub trained: HeldOutRetrieval,
    /// The checkpoint the weights come from.
    pub checkpoint: PathBuf,
}

/// What the loop keeps in a checkpoint besides parameters and optimiser.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoopState {
    /// Training batches drawn so far (the next one's number).
    batches: u64,
    /// The step-0 retrieval, for the record.
    untrained: Option<HeldOutRetrieval>,
}

/// How a run ended, with the last held-out retrieval.
pub type Outcome = run::Outcome<HeldOutRetrieval>;

/// Seeded CLIP initialisation (Hugging Face `CLIPPreTrainedModel._init_weights`, factor 1):
/// class embedding C^-1/2, positional and patch embeddings 0.02, q/k/v and `c_proj`
/// C^-1/2 (2L)^-1/2, `out_proj` C^-1/2, `c_fc` (2C)^-1/2, the heads C^-1/2 (CLIP's `proj`,
/// which CSD's heads copy); LayerNorm gains 1, biases 0. Every tensor from its own stream.
pub fn init_tensors(cfg: &CsdConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let c = cfg.width as f32;
    let depth = (2.0 * cfg.layers as f32).powf(-0.5);
    let mut out = HashMap::new();
    for (name, shape) in csd::param_shapes(cfg) {
        let std = if name.ends_with("bias") {
            0.0
        } else if name.contains("ln_") {
            let t = Tensor::ones(shape, DType::F32, &Device::Cpu)?;
            out.insert(name, t);
            continue;
        } else if name.ends_with("class_embedding") || name.starts_with("last_layer") {
            c.powf(-0.5)
        } else if name.ends_with("in_proj_weight") || name.ends_with("c_proj.weight") {
            c.powf(-0.5) * depth
        } else if name.ends_with("out_proj.weight") {
            c.powf(-0.5)
        } else if name.ends_with("c_fc.weight") {
            (2.0 * c).powf(-0.5)
        } else {
            0.02 // conv1, positional_embedding
        };
        let n: usize = shape.iter().product();
        let mut rng = tensor_rng(seed, &name);
        let v: Vec<f32> = (0..n).map(|_| std * rng.normal()).collect();
        out.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// The trainable descriptor: fresh from `seed`, or the `trained` tensors of a checkpoint.
pub fn build(
    cfg: &CsdConfig,
    seed: u64,
    trained: Option<&HashMap<String, Tensor>>,
) -> Result<(Csd, VarMap)> {
    let mut tensors = init_tensors(cfg, seed)?;
    if let Some(trained) = trained {
        restore(&mut tensors, trained, "style descriptor")?;
    }
    let varmap = varmap_from(tensors)?;
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Csd::new(cfg, vb).context("building the style descriptor")?;
    Ok((model, varmap))
}

/// Supervised-contrastive loss (SupCon L^sup_out) of L2-normalised embeddings `z` (N, D)
/// with style `labels` (N): with s_ij = z_i . z_j / T and A(i) = every j != i,
/// loss_i = -1/|P(i)| sum_{p in P(i)} [s_ip - log sum_{a in A(i)} exp(s_ia)] over the
/// positives P(i) (same label, j != i); the loss is the mean over anchors with a positive.
/// Without SupCon's T / T_base factor (1 at T_base = T). Computed on (z.z - 1) / T <= 0,
/// the same value with no overflow for any T. -> scalar.
pub fn supcon_loss(z: &Tensor, labels: &[u32], temperature: f64) -> Result<Tensor> {
    let (n, _) = z.dims2()?;
    anyhow::ensure!(
        labels.len() == n,
        "{} labels for {n} embeddings",
        labels.len()
    );
    let (mut others, mut pos, mut weight) = (vec![0f32; n * n], vec![0f32; n * n], vec![0f32; n]);
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            others[i * n + j] = 1.0;
            pos[i * n + j] = f32::from(labels[i] == labels[j]);
        }
        weight[i] = pos[i * n..(i + 1) * n].iter().sum();
    }
    let anchors = weight.iter().filter(|&&w| w > 0.0).count();
    anyhow::ensure!(
        anchors > 0,
        "no embedding has a positive (same label) in the batch"
    );
    for w in &mut weight {
        *w = if *w > 0.0 {
            1.0 / (*w * anchors as f32)
        } else {
            0.0
        };
    }
    let dev = z.device();
    let others = Tensor::from_vec(others, (n, n), dev)?;
    let pos = Tensor::from_vec(pos, (n, n), dev)?;
    let weight = Tensor::from_vec(weight, n, dev)?;
    let logits = ((z.matmul(&z.t()?)? - 1.0)? / temperature)?;
    let log_denom = (logits.exp()? * others)?.sum_keepdim(1)?.log()?;
    let log_prob = logits.broadcast_sub(&log_denom)?;
    let per_anchor = (log_prob * pos)?.sum(1)?;
    Ok((per_anchor * weight)?.sum_all()?.neg()?)
}

/// Held-out retrieval of `model`'s style embeddings (no graph).
pub fn evaluate(model: &Csd, held: &HeldOut, batch: usize) -> Result<HeldOutRetrieval> {
    let size = model.config().image_size;
    let mut rows = Vec::with_capacity(held.images.len() * model.config().out_dim);
    for chunk in held.images.chunks(batch.max(1)) {
        let x = csd::batch(chunk, size, model.device())?;
        let e = model.style(&x)?.detach();
        rows.extend(e.flatten_all()?.to_vec1::<f32>()?);
    }
    let r = eval::retrieval(&rows, model.config().out_dim, &held.labels)?;
    Ok(HeldOutRetrieval {
        top1: r.top1,
        map: r.map,
        images: held.labels.len(),
        styles: held.styles,
    })
}

fn id_range(ds: &Dataset) -> Option<[u64; 2]> {
    let ids = style_ids(ds)?;
    Some([*ids.iter().min()?, *ids.iter().max()?])
}

/// Trains from scratch, or from the checkpoint `resume` names (`latest`, a step folder or a
/// run folder), writing into `run_dir`; a completed run also exports `run_dir/descriptor/`.
/// `config_yaml` is the resolved config, saved with every checkpoint. `should_stop` is polled
/// once per step (the CLI passes the Ctrl-C flag).
pub fn train(
    cfg: &DescriptorConfig,
    config_yaml: &str,
    run_dir: &Path,
    resume: Option<&str>,
    should_stop: &dyn Fn() -> bool,
) -> Result<Outcome> {
    let t = &cfg.train;
    let mut run = Run::open(t, config_yaml, run_dir, resume)?;
    let (root, synthesised) = prepare(cfg, run_dir)?;
    let (model, varmap) = build(&cfg.model, t.seed, run.resumed.as_ref().map(|c| &c.model))?;
    // The content head is not in the loss (module docs): not trained.
    let named = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .filter(|(k, _)| k.as_str() != CONTENT_HEAD)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opt = AdamW::new(named, AdamWConfig::from_train(t))?;
    let mut state = LoopState::default();
    if let Some(ck) = &run.resumed {
        opt.load_state(&ck.optim)?;
        state = serde_json::from_value(ck.state.clone()).context("checkpoint loop state")?;
    }
    let start = run.first_step(&opt);
    let train_ds = Arc::new(Dataset::open(&root, &cfg.data.train_split)?);
    let eval_ds = Dataset::open(&root, &cfg.data.eval_split)?;
    let held = HeldOut::load(&eval_ds, cfg.model.image_size, cfg.eval.max_images)?;
    let (k, m) = (cfg.styles_per_batch(), cfg.loss.images_per_style);
    let batches = StyleBatches::new(train_ds.clone(), &cfg.data, t.seed, k, m)?;
    let log_eval = |run: &mut Run, step: u64, r: &HeldOutRetrieval| -> Result<()> {
        tracing::info!(
            "step {step}: held-out top-1 {:.3} mAP {:.3} ({} images of {} held-out styles)",
            r.top1,
            r.map,
            r.images,
            r.styles
        );
        run.metrics
            .log(step, &[("eval/top1", r.top1), ("eval/map", r.map)])
    };
    let mut last_eval = None;
    if start == 1 {
        let r = evaluate(&model, &held, cfg.eval.batch_size)?;
        log_eval(&mut run, 0, &r)?;
        state.untrained = Some(r);
        last_eval = Some(r);
    }
    let tensors = || {
        let vars = varmap.data().lock().expect("varmap lock");
        vars.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect::<HashMap<_, _>>()
    };
    for step in start..=t.steps {
        let mut mb = MicroBatches::new(t.grad_accum);
        for _ in 0..t.grad_accum {
            let (images, labels) = batches.batch(state.batches)?;
            let z = model.style(&images)?;
            let loss = supcon_loss(&z, &labels, cfg.loss.temperature)?;
            let value = loss.to_scalar::<f32>()? as f64;
            mb.add(step, &loss, &[("loss", value)])?;
            state.batches += 1;
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
            let r = run
                .progress
                .suspend(|| evaluate(&model, &held, cfg.eval.batch_size))?;
            log_eval(&mut run, step, &r)?;
            last_eval = Some(r);
        }
        if run.end_step(step, should_stop(), tensors, &opt, &state)? {
            return Ok(run.stopped(last_eval));
        }
    }
    // The final retrieval: the last step's when it ran, else now.
    let trained = match (t.eval_every > 0, last_eval) {
        (true, Some(r)) if start <= t.steps => r,
        _ => evaluate(&model, &held, cfg.eval.batch_size)?,
    };
    let outcome = run.completed(Some(trained));
    let record = DescriptorRecord {
        kind: "cotyle offline style descriptor: a small CSD (CLIP ViT + style head) trained \
               with a supervised-contrastive style loss on synthetic styles disjoint from the \
               stages'"
            .into(),
        csd: cfg.model.clone(),
        preprocess: "eval::csd::preprocess (CSD/CLIP: bicubic short side, centre crop, CLIP \
                     mean/std)"
            .into(),
        data_root: root.clone(),
        synth: synthesised.then(|| cfg.synth.clone()),
        train_styles: id_range(&train_ds),
        test_styles: id_range(&eval_ds),
        seed: t.seed,
        steps: t.steps,
        batch_size: t.batch_size,
        images_per_style: m,
        temperature: cfg.loss.temperature,
        untrained: state.untrained,
        trained,
        checkpoint: outcome.checkpoint.clone(),
    };
    export(&run_dir.join(DESCRIPTOR_DIR), &tensors(), &record)?;
    Ok(outcome)
}

/// Writes `dir/model.safetensors` (CSD's names) and `dir/descriptor.json`.
pub fn export(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    record: &DescriptorRecord,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let model = dir.join(MODEL_FILE);
    candle_core::safetensors::save(tensors, &model)
        .with_context(|| format!("writing {}", model.display()))?;
    let rec = dir.join(RECORD_FILE);
    std::fs::write(&rec, serde_json::to_string_pretty(record)? + "\n")
        .with_context(|| format!("writing {}", rec.display()))?;
    tracing::info!("descriptor: {}", dir.display());
    Ok(())
}

/// An exported descriptor (`RUN/descriptor`, or the run folder holding it), frozen, with the
/// record of what made it.
pub fn load(path: &Path, device: &Device) -> Result<(Csd, DescriptorRecord)> {
    let dir = if path.join(DESCRIPTOR_DIR).join(RECORD_FILE).exists() {
        path.join(DESCRIPTOR_DIR)
    } else {
        path.to_path_buf()
    };
    let rec = dir.join(RECORD_FILE);
    let text =
        std::fs::read_to_string(&rec).with_context(|| format!("reading {}", rec.display()))?;
    let record: DescriptorRecord =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", rec.display()))?;
    let model = Csd::from_safetensors(&record.csd, &dir.join(MODEL_FILE), DType::F32, device)?;
    Ok((model, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stages::SynthStageConfig;
    use crate::config::{load_stage, Validate};
    use crate::models::testing::{assert_every_var_gets_a_gradient, max_abs_diff};
    use crate::stages::descriptor_config::DESCRIPTOR_FIRST_STYLE;
    use crate::train::checkpoint;
    use crate::train::run::testing::{assert_same_runs, stop_at};

    /// 8 + 4 disjoint styles x 4 images at 32 px, the tiny CSD, 8 steps of 2 micro-batches
    /// of 2 styles x 2 images.
    fn setup() -> DescriptorConfig {
        let mut cfg = DescriptorConfig::default();
        cfg.data.image_size = 32;
        cfg.model = CsdConfig::tiny();
        let s = &mut cfg.synth;
        (s.styles, s.test_styles, s.per_style, s.size, s.seed) = (8, 4, 4, 32, 3);
        cfg.loss.images_per_style = 2;
        let t = &mut cfg.train;
        (t.steps, t.batch_size, t.grad_accum, t.warmup_steps, t.lr) = (8, 8, 2, 2, 1e-3);
        (t.log_every, t.eval_every, t.checkpoint_every) = (1, 4, 3);
        let mut problems = Vec::new();
        cfg.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        cfg
    }

    fn images(n: usize, size: usize, seed: u64) -> Tensor {
        let mut rng = data::rng::Rng::new(seed);
        let v: Vec<f32> = (0..n * 3 * size * size).map(|_| rng.normal()).collect();
        Tensor::from_vec(v, (n, 3, size, size), &Device::Cpu).unwrap()
    }

    #[test]
    fn every_descriptor_parameter_but_the_content_head_gets_a_gradient() {
        let cfg = CsdConfig::tiny();
        let (model, varmap) = build(&cfg, 5, None).unwrap();
        let z = model.style(&images(6, cfg.image_size, 1)).unwrap();
        let loss = supcon_loss(&z, &[0, 0, 1, 1, 2, 2], 0.1).unwrap();
        let grads = loss.backward().unwrap();
        assert_every_var_gets_a_gradient(&varmap, &grads, &[CONTENT_HEAD.to_string()]);
    }

    /// 2 styles x 2 images of known unit embeddings: z0 = (1, 0), z1 = (0.6, 0.8) (style 0),
    /// z2 = (0, 1), z3 = (-0.8, 0.6) (style 1). Cosines: z0.z1 = 0.6, z0.z2 = 0, z0.z3 = -0.8,
    /// z1.z2 = 0.8, z1.z3 = 0, z2.z3 = 0.6. T = 0.5 doubles them. Each anchor's one positive
    /// has cosine 0.6: loss_i = -(1.2 - ln sum over the other three of e^(2 cos)).
    #[test]
    fn the_supcon_loss_of_a_hand_made_batch_is_the_hand_computed_value() {
        let z = Tensor::new(
            &[[1f32, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.8, 0.6]],
            &Device::Cpu,
        )
        .unwrap();
        let got = supcon_loss(&z, &[7, 7, 3, 3], 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let e = f64::exp;
        let l0 = -(1.2 - (e(1.2) + e(0.0) + e(-1.6)).ln());
        let l1 = -(1.2 - (e(1.2) + e(1.6) + e(0.0)).ln());
        let l2 = -(1.2 - (e(0.0) + e(1.6) + e(1.2)).ln());
        let l3 = -(1.2 - (e(-1.6) + e(0.0) + e(1.2)).ln());
        let want = (l0 + l1 + l2 + l3) / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // An image whose style has no other member is a negative only, never an anchor:
        // with z4 = (0, -1) of style 9, anchor 0's sum gains e^0 and anchor 2's e^-2.
        let z5 = Tensor::cat(
            &[&z, &Tensor::new(&[[0f32, -1.0]], &Device::Cpu).unwrap()],
            0,
        )
        .unwrap();
        let got = supcon_loss(&z5, &[7, 7, 3, 3, 9], 0.5)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let l0 = -(1.2 - (e(1.2) + e(0.0) + e(-1.6) + e(0.0)).ln());
        let l1 = -(1.2 - (e(1.2) + e(1.6) + e(0.0) + e(-1.6)).ln());
        let l2 = -(1.2 - (e(0.0) + e(1.6) + e(1.2) + e(-2.0)).ln());
        let l3 = -(1.2 - (e(-1.6) + e(0.0) + e(1.2) + e(-1.2)).ln());
        let want = (l0 + l1 + l2 + l3) / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!(supcon_loss(&z, &[0, 1, 2, 3], 0.5).is_err(), "no positives");
    }

    #[test]
    fn a_stopped_and_resumed_run_matches_an_uninterrupted_one_and_the_export_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup();
        let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
        let done = train(&cfg, "cfg", &whole, None, &|| false).unwrap();
        assert!(done.completed);

        let stop_at_5 = stop_at(5);
        let first = train(&cfg, "cfg", &split, None, &stop_at_5).unwrap();
        assert!(!first.completed && first.checkpoint.ends_with("step-5"));
        assert!(
            !split.join(DESCRIPTOR_DIR).exists(),
            "exported only when complete"
        );
        let second = train(&cfg, "cfg", &split, Some("latest"), &|| false).unwrap();
        assert!(second.completed);
        assert_same_runs(&whole, &split);

        // The export: CSD's names, loads with Csd::from_safetensors, same embeddings as the
        // final checkpoint's weights; its record names what made it.
        let (loaded, rec) = load(&whole, &Device::Cpu).unwrap();
        let ck = checkpoint::load(&whole.join("final")).unwrap();
        let (trained, _) = build(&cfg.model, cfg.train.seed, Some(&ck.model)).unwrap();
        let x = images(5, cfg.model.image_size, 9);
        let (a, b) = (loaded.style(&x).unwrap(), trained.style(&x).unwrap());
        assert_eq!(max_abs_diff(&a, &b), 0.0);
        let direct = Csd::from_safetensors(
            &cfg.model,
            &whole.join(DESCRIPTOR_DIR).join(MODEL_FILE),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(max_abs_diff(&direct.style(&x).unwrap(), &b), 0.0);
        assert_eq!((rec.csd, rec.steps, rec.seed), (cfg.model.clone(), 8, 0));
        assert_eq!(rec.synth.as_ref(), Some(&cfg.synth));
        let first = DESCRIPTOR_FIRST_STYLE;
        assert_eq!(rec.train_styles, Some([first, first + 7]));
        assert_eq!(rec.test_styles, Some([first + 8, first + 11]));
        let u = rec.untrained.unwrap();
        assert_eq!((u.images, u.styles), (16, 4));
        assert_eq!(Some(rec.trained), done.last_eval);
        assert!(rec.trained.top1.is_finite() && rec.trained.map > 0.0);
        // Resumed at the end: nothing to train, the export is written again, the same.
        let again = train(&cfg, "cfg", &whole, Some("latest"), &|| false).unwrap();
        assert!(again.completed);
        assert_eq!(load(&whole, &Device::Cpu).unwrap().1.trained, rec.trained);
    }

    /// The ids of every shipped synthetic dataset (the stages' configs and the CLI's
    /// defaults) against the descriptor's, as rendered.
    #[test]
    fn the_descriptor_styles_are_disjoint_from_the_stages_style_ids() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut stage_ranges = vec![SynthConfig::default()];
        for f in ["synth.yaml", "tiny/synth.yaml"] {
            let c: SynthStageConfig = load_stage(&root.join(f), "synth", &[]).unwrap();
            stage_ranges.push(c.synth);
        }
        let in_stages = |id: u64| {
            stage_ranges.iter().any(|s| {
                (s.first_style..s.first_style + (s.styles + s.test_styles) as u64).contains(&id)
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup();
        let (root_dir, synthesised) = prepare(&cfg, dir.path()).unwrap();
        assert!(synthesised);
        for split in ["train", "test"] {
            let ds = Dataset::open(&root_dir, split).unwrap();
            let ids = style_ids(&ds).unwrap();
            assert!(!ids.is_empty());
            assert!(
                ids.iter()
                    .all(|&id| id >= DESCRIPTOR_FIRST_STYLE && !in_stages(id)),
                "{split}: {ids:?}"
            );
        }
        // The shipped descriptor configs too.
        for f in ["descriptor.yaml", "tiny/descriptor.yaml"] {
            let c: DescriptorConfig = load_stage(&root.join(f), "descriptor", &[]).unwrap();
            let s = &c.synth;
            let ids = s.first_style..s.first_style + (s.styles + s.test_styles) as u64;
            assert!(ids.clone().all(|id| !in_stages(id)), "{f}: {ids:?}");
        }
        // A first style in the stages' range is a config error; a given data.root holding
        // the stages' styles is refused by name.
        cfg.synth.first_style = 0;
        let mut problems = Vec::new();
        cfg.validate(&mut problems);
        assert!(
            problems.iter().any(|(k, _)| k == "synth.first_style"),
            "{problems:?}"
        );
        let stages_set = dir.path().join("stages");
        let synth = SynthConfig {
            styles: 3,
            test_styles: 2,
            per_style: 2,
            size: 16,
            ..SynthConfig::default()
        };
        data::synth::generate::generate(&stages_set, &synth, &|_, _| {}).unwrap();
        let mut cfg = setup();
        cfg.data.root = stages_set;
        let e = prepare(&cfg, dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("has style 0"), "{e:#}");
    }
}
