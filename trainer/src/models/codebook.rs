//! The discrete style codebook of CoTyle (arXiv 2511.10555, section 3.1; DESIGN.md, "Style
//! codebook"): encoder features in, one discrete code per token out, and back to the
//! encoder width as *style embeddings*.
//!
//! ```text
//! v (B, N, E) -> proj: AttnBlock(E) -> GegluMlp(E -> H -> Dc) -> L2-normalise = z (B, N, Dc)
//!   -> nearest of K L2-normalised codebook rows by cosine (kernels::vq) = indices (B, N)
//!   -> q = c[indices]; straight-through q_st (value q, gradient to z)
//!   -> mirror: GegluMlp(Dc -> H -> E) -> AttnBlock(E) = style (B, N, E)
//! ```
//!
//! The codebook parameter holds raw rows; every use normalises them (c = rows / ||rows||),
//! so gradients reach the raw parameter and a re-initialised row need not be exactly unit.
//! The losses live in stages/codebook_loss.rs; usage tracking and dead-code re-initialisation
//! (`usage.rs`, loop state) beside the model, which never sees the loop. Parameter names are listed in `init.rs` (ours: there is no
//! reference checkpoint for this part); the caller passes `vb` at the codebook's root.

mod blocks;
mod config;
mod init;
#[cfg(test)]
mod tests;
mod usage;

use candle_core::{bail, Result, Tensor, D};
use candle_nn::VarBuilder;

use blocks::{AttnBlock, GegluMlp};
pub use config::{DeadCodeConfig, StyleCodebookConfig};
#[cfg_attr(not(test), allow(unused_imports))] // used by the codebook stage (issue 4)
pub use init::{init_tensors, param_shapes};
#[allow(unused_imports)] // used by the codebook stage (issue 4)
pub use usage::CodeUsage;

/// Name of the codebook parameter (K, Dc): dead-code re-initialisation writes its `Var`.
pub const EMBEDDING: &str = "codebook.embedding";

/// Added to squared norms before the square root, so an all-zero vector normalises to zero
/// with a finite gradient instead of NaN; a norm of 1e-6 is far below any real one.
const NORM_EPS2: f64 = 1e-12;

/// What one forward pass gives the losses and the loop.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// The projected code vectors, L2-normalised: (B, N, Dc).
    pub z: Tensor,
    /// Their nearest codebook rows (normalised): (B, N, Dc), equal to
    /// `codebook()?.index_select(indices.flatten_all(), 0)` bit for bit.
    pub q: Tensor,
    /// Straight-through q: the values of `q` exactly, the gradient of `z`: (B, N, Dc).
    #[allow(dead_code)] // the loop trains through `style`; tests read it
    pub q_st: Tensor,
    /// Indices of the codes: (B, N) u32.
    pub indices: Tensor,
    /// Style embeddings, mirror(q_st): (B, N, E); equal to `embed_indices(indices)`.
    pub style: Tensor,
}

/// The style codebook: projection, codebook, mirror.
#[derive(Debug)]
pub struct StyleCodebook {
    cfg: StyleCodebookConfig,
    enc_dim: usize,
    proj_attn: AttnBlock,
    proj_mlp: GegluMlp,
    /// Raw rows (K, Dc); see the module header.
    embedding: Tensor,
    mirror_mlp: GegluMlp,
    mirror_attn: AttnBlock,
}

impl StyleCodebook {
    /// The codebook for encoder features of width `enc_dim`, weights from `vb` (names in
    /// `init.rs`). An error listing the config's problems, or naming a missing or misshapen
    /// tensor.
    pub fn new(cfg: &StyleCodebookConfig, enc_dim: usize, vb: VarBuilder) -> Result<Self> {
        let mut problems: Vec<String> = cfg
            .problems("")
            .iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect();
        if enc_dim == 0 || cfg.heads == 0 || !enc_dim.is_multiple_of(cfg.heads) {
            problems.push(format!(
                "heads: {} must divide the encoder width {enc_dim}",
                cfg.heads
            ));
        }
        if !problems.is_empty() {
            bail!("style codebook config: {}", problems.join("; "));
        }
        let (e, h, dc, eps) = (enc_dim, cfg.mlp_hidden, cfg.code_dim, cfg.norm_eps);
        let proj = vb.pp("proj");
        let mirror = vb.pp("mirror");
        Ok(StyleCodebook {
            cfg: cfg.clone(),
            enc_dim,
            proj_attn: AttnBlock::new(proj.clone(), e, cfg.heads, eps)?,
            proj_mlp: GegluMlp::new(proj, e, h, dc, eps)?,
            embedding: vb.get((cfg.codes, dc), EMBEDDING)?,
            // The mirror's first RMSNorm also rescales the unit-norm codes (per-component
            // size 1/sqrt(Dc)) to unit RMS, the input scale its Linear init assumes.
            mirror_mlp: GegluMlp::new(mirror.clone(), dc, h, e, eps)?,
            mirror_attn: AttnBlock::new(mirror, e, cfg.heads, eps)?,
        })
    }

