//! Parameter names, shapes and seeded initial values of the Qwen2 decoder, named as a
//! `Qwen2ForCausalLM` checkpoint. Values as HF's `Qwen2PreTrainedModel._init_weights`: weight
//! matrices and the embedding ~ N(0, initializer_range^2) (here truncated at two std, as
//! `models/vision/init.rs`), biases 0, RMSNorm gains 1; each tensor from its own stream
//! (`models::init`).

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use super::{Qwen2Config, LM_HEAD, PREFIX};
use crate::models::init::hf_init;

/// Every parameter: (full HF name, shape). `lm_head.weight` only when untied.
pub fn param_shapes(cfg: &Qwen2Config) -> Vec<(String, Vec<usize>)> {
    let (v, c, f) = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size);
    let d = cfg.head_dim();
    let (q, kv) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
    let mut out = vec![(format!("{PREFIX}.embed_tokens.weight"), vec![v, c])];
    for i in 0..cfg.num_hidden_layers {
        let l = |s: &str| format!("{PREFIX}.layers.{i}.{s}");
        out.extend([
            (l("input_layernorm.weight"), vec![c]),
            (l("self_attn.q_proj.weight"), vec![q, c]),
            (l("self_attn.q_proj.bias"), vec![q]),
            (l("self_attn.k_proj.weight"), vec![kv, c]),
            (l("self_attn.k_proj.bias"), vec![kv]),
            (l("self_attn.v_proj.weight"), vec![kv, c]),
            (l("self_attn.v_proj.bias"), vec![kv]),
            (l("self_attn.o_proj.weight"), vec![c, q]),
            (l("post_attention_layernorm.weight"), vec![c]),
            (l("mlp.gate_proj.weight"), vec![f, c]),
            (l("mlp.up_proj.weight"), vec![f, c]),
            (l("mlp.down_proj.weight"), vec![c, f]),
        ]);
    }
    out.push((format!("{PREFIX}.norm.weight"), vec![c]));
    if !cfg.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![v, c]));
    }
    out
}

/// Seeded initial values (f32, CPU) of every parameter, named as [`param_shapes`]. Trainable
/// build: `VarBuilder::from_varmap(&models::varmap_from(init_tensors(..)?)?, dtype, dev)`.
pub fn init_tensors(cfg: &Qwen2Config, seed: u64) -> Result<HashMap<String, Tensor>> {
    let std = cfg.initializer_range as f32;
    param_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let t = hf_init(seed, &name, &shape, std, |n| n.ends_with("norm.weight"))?;
            Ok((name, t))
        })
        .collect()
}
