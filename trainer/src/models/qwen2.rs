//! The style generator: a Qwen2 decoder (HF `Qwen2ForCausalLM`, `modeling_qwen2.py`) over
//! codebook indices (DESIGN.md, "Autoregressive style generator"; CoTyle, arXiv 2511.10555:
//! Qwen2-0.5B trained from scratch, vocabulary = codebook size, length = tokens per image).
//!
//! Per layer: x + attn(rms(x)), then h + mlp(rms(h)); attention is grouped-query with biases on
//! q, k and v (none on o), half-rotation RoPE; the MLP is SwiGLU without biases. A final
//! RMSNorm and the head (tied to the embedding or its own `lm_head`) give the logits. Tensor
//! names are HF's (`model.layers.N.self_attn.q_proj.weight`, `model.norm.weight`,
//! `lm_head.weight`), so a `config.json` + safetensors from `transformers` loads as it is.
//!
//! Two forward paths, the same function (tested):
//! - [`Qwen2::forward`], for training: q/k/v as one fused projection (their weights
//!   concatenated per call, which keeps the HF names and costs one weight-sized copy) and
//!   [`kernels::attention_packed`] with RoPE inside, causal.
//! - [`Qwen2::forward_cached`], for sampling: new tokens at positions `cache.position()..` read and
//!   extend a [`Cache`] of keys and values (candle-nn's preallocated `KvCache`), with
//!   bottom-right causal attention so a prefill of several tokens and one-token steps agree.
//!
//! Every op is from `kernels` (with a backward), so gradients reach every parameter.

mod config;
mod init;
#[cfg(test)]
mod tests;

pub use config::Qwen2Config;
pub use init::{init_tensors, param_shapes};

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::kv_cache::KvCache;
use candle_nn::VarBuilder;
use kernels::{AttentionOpts, RopeLayout};

use super::layers::{Linear, RmsNorm, SwiGluMlp};

/// The prefix of the decoder's tensors in a `Qwen2ForCausalLM` checkpoint.
pub const PREFIX: &str = "model";
/// The untied output head's name.
pub const LM_HEAD: &str = "lm_head.weight";

/// HF `Qwen2Attention`.
#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Attention {
            q: Linear::new(vb.pp("q_proj"), c, h * d, true)?,
            k: Linear::new(vb.pp("k_proj"), c, kv * d, true)?,
            v: Linear::new(vb.pp("v_proj"), c, kv * d, true)?,
            o: Linear::new(vb.pp("o_proj"), h * d, c, false)?,
            heads: h,
            kv_heads: kv,
            head_dim: d,
        })
    }

    /// x: (B, T, C), cos/sin (T, D/2) -> (B, T, C), causal over the T tokens.
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let bias = |l: &Linear| l.bias().expect("q, k, v have biases").clone();
        let w = Tensor::cat(&[self.q.weight(), self.k.weight(), self.v.weight()], 0)?;
        let b = Tensor::cat(&[bias(&self.q), bias(&self.k), bias(&self.v)], 0)?;
        let qkv = kernels::linear(x, &w, Some(&b))?; // (B, T, (H + 2 Hkv) D)
        let opts = AttentionOpts {
            causal: true,
            ..AttentionOpts::default()
        };
        let rope = Some((cos, sin, RopeLayout::Half));
        let o = kernels::attention_packed(&qkv, self.heads, self.kv_heads, rope, &opts)?;
        self.o.forward(&o)
    }

    /// x: (B, T, C) at the positions of cos/sin (T, D/2), after the cached ones -> (B, T, C).
    fn forward_cached(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let d = self.head_dim;
        // (B, T, n D) -> (B, n, T, D)
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, d))?.transpose(1, 2);
        let q = heads(self.q.forward(x)?, self.heads)?;
        let k = heads(self.k.forward(x)?, self.kv_heads)?;
        let v = heads(self.v.forward(x)?, self.kv_heads)?.contiguous()?;
        let q = kernels::rope(&q, cos, sin, RopeLayout::Half)?;
        let k = kernels::rope(&k, cos, sin, RopeLayout::Half)?;
        let (k, v) = cache.append(&k, &v)?; // (B, Hkv, past + T, D)
        let opts = AttentionOpts {
            causal: true,
            ..AttentionOpts::default()
        };
        let o = kernels::attention(&q, &k, &v, &opts)?; // (B, H, T, D)
        let o = o.transpose(1, 2)?.reshape((b, t, self.heads * d))?;
        self.o.forward(&o)
    }
}

/// HF `Qwen2DecoderLayer`.
#[derive(Debug)]
struct Layer {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: SwiGluMlp,
}

impl Layer {
    fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        let (c, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Layer {
            input_norm: RmsNorm::new(vb.pp("input_layernorm"), c, eps)?,
            attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_norm: RmsNorm::new(vb.pp("post_attention_layernorm"), c, eps)?,
            mlp: SwiGluMlp::new(vb.pp("mlp"), c, cfg.intermediate_size, false)?,
        })
    }

    /// The MLP half, shared by both paths: h + mlp(rms(h)).
    fn mlp_residual(&self, h: &Tensor) -> Result<Tensor> {
        h + self.mlp.forward(&self.post_norm.forward(h)?)?
    }
}