    pub fn config(&self) -> &StyleCodebookConfig {
        &self.cfg
    }

    #[cfg(test)]
    /// The encoder width E.
    pub fn enc_dim(&self) -> usize {
        self.enc_dim
    }

    /// The codebook, rows L2-normalised: (K, Dc), differentiable w.r.t. the raw parameter.
    pub fn codebook(&self) -> Result<Tensor> {
        l2_normalize(&self.embedding)
    }

    /// The projection: v (B, N, E) -> z (B, N, Dc), L2-normalised.
    pub fn project(&self, v: &Tensor) -> Result<Tensor> {
        let (_, _, e) = v.dims3()?;
        if e != self.enc_dim {
            bail!(
                "style codebook: features of shape {:?} must be (B, N, {}) (the encoder width)",
                v.dims(),
                self.enc_dim
            );
        }
        l2_normalize(&self.proj_mlp.forward(&self.proj_attn.forward(v)?)?)
    }

    /// The mirror: codes (B, N, Dc) -> style embeddings (B, N, E).
    fn mirror(&self, q: &Tensor) -> Result<Tensor> {
        self.mirror_attn.forward(&self.mirror_mlp.forward(q)?)
    }

    /// Nearest codes of z (B, N, Dc) against c (K, Dc), both normalised -> (B, N) u32.
    fn nearest(z: &Tensor, c: &Tensor) -> Result<Tensor> {
        let (b, n, dc) = z.dims3()?;
        let (idx, _) = kernels::vq::nearest_code(&z.reshape((b * n, dc))?, c)?;
        idx.reshape((b, n))
    }

    /// Training pass: v (B, N, E) -> z, q, q_st, indices and style (see [`Quantized`]).
    pub fn forward(&self, v: &Tensor) -> Result<Quantized> {
        let z = self.project(v)?;
        let (b, n, dc) = z.dims3()?;
        let c = self.codebook()?;
        let indices = Self::nearest(&z, &c)?;
        // Differentiable w.r.t. the codebook (index_select scatters its gradient back).
        let q = c
            .index_select(&indices.flatten_all()?, 0)?
            .reshape((b, n, dc))?;
        let q_st = straight_through(&z, &q)?;
        let style = self.mirror(&q_st)?;
        Ok(Quantized {
            z,
            q,
            q_st,
            indices,
            style,
        })
    }

    /// Inference: v (B, N, E) -> code indices (B, N) u32 (projection and VQ only).
    pub fn quantize(&self, v: &Tensor) -> Result<Tensor> {
        Self::nearest(&self.project(v)?, &self.codebook()?)
    }

    /// Codebook lookup and mirror: idx (B, N) u32 -> style embeddings (B, N, E), as the DiT
    /// and generation use them. An out-of-range index is an error naming it.
    pub fn embed_indices(&self, idx: &Tensor) -> Result<Tensor> {
        let (b, n) = idx.dims2()?;
        let flat = idx.flatten_all()?;
        let k = self.cfg.codes;
        let host = flat.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?;
        if let Some(pos) = host.iter().position(|&i| i as usize >= k) {
            bail!(
                "style codebook: index {} at position {pos} is outside the codebook of {k}",
                host[pos]
            );
        }
        let q = self
            .codebook()?
            .index_select(&flat, 0)?
            .reshape((b, n, self.cfg.code_dim))?;
        self.mirror(&q)
    }
}

/// Straight-through estimator: the values of `q` exactly, the gradient of `z` (VQ-VAE, van den
/// Oord et al. 2017). Written q + (z - sg(z)) rather than z + sg(q - z): z - z is exactly 0 in
/// floating point, so the result equals q bit for bit and `embed_indices` reproduces `style`.
/// z, q: the same shape -> that shape.
pub fn straight_through(z: &Tensor, q: &Tensor) -> Result<Tensor> {
    q.detach() + (z - z.detach())?
}

/// Rows scaled to unit L2 norm along the last dim: x (…, D) -> (…, D), differentiable.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + NORM_EPS2)?.sqrt()?;
    x.broadcast_div(&norm)
}
