//! The two blocks the style codebook's projection and mirror are made of (CoTyle, arXiv
//! 2511.10555, section 3.1: "attention with many heads, then a GeGLU MLP"; DESIGN.md, "Style
//! codebook"), on the `kernels` ops so every weight gets its gradient.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use kernels::AttentionOpts;

use crate::models::layers::{Linear, RmsNorm};

/// Pre-norm multi-head self-attention with a residual, width-preserving:
/// x + out(attention(qkv(rms_norm(x)))). Tokens of one image attend to each other, so each
/// token's code can depend on the whole image's style, not on its patch alone.
#[derive(Debug)]
pub struct AttnBlock {
    norm: RmsNorm,
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl AttnBlock {
    /// Loads `attn_norm.weight`, `attn.qkv.*` and `attn.out.*` under `vb`. `dim` is a
    /// multiple of `heads` (checked by the caller).
    pub fn new(vb: VarBuilder, dim: usize, heads: usize, eps: f64) -> Result<Self> {
        Ok(AttnBlock {
            norm: RmsNorm::new(vb.pp("attn_norm"), dim, eps)?,
            qkv: Linear::new(vb.pp("attn").pp("qkv"), dim, 3 * dim, true)?,
            out: Linear::new(vb.pp("attn").pp("out"), dim, dim, true)?,
            heads,
        })
    }

    /// x: (B, N, E) -> (B, N, E).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, e) = x.dims3()?;
        let hd = e / self.heads;
        // (B, N, 3E) -> (B, N, 3, H, hd); q, k, v are (B, H, N, hd) views (attention reads
        // any strides). The k third of the qkv bias gets a zero gradient: a constant added
        // to every key shifts each query's scores equally, which softmax ignores.
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x)?)?
            .reshape((b, n, 3, self.heads, hd))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2);
        let o = kernels::attention(&part(0)?, &part(1)?, &part(2)?, &AttentionOpts::default())?;
        x + self.out.forward(&o.transpose(1, 2)?.reshape((b, n, e))?)?
    }
}

/// Pre-norm GeGLU MLP changing the width: wo(gelu_tanh(a) * b), [a | b] = wi(rms_norm(x))
/// (Shazeer 2020, "GLU variants improve Transformer"). No residual (the widths differ).
#[derive(Debug)]
pub struct GegluMlp {
    norm: RmsNorm,
    wi: Linear,
    wo: Linear,
    hidden: usize,
}

impl GegluMlp {
    /// Loads `mlp_norm.weight`, `mlp.wi.*` (2 hidden, inp) and `mlp.wo.*` (out, hidden).
    pub fn new(vb: VarBuilder, inp: usize, hidden: usize, out: usize, eps: f64) -> Result<Self> {
        Ok(GegluMlp {
            norm: RmsNorm::new(vb.pp("mlp_norm"), inp, eps)?,
            wi: Linear::new(vb.pp("mlp").pp("wi"), inp, 2 * hidden, true)?,
            wo: Linear::new(vb.pp("mlp").pp("wo"), hidden, out, true)?,
            hidden,
        })
    }

    /// x: (…, inp) -> (…, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ab = self.wi.forward(&self.norm.forward(x)?)?;
        let last = ab.rank() - 1;
        let a = ab.narrow(last, 0, self.hidden)?;
        let b = ab.narrow(last, self.hidden, self.hidden)?;
        self.wo.forward(&(kernels::gelu_tanh(&a)? * b)?)
    }
}
