//! Tests of the Qwen2 decoder: against HF `transformers` itself (a fixture written by
//! `scripts/make_qwen2_golden.py`), gradients to every trainable variable (tied and untied),
//! KV-cache decoding against full recomputation, causality, and named errors.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::{init_tensors, next_token_loss, param_shapes, Qwen2, Qwen2Config};
use crate::models::testing::{assert_every_var_gets_a_gradient, max_abs_diff};
use crate::models::varmap_from;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/qwen2_tiny.safetensors"
);

/// The config of the fixture (`CONFIG` in scripts/make_qwen2_golden.py).
fn fixture_config() -> Qwen2Config {
    Qwen2Config {
        vocab_size: 48,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 24,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: false,
        initializer_range: 0.02,
    }
}

/// The tiny preset over 40 codes and 12 tokens.
fn tiny(tied: bool) -> Qwen2Config {
    Qwen2Config {
        vocab_size: 40,
        max_position_embeddings: 12,
        tie_word_embeddings: tied,
        ..Qwen2Config::tiny()
    }
}

fn frozen(cfg: &Qwen2Config, seed: u64) -> Qwen2 {
    let vb = VarBuilder::from_tensors(init_tensors(cfg, seed).unwrap(), DType::F32, &Device::Cpu);
    Qwen2::new(cfg, vb).unwrap()
}

