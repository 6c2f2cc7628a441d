//! CLIP's text tower (Radford et al. 2021, "Learning Transferable Visual Models From Natural
//! Language Supervision", section 2.4; github.com/openai/CLIP `clip/model.py`,
//! `encode_text`) in the Hugging Face layout (transformers `models/clip/modeling_clip.py`,
//! `CLIPTextTransformer`), for inference:
//!
//! ```text
//! ids (B, T), T <= context_length
//!  -> token_embedding[ids] + position_embedding[0..T]                      -> (B, T, W)
//!  -> `layers` x CLIPEncoderLayer, causal (position i sees 0..=i):
//!       x += out_proj(MHA(layer_norm1(x)))        q/k/v_proj separate, scale 1/√D
//!       x += fc2(QuickGELU(fc1(layer_norm2(x))))  QuickGELU(x) = x·sigmoid(1.702 x)
//!  -> final_layer_norm                                                     -> (B, T, W)
//!  -> the row at EOS = argmax(ids) per prompt (first maximum, as torch)    -> (B, W)
//!  -> text_projection (no bias)                                            -> (B, P)
//! ```
//!
//! EOS pooling by `argmax(ids)` is OpenAI's rule (`x[arange(B), text.argmax(dim=-1)]`) and
//! HF's for the original vocabulary (`eos_token_id == 2`), where `<|endoftext|>` has the highest
//! id; the tokenizer (`tokenizer.rs`) checks that. LayerNorm eps 1e-5. q, k, v are fused into
//! one matrix at load for `kernels::attention_packed`.

use candle_core::{bail, IndexOp, Result, Tensor};
use candle_nn::VarBuilder;
use kernels::AttentionOpts;

use super::config::ClipTextConfig;

/// Every LayerNorm (HF `layer_norm_eps`).
const LN_EPS: f64 = 1e-5;
/// QuickGELU(x) = x * sigmoid(QUICK_GELU * x) (HF `quick_gelu`).
const QUICK_GELU: f64 = 1.702;

/// An HF `nn.Linear`: weight (out, in), bias (out).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, inp: usize, out: usize) -> Result<Self> {
        Ok(Linear {
            weight: vb.get((out, inp), "weight")?,
            bias: vb.get(out, "bias")?,
        })
    }

    /// x: (…, in) -> (…, out).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::linear(x, &self.weight, Some(&self.bias))
    }
}

/// An HF `nn.LayerNorm`: weight, bias (C).
#[derive(Debug, Clone)]
struct LayerNorm(Tensor, Tensor);

impl LayerNorm {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(LayerNorm(vb.get(dim, "weight")?, vb.get(dim, "bias")?))
    }

    /// x: (…, C) -> (…, C).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::layer_norm(x, &self.0, Some(&self.1), LN_EPS)
    }
}

/// HF `CLIPEncoderLayer`, causal.
#[derive(Debug, Clone)]
struct Block {
    layer_norm1: LayerNorm,
    /// `self_attn.{q,k,v}_proj` stacked: (3W, W), (3W).
    qkv: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (w, m) = (cfg.width, cfg.mlp_width);
        let attn = vb.pp("self_attn");
        let [q, k, v] = ["q_proj", "k_proj", "v_proj"].map(|p| Linear::new(attn.pp(p), w, w));
        let (q, k, v) = (q?, k?, v?);
        Ok(Block {
            layer_norm1: LayerNorm::new(vb.pp("layer_norm1"), w)?,
            qkv: Linear {
                weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                bias: Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?,
            },
            out_proj: Linear::new(attn.pp("out_proj"), w, w)?,
            layer_norm2: LayerNorm::new(vb.pp("layer_norm2"), w)?,
            fc1: Linear::new(vb.pp("mlp").pp("fc1"), w, m)?,
            fc2: Linear::new(vb.pp("mlp").pp("fc2"), m, w)?,
            heads: cfg.heads,
        })
    }

    /// x: (B, T, W) -> (B, T, W).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(&self.layer_norm1.forward(x)?)?;
        let opts = AttentionOpts {
            causal: true,
            ..AttentionOpts::default()
        };
        let o = kernels::attention_packed(&qkv, self.heads, self.heads, None, &opts)?;
        let x = (x + self.out_proj.forward(&o)?)?;
        let h = self.fc1.forward(&self.layer_norm2.forward(&x)?)?;
        let h = (&h * candle_nn::ops::sigmoid(&(&h * QUICK_GELU)?)?)?;
        &x + self.fc2.forward(&h)?
    }
}