/// Keys and values of every layer for the tokens decoded so far (one per sequence of a batch).
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<KvCache>,
}

impl Cache {
    /// Tokens held: the position of the next one.
    pub fn position(&self) -> usize {
        self.layers.first().map_or(0, |c| c.current_seq_len())
    }
}

/// `Qwen2ForCausalLM` over codebook indices.
#[derive(Debug)]
pub struct Qwen2 {
    cfg: Qwen2Config,
    /// (V, C)
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// (V, C): the embedding itself when tied.
    head: Tensor,
    /// Rotary tables (max_position_embeddings, D/2) in the model's dtype.
    cos: Tensor,
    sin: Tensor,
}

impl Qwen2 {
    /// Loads (or, from a varmap, creates) every tensor under `vb` at the root of a
    /// `Qwen2ForCausalLM` checkpoint: `model.*` and, untied, `lm_head.weight`. Errors naming an
    /// invalid config or a missing or misshapen tensor.
    pub fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        cfg.check_resolved().map_err(candle_core::Error::wrap)?;
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let m = vb.pp(PREFIX);
        let embed = m.pp("embed_tokens").get((v, c), "weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, m.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(m.pp("norm"), c, cfg.rms_norm_eps)?;
        let head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            vb.pp("lm_head").get((v, c), "weight")?
        };
        let (cos, sin) = rope_tables(cfg, vb.dtype(), vb.device())?;
        Ok(Qwen2 {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            head,
            cos,
            sin,
        })
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// An empty cache for a batch of sequences.
    pub fn new_cache(&self) -> Cache {
        let layers = (0..self.layers.len())
            .map(|_| KvCache::new(2, self.cfg.max_position_embeddings))
            .collect();
        Cache { layers }
    }

    /// Training forward. tokens: (B, T) u32, T <= max_position_embeddings -> logits (B, T, V):
    /// row t predicts token t + 1.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let x = self.layers_forward(&self.embed_tokens(tokens)?)?;
        self.logits(&x)
    }

    /// As a text encoder: the last hidden states (after the final norm, HF's
    /// `last_hidden_state`) of input embeddings, causal. embeds: (B, T, C) -> (B, T, C).
    pub fn hidden_states(&self, embeds: &Tensor) -> Result<Tensor> {
        self.norm.forward(&self.layers_forward(embeds)?)
    }

    /// Every layer over x: (B, T, C) at positions 0..T -> (B, T, C).
    fn layers_forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        let (cos, sin) = self.tables(0, t)?;
        let mut x = x.clone();
        for l in &self.layers {
            let h = (&x + l.attn.forward(&l.input_norm.forward(&x)?, &cos, &sin)?)?;
            x = l.mlp_residual(&h)?;
        }
        Ok(x)
    }

    /// Decoding forward: tokens (B, T) at positions `cache.position()..` -> logits (B, T, V); the
    /// cache then holds them too. The cache must have been used with the same batch only.
    pub fn forward_cached(&self, tokens: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let (_, t) = tokens.dims2()?;
        let (cos, sin) = self.tables(cache.position(), t)?;
        let mut x = self.embed_tokens(tokens)?;
        for (l, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let a = l
                .attn
                .forward_cached(&l.input_norm.forward(&x)?, &cos, &sin, kv)?;
            x = l.mlp_residual(&(&x + a)?)?;
        }
        self.logits(&x)
    }

    /// The token embeddings: tokens (B, T) u32 -> (B, T, C).
    pub fn embed_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let c = self.cfg.hidden_size;
        self.embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, t, c))
    }

    /// x (B, T, C) -> (B, T, V).
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        kernels::linear(&self.norm.forward(x)?, &self.head, None)
    }

    /// Rows `from..from + t` of the rotary tables; an error past the context.
    fn tables(&self, from: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let max = self.cfg.max_position_embeddings;
        if from + t > max {
            candle_core::bail!(
                "positions {from}..{} exceed the model's context of {max} tokens",
                from + t
            );
        }
        Ok((self.cos.narrow(0, from, t)?, self.sin.narrow(0, from, t)?))
    }
}

impl Module for Qwen2 {
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        Qwen2::forward(self, tokens)
    }
}

/// cos and sin of t * theta^(-2i/D), (max_position_embeddings, D/2), as HF's
/// `Qwen2RotaryEmbedding` (default rope type); computed in f64, stored in `dtype`.
fn rope_tables(cfg: &Qwen2Config, dtype: DType, dev: &Device) -> Result<(Tensor, Tensor)> {
    let (n, half) = (cfg.max_position_embeddings, cfg.head_dim() / 2);
    let d = cfg.head_dim() as f64;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for t in 0..n {
        for i in 0..half {
            let inv_freq = 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d);
            let a = t as f64 * inv_freq;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let table = |v: Vec<f64>| Tensor::from_vec(v, (n, half), dev)?.to_dtype(dtype);
    Ok((table(cos)?, table(sin)?))
}

/// Mean next-token cross-entropy (nats) of logits (B, T, V) against targets (B, T) u32.
pub fn next_token_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let logits = logits.reshape((b * t, v))?.to_dtype(DType::F32)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = logp.gather(&targets.reshape((b * t, 1))?, 1)?;
    picked.mean_all()?.neg()
}