fn tokens(rows: &[&[u32]]) -> Tensor {
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

#[test]
fn matches_hugging_face_qwen2_for_causal_lm() {
    let tensors = candle_core::safetensors::load(FIXTURE, &Device::Cpu).unwrap();
    let ids = tensors["golden.tokens"].to_dtype(DType::U32).unwrap();
    let want = tensors["golden.logits"].clone();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = Qwen2::new(&fixture_config(), vb).unwrap();
    let got = model.forward(&ids).unwrap();
    assert_eq!(got.dims(), want.dims());
    let diff = max_abs_diff(&got, &want);
    eprintln!("golden: {:?}, max |rust - hf| = {diff:.3e}", got.dims());
    assert!(diff < 1e-4, "max abs diff {diff} against HF");
    // The decoding path too, one token at a time.
    let mut cache = model.new_cache();
    let t = ids.dim(1).unwrap();
    for i in 0..t {
        let step = model
            .forward_cached(&ids.narrow(1, i, 1).unwrap(), &mut cache)
            .unwrap();
        let d = max_abs_diff(&step, &want.narrow(1, i, 1).unwrap());
        assert!(
            d < 1e-4,
            "position {i}: cached decoding differs from HF by {d}"
        );
    }
}

#[test]
fn every_trainable_variable_gets_a_finite_nonzero_gradient() {
    for tied in [false, true] {
        let cfg = tiny(tied);
        let varmap = varmap_from(init_tensors(&cfg, 7).unwrap()).unwrap();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Qwen2::new(&cfg, vb).unwrap();
        let seq = tokens(&[&[1, 5, 9, 2, 33, 7], &[39, 0, 4, 4, 12, 30]]);
        let logits = model.forward(&seq.narrow(1, 0, 5).unwrap()).unwrap();
        assert_eq!(logits.dims(), [2, 5, 40]);
        let loss = next_token_loss(&logits, &seq.narrow(1, 1, 5).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(varmap.all_vars().len(), param_shapes(&cfg).len());
        assert_every_var_gets_a_gradient(&varmap, &grads, &[]);
        assert_eq!(
            varmap.data().lock().unwrap().contains_key(super::LM_HEAD),
            !tied,
            "lm_head exists exactly when untied"
        );
    }
}

#[test]
fn the_loss_is_the_mean_negative_log_likelihood() {
    // Two rows of three logits: hand-computed cross-entropy.
    let logits = Tensor::new(&[[[0f32, 0.0, 0.0], [2.0, 0.0, -1.0]]], &Device::Cpu).unwrap();
    let targets = tokens(&[&[1, 0]]);
    let l: f32 = next_token_loss(&logits, &targets)
        .unwrap()
        .to_scalar()
        .unwrap();
    let row2 = -(2f32 - (2f32.exp() + 1.0 + (-1f32).exp()).ln());
    let want = (3f32.ln() + row2) / 2.0;
    assert!((l - want).abs() < 1e-6, "{l} vs {want}");
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    for tied in [false, true] {
        let cfg = tiny(tied);
        let model = frozen(&cfg, 11);
        let seq = tokens(&[
            &[3, 17, 17, 0, 39, 8, 21, 5, 5, 30, 1, 2],
            &[9, 9, 9, 14, 2, 36, 7, 11, 0, 0, 25, 4],
        ]);
        let full = model.forward(&seq).unwrap(); // (2, 12, 40)
                                                 // A prefill of 5 tokens, then one token at a time.
        let mut cache = model.new_cache();
        let mut parts = vec![model
            .forward_cached(&seq.narrow(1, 0, 5).unwrap(), &mut cache)
            .unwrap()];
        assert_eq!(cache.position(), 5);
        for i in 5..12 {
            let x = seq.narrow(1, i, 1).unwrap();
            parts.push(model.forward_cached(&x, &mut cache).unwrap());
        }
        assert_eq!(cache.position(), 12);
        let cached = Tensor::cat(&parts, 1).unwrap();
        let d = max_abs_diff(&full, &cached);
        assert!(d < 1e-5, "tied={tied}: cached vs full differ by {d}");
        // Past the context is an error naming it.
        let e = model
            .forward_cached(&seq.narrow(1, 0, 1).unwrap(), &mut cache)
            .unwrap_err()
            .to_string();
        assert!(e.contains("context of 12"), "{e}");
    }
}

#[test]
fn a_token_changes_only_the_logits_after_it() {
    let model = frozen(&tiny(false), 2);
    let a = tokens(&[&[1, 2, 3, 4, 5, 6, 7, 8]]);
    let b = tokens(&[&[1, 2, 3, 4, 30, 6, 7, 8]]);
    let (la, lb) = (model.forward(&a).unwrap(), model.forward(&b).unwrap());
    for t in 0..8 {
        let d = max_abs_diff(&la.narrow(1, t, 1).unwrap(), &lb.narrow(1, t, 1).unwrap());
        if t < 4 {
            assert_eq!(d, 0.0, "position {t} sees the future");
        } else {
            assert!(d > 0.0, "position {t} does not see token 4");
        }
    }
}

#[test]
fn configs_and_checkpoints_errors_are_named() {
    let mut cfg = tiny(false);
    cfg.vocab_size = 0;
    let vb = VarBuilder::from_tensors(Default::default(), DType::F32, &Device::Cpu);
    let e = Qwen2::new(&cfg, vb).unwrap_err().to_string();
    assert!(e.contains("model.vocab_size"), "{e}");
    let cfg = Qwen2Config {
        num_key_value_heads: 3,
        ..tiny(false)
    };
    let p = cfg.problems("model");
    assert!(
        p.iter().any(|(k, _)| k == "model.num_key_value_heads"),
        "{p:?}"
    );
    // A checkpoint without a tensor names it.
    let cfg = tiny(false);
    let mut t = init_tensors(&cfg, 0).unwrap();
    t.remove("model.layers.1.self_attn.k_proj.bias");
    let vb = VarBuilder::from_tensors(t, DType::F32, &Device::Cpu);
    let e = Qwen2::new(&cfg, vb).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.self_attn.k_proj.bias"), "{e}");
}

#[test]
fn hf_config_json_round_trips() {
    let cfg = Qwen2Config::full();
    let json = cfg.to_hf_json().unwrap();
    assert!(json.contains("\"model_type\": \"qwen2\""));
    assert_eq!(Qwen2Config::from_hf_json(&json).unwrap(), cfg);
    // HF's own keys that we do not model are ignored; a missing context is refused.
    let e = Qwen2Config::from_hf_json(r#"{"vocab_size": 8, "torch_dtype": "bfloat16"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
    // The full preset is Qwen2-0.5B's decoder: about 358M parameters besides the embedding.
    let n: usize = param_shapes(&cfg)
        .iter()
        .filter(|(k, _)| !k.contains("embed_tokens"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert!((357_000_000..360_000_000).contains(&n), "{n}");
}
