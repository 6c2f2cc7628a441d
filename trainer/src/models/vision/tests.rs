//! Tests of the vision encoder: against HF `transformers` itself (a fixture written by
//! `scripts/make_vision_golden.py`), gradients to every trainable variable, no graph when
//! frozen, window attention that really restricts, named shape errors, and the layout.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::layout::{window_order, Layout};
use super::{init_tensors, param_shapes, VisionConfig, VisionEncoder, PREFIX};
use crate::models::testing::{assert_every_var_gets_a_gradient, max_abs_diff};
use crate::models::varmap_from;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/qwen2_5_vl_vision_tiny.safetensors"
);

/// The config of the fixture (`CONFIG` in scripts/make_vision_golden.py).
fn fixture_config() -> VisionConfig {
    VisionConfig {
        depth: 2,
        hidden_size: 32,
        num_heads: 2,
        intermediate_size: 64,
        patch_size: 4,
        temporal_patch_size: 2,
        spatial_merge_size: 2,
        window_size: 16,
        fullatt_block_indexes: vec![1],
        out_hidden_size: 32,
        image_size: 32,
        ..VisionConfig::default()
    }
}

fn images(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let mut rng = data::rng::Rng::new(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn frozen(cfg: &VisionConfig, seed: u64) -> VisionEncoder {
    let vb = VarBuilder::from_tensors(init_tensors(cfg, seed).unwrap(), DType::F32, &Device::Cpu);
    VisionEncoder::new(cfg, vb.pp(PREFIX)).unwrap()
}

#[test]
fn matches_hugging_face_qwen2_5_vl_vision_tower() {
    let tensors = candle_core::safetensors::load(FIXTURE, &Device::Cpu).unwrap();
    let get = |k: &str| {
        tensors
            .get(k)
            .unwrap_or_else(|| panic!("fixture lacks {k}"))
            .clone()
    };
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let enc = VisionEncoder::new(&fixture_config(), vb.pp(PREFIX)).unwrap();
    // a: two 32x32 images (4 full windows); b: one 40x24 image, merged grid 5x3, whose
    // bottom and right windows are partial. HF ran all three as one packed sequence.
    for case in ["a", "b"] {
        let want = get(&format!("output.{case}"));
        let got = enc.forward(&get(&format!("input.{case}"))).unwrap();
        assert_eq!(got.dims(), want.dims(), "case {case}");
        let diff = max_abs_diff(&got, &want);
        eprintln!(
            "golden case {case}: {:?}, max |rust - hf| = {diff:.3e}",
            got.dims()
        );
        assert!(diff < 1e-4, "case {case}: max abs diff {diff} against HF");
    }
}

#[test]
fn every_trainable_variable_gets_a_finite_nonzero_gradient() {
    let cfg = VisionConfig::default();
    let varmap = varmap_from(init_tensors(&cfg, 7).unwrap()).unwrap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let enc = VisionEncoder::new(&cfg, vb.pp(PREFIX)).unwrap();
    let out = enc.forward(&images((2, 3, 64, 64), 1)).unwrap();
    assert_eq!(out.dims(), [2, 16, 64]);
    // A random projection of the output: no symmetry can cancel a gradient.
    let loss = (out * images((2, 1, 16, 64), 2).squeeze(1).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let vars = varmap.all_vars();
    assert_eq!(vars.len(), param_shapes(&cfg).len());
    assert_every_var_gets_a_gradient(&varmap, &grads, &[]);
}

#[test]
fn frozen_build_records_no_graph() {
    let cfg = VisionConfig::default();
    let out = frozen(&cfg, 3).forward(&images((1, 3, 64, 64), 4)).unwrap();
    assert!(
        !out.track_op(),
        "a frozen encoder's output must not carry a graph"
    );
    // The trainable build of the same weights does.
    let varmap = varmap_from(init_tensors(&cfg, 3).unwrap()).unwrap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let trained = VisionEncoder::new(&cfg, vb.pp(PREFIX)).unwrap();
    let out2 = trained.forward(&images((1, 3, 64, 64), 4)).unwrap();
    assert!(out2.track_op());
    assert_eq!(max_abs_diff(&out, &out2), 0.0);
}

/// Tokens of a 64 px image whose output changed when pixel (12, 5) changed, on a 4x4 grid.
fn changed_tokens(cfg: &VisionConfig) -> Vec<usize> {
    let enc = frozen(cfg, 5);
    let x = images((1, 3, 64, 64), 6);
    let mut bumped: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    bumped[12 * 64 + 5] += 1.0; // channel 0, row 12, column 5: window (0, 0)
    let bumped = Tensor::from_vec(bumped, (1, 3, 64, 64), &Device::Cpu).unwrap();
    let a = enc.forward(&x).unwrap().squeeze(0).unwrap();
    let b = enc.forward(&bumped).unwrap().squeeze(0).unwrap();
    (0..16)
        .filter(|&t| max_abs_diff(&a.get(t).unwrap(), &b.get(t).unwrap()) > 0.0)
        .collect()
}

#[test]
fn window_attention_restricts_to_the_window() {
    // 64 px, patch 8, merge 2: a 4x4 token grid; 32 px windows: 2x2 tokens each.
    let windowed = VisionConfig {
        fullatt_block_indexes: vec![],
        ..VisionConfig::default()
    };
    // Window (0, 0) holds tokens 0, 1 (row 0) and 4, 5 (row 1); the others are bit-identical.
    assert_eq!(changed_tokens(&windowed), vec![0, 1, 4, 5]);
    // With a full-attention block the change reaches every token: the test can see leaks.
    assert_eq!(
        changed_tokens(&VisionConfig::default()),
        (0..16).collect::<Vec<_>>()
    );
}

#[test]
fn shape_errors_are_named() {
    let enc = frozen(&VisionConfig::default(), 0);
    let err = |x: Tensor| enc.forward(&x).unwrap_err().to_string();
    let e = err(Tensor::zeros((3, 64, 64), DType::F32, &Device::Cpu).unwrap());
    assert!(
        e.contains("(B, 3, H, W)") && e.contains("[3, 64, 64]"),
        "{e}"
    );
    let e = err(Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap());
    assert!(
        e.contains("3 channels") && e.contains("[1, 1, 64, 64]"),
        "{e}"
    );
    let e = err(Tensor::zeros((1, 3, 64, 40), DType::F32, &Device::Cpu).unwrap());
    assert!(e.contains("width 40") && e.contains("= 16"), "{e}");

    // A checkpoint of another shape names the tensor.
    let cfg = VisionConfig::default();
    let mut tensors = init_tensors(&cfg, 0).unwrap();
    tensors.insert(
        "visual.blocks.1.attn.qkv.weight".into(),
        Tensor::zeros((96, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let e = VisionEncoder::new(&cfg, vb.pp(PREFIX))
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks.1.attn.qkv.weight"), "{e}");
    let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
    let e = VisionEncoder::new(&cfg, vb.pp(PREFIX))
        .unwrap_err()
        .to_string();
    assert!(e.contains("visual.patch_embed.proj.weight"), "{e}");

    // A bad config lists every problem with its key.
    let bad = VisionConfig {
        num_heads: 3,
        window_size: 20,
        fullatt_block_indexes: vec![2],
        ..cfg
    };
    let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
    let e = VisionEncoder::new(&bad, vb).unwrap_err().to_string();
    for key in ["num_heads", "window_size", "fullatt_block_indexes"] {
        assert!(e.contains(key), "{key} not in: {e}");
    }
}

#[test]
fn presets_are_valid_and_the_paper_tower_gives_196_tokens() {
    assert!(VisionConfig::default().problems("encoder").is_empty());
    let full = VisionConfig::qwen2_5_vl_7b();
    assert!(full.problems("encoder").is_empty());
    assert_eq!(full.tokens(392, 392), 196);
    assert_eq!(param_shapes(&full).len(), 1 + 32 * 12 + 5);
    let bad = VisionConfig {
        image_size: 100,
        num_heads: 20, // head width 64: fine; 1280 / 20 = 64
        ..full.clone()
    };
    let p = bad.problems("encoder");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "encoder.image_size");
}

#[test]
fn window_order_matches_hf_with_partial_windows() {
    // 5x3 units, windows of 2x2 (HF get_vision_window_index, worked by hand).
    let (order, window) = window_order(5, 3, 2);
    assert_eq!(order, [0, 1, 3, 4, 2, 5, 6, 7, 9, 10, 8, 11, 12, 13, 14]);
    assert_eq!(window, [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 5]);
    // The paper's tower at 392 px: 14x14 units in windows of 4x4 -> 16 windows, 784 patches.
    let full = VisionConfig::qwen2_5_vl_7b();
    let l = Layout::new(&full, 392, 392, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(l.cos.dims(), [784, 40]);
    assert_eq!(l.window_mask.as_ref().unwrap().dims(), [784, 784]);
    let (_, window) = window_order(14, 14, full.window_units());
    assert_eq!(window.iter().max(), Some(&15));
}

#[test]
fn layouts_are_built_once_per_size() {
    let enc = frozen(&VisionConfig::default(), 0);
    assert_eq!(enc.config().tokens(32, 48), 6);
    for shape in [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 32, 48)] {
        enc.forward(&images(shape, 0)).unwrap();
    }
    assert_eq!(enc.layouts.lock().unwrap().len(), 2);
}

#[test]
fn init_is_a_function_of_seed_and_name() {
    let cfg = VisionConfig::default();
    let a = init_tensors(&cfg, 1).unwrap();
    let b = init_tensors(&cfg, 1).unwrap();
    let c = init_tensors(&cfg, 2).unwrap();
    let w = "visual.blocks.0.attn.qkv.weight";
    assert_eq!(max_abs_diff(&a[w], &b[w]), 0.0);
    assert!(max_abs_diff(&a[w], &c[w]) > 0.0);
    let v: Vec<f32> = a[w].flatten_all().unwrap().to_vec1().unwrap();
    let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    assert!((0.014..0.02).contains(&std), "std {std}");
    assert!(v.iter().all(|x| x.abs() <= 0.04));
}