/// The text tower and its projection.
#[derive(Debug, Clone)]
pub struct TextTower {
    cfg: ClipTextConfig,
    /// (V, W).
    token_embedding: Tensor,
    /// (context_length, W).
    position_embedding: Tensor,
    blocks: Vec<Block>,
    final_layer_norm: LayerNorm,
    /// `text_projection.weight` (P, W).
    projection: Tensor,
}

impl TextTower {
    /// From `vb` rooted where `text_model.` and `text_projection.` resolve.
    pub fn new(cfg: &ClipTextConfig, projection_dim: usize, vb: &VarBuilder) -> Result<Self> {
        let (w, t) = (cfg.width, cfg.context_length);
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(cfg, tm.pp("encoder").pp("layers").pp(i)))
            .collect::<Result<_>>()?;
        Ok(TextTower {
            cfg: cfg.clone(),
            token_embedding: emb
                .pp("token_embedding")
                .get((cfg.vocab_size, w), "weight")?,
            position_embedding: emb.pp("position_embedding").get((t, w), "weight")?,
            blocks,
            final_layer_norm: LayerNorm::new(tm.pp("final_layer_norm"), w)?,
            projection: vb
                .pp("text_projection")
                .get((projection_dim, w), "weight")?,
        })
    }

    /// `text_projection.weight` (P, W).
    pub fn projection(&self) -> &Tensor {
        &self.projection
    }

    /// The last hidden state, `final_layer_norm` applied at every position (HF
    /// `last_hidden_state`). ids: (B, T) integer, 1 <= T <= context_length, every id below
    /// vocab_size -> (B, T, W). An error naming the shape, or the row and column of an id out
    /// of range.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = self.check_ids(ids)?;
        let w = self.cfg.width;
        let flat = ids.flatten_all()?.to_dtype(candle_core::DType::U32)?;
        let x = self
            .token_embedding
            .index_select(&flat, 0)?
            .reshape((b, t, w))?
            .broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        let mut x = x;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.final_layer_norm.forward(&x)
    }

    /// The projected, unnormalised text embedding: `text_projection(hidden[b, eos_b])`.
    /// ids: (B, T) -> (B, P).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids)?;
        let rows = eos_positions(ids)?
            .into_iter()
            .enumerate()
            .map(|(b, p)| h.i((b, p)))
            .collect::<Result<Vec<_>>>()?;
        kernels::linear(&Tensor::stack(&rows, 0)?, &self.projection, None)
    }

    /// (B, T) of valid ids; errors name the shape or the first id out of range.
    fn check_ids(&self, ids: &Tensor) -> Result<(usize, usize)> {
        let l = self.cfg.context_length;
        let (b, t) = match ids.dims() {
            &[b, t] if b > 0 && t > 0 && t <= l => (b, t),
            dims => {
                bail!("clip text: ids must be (B, T) with B >= 1 and 1 <= T <= {l}, got {dims:?}")
            }
        };
        let v = self.cfg.vocab_size;
        for (row, r) in ids
            .to_dtype(candle_core::DType::I64)?
            .to_vec2::<i64>()?
            .iter()
            .enumerate()
        {
            if let Some((col, id)) = r
                .iter()
                .enumerate()
                .find(|(_, id)| **id < 0 || **id as usize >= v)
            {
                bail!(
                    "clip text: ids row {row} column {col} is {id}, outside the vocabulary 0..{v}"
                );
            }
        }
        Ok((b, t))
    }
}

/// The EOS position of each prompt: the column of its highest id, the first one on ties
/// (torch's `argmax`; OpenAI's and HF's pooling rule). ids: (B, T) -> B positions.
pub fn eos_positions(ids: &Tensor) -> Result<Vec<usize>> {
    let rows = ids.to_dtype(candle_core::DType::I64)?.to_vec2::<i64>()?;
    Ok(rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, i64::MIN),
                    |(bp, bv), (p, &v)| if v > bv { (p, v) } else { (bp, bv) },
                )
                .0
        })
        .collect())
}
