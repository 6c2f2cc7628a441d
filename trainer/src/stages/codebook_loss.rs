//! The style codebook's training loss (CoTyle, arXiv 2511.10555, section 3.1; DESIGN.md,
//! "Style codebook"): L = L_contrast + a L_recon + b L_vq, each term switchable for the
//! ablations (the paper's "no negatives" and "no L_recon" rows of its ablation table).
//!
//! - L_contrast, on pairs (x1, x2) with label y (1 same style, 0 other style):
//!   mean over pairs of y (1 - s)^2 + (1 - y) relu(s - m)^2, s = cos(pool(style(x1)),
//!   pool(v(x2))). DESIGN's "cosine(quantised(x1), features(x2))" compares one vector per
//!   image; we read "quantised(x1)" as x1's style embeddings (the mirror of its quantised
//!   codes, at the encoder width, so comparable with features) and take each side's mean over
//!   tokens as the image's vector. Its gradient reaches the projection through the
//!   straight-through estimator; x2's features are the frozen encoder's.
//! - L_recon = mean over tokens of 1 - cos(style, v): the style embedding reconstructs the
//!   encoder feature's direction (without it the codebook collapses, per the paper).
//! - L_vq = mean over tokens of ||sg(z) - q||^2 + commitment ||z - sg(q)||^2 (VQ-VAE, van den
//!   Oord et al. 2017): the first term is the codebook's only gradient, the second pulls the
//!   projection toward its code.
//!
//! Everything is computed in f32 whatever the model's dtype (sums of cosines in bf16 would
//! lose the signal). A disabled term is a zero scalar and is not computed.

#[cfg(test)]
mod tests;

use candle_core::{bail, DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::models::codebook::Quantized;

/// Added to squared norms before the square root (a zero vector gets cosine 0, not NaN).
const NORM_EPS2: f64 = 1e-12;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Use L_contrast (off: the "no negatives / no pairs" ablation).
    pub contrastive: bool,
    /// Margin m of the negative pairs' hinge: other-style pairs are pushed only until their
    /// cosine is at most m.
    pub margin: f64,
    /// Use L_recon (off: the "no L_recon" ablation, where the paper saw collapse).
    pub recon: bool,
    /// Weight a of L_recon.
    pub recon_weight: f64,
    /// Use L_vq (off: the codebook gets no gradient and stays at its init).
    pub vq: bool,
    /// Weight b of L_vq.
    pub vq_weight: f64,
    /// Weight of the commitment term inside L_vq (the paper's and VQ-VAE's 0.25).
    pub commitment: f64,
}

impl Default for LossConfig {
    /// The paper gives no m, a or b. m = 0.5: halfway between orthogonal and identical, so
    /// negatives need not be driven to orthogonality (mean-pooled features of one encoder
    /// share a large common direction, and forcing s -> 0 fights it), yet stay well apart from
    /// positives at s -> 1. a = b = 1: the three terms are on comparable scales at init
    /// (each O(0.1..1) for unit vectors), so none dominates; tune from there.
    fn default() -> Self {
        LossConfig {
            contrastive: true,
            margin: 0.5,
            recon: true,
            recon_weight: 1.0,
            vq: true,
            vq_weight: 1.0,
            commitment: 0.25,
        }
    }
}

impl LossConfig {
    /// Rules beyond the types, as `(key, message)`; `prefix` is this section's dotted key.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut rules = crate::config::rules::Rules::new(prefix);
        let mut need = |ok: bool, k: &str, msg: String| rules.need(ok, k, msg);
        need(
            (-1.0..=1.0).contains(&self.margin),
            "margin",
            format!("{} must be within [-1, 1] (a cosine)", self.margin),
        );
        for (k, v) in [
            ("recon_weight", self.recon_weight),
            ("vq_weight", self.vq_weight),
            ("commitment", self.commitment),
        ] {
            need(
                v >= 0.0 && v.is_finite(),
                k,
                format!("{v} must be a non-negative number"),
            );
        }
        need(
            self.contrastive || self.recon || self.vq,
            "contrastive",
            "at least one of contrastive, recon and vq must be on (nothing to train)".into(),
        );
        rules.into_vec()
    }
}

/// The loss of one batch of pairs: each term as a scalar (f32, no dims), the disabled ones
/// zero; `total` = contrast + a recon + b vq.
#[derive(Debug, Clone)]
pub struct Losses {
    pub total: Tensor,
    pub contrast: Tensor,
    pub recon: Tensor,
    pub vq: Tensor,
}

impl Losses {
    /// The four values as (name, value), in the order total, contrast, recon, vq: for logs,
    /// metrics and the non-finite check. One device-to-host copy each.
    pub fn values(&self) -> Result<[(&'static str, f64); 4]> {
        let v = |t: &Tensor| -> Result<f64> { t.to_dtype(DType::F64)?.to_scalar::<f64>() };
        Ok([
            ("total", v(&self.total)?),
            ("contrast", v(&self.contrast)?),
            ("recon", v(&self.recon)?),
            ("vq", v(&self.vq)?),
        ])
    }
}

/// The losses of a batch of pairs: `x1` is the codebook's output for x1 (B, N, ·), `v1` and
/// `v2` the encoder features of x1 and x2 (B, N, E), `y` the labels (B) (1 same style, 0
/// other; any float or integer dtype). L_recon and L_vq are over x1's tokens.
pub fn losses(
    cfg: &LossConfig,
    x1: &Quantized,
    v1: &Tensor,
    v2: &Tensor,
    y: &Tensor,
) -> Result<Losses> {
    let zero = Tensor::zeros((), DType::F32, x1.style.device())?;
    let contrast = if cfg.contrastive {
        contrastive_loss(&x1.style, v2, y, cfg.margin)?
    } else {
        zero.clone()
    };
    let recon = if cfg.recon {
        recon_loss(&x1.style, v1)?
    } else {
        zero.clone()
    };
    let vq = if cfg.vq {
        vq_loss(&x1.z, &x1.q, cfg.commitment)?
    } else {
        zero.clone()
    };
    // Only enabled terms enter the sum, so a disabled one adds no node to the graph.
    let mut total = zero;
    if cfg.contrastive {
        total = (total + &contrast)?;
    }
    if cfg.recon {
        total = (total + (&recon * cfg.recon_weight)?)?;
    }
    if cfg.vq {
        total = (total + (&vq * cfg.vq_weight)?)?;
    }
    Ok(Losses {
        total,
        contrast,
        recon,
        vq,
    })
}

/// L_contrast: style1 (B, N, E) of x1, v2 (B, M, E) features of x2, y (B) labels ->
/// mean_B [y (1 - s)^2 + (1 - y) relu(s - m)^2], s = cos(mean_N style1, mean_M v2). Scalar.
pub fn contrastive_loss(style1: &Tensor, v2: &Tensor, y: &Tensor, margin: f64) -> Result<Tensor> {
    let (b, _, e) = style1.dims3()?;
    let (b2, _, e2) = v2.dims3()?;
    if (b2, e2) != (b, e) || y.dims() != [b] {
        bail!(
            "contrastive loss: style {:?}, features {:?} and labels {:?} must be (B, N, E), \
             (B, M, E) and (B)",
            style1.dims(),
            v2.dims(),
            y.dims()
        );
    }
    let a = style1.to_dtype(DType::F32)?.mean(1)?; // (B, E)
    let p = v2.to_dtype(DType::F32)?.mean(1)?; // (B, E)
    let s = cosine(&a, &p)?; // (B)
    let y = y.to_dtype(DType::F32)?;
    let pos = (&y * (1.0 - &s)?.sqr()?)?;
    let neg = ((1.0 - &y)? * (s - margin)?.relu()?.sqr()?)?;
    (pos + neg)?.mean_all()
}

/// L_recon: style, v (B, N, E) -> mean over tokens of 1 - cos(style, v). Scalar.
pub fn recon_loss(style: &Tensor, v: &Tensor) -> Result<Tensor> {
    if style.dims() != v.dims() || style.rank() != 3 {
        bail!(
            "reconstruction loss: style {:?} and features {:?} must both be (B, N, E)",
            style.dims(),
            v.dims()
        );
    }
    let c = cosine(&style.to_dtype(DType::F32)?, &v.to_dtype(DType::F32)?)?; // (B, N)
    (1.0 - c)?.mean_all()
}

/// L_vq: z, q (B, N, Dc) -> mean over tokens of ||sg(z) - q||^2 + commitment ||z - sg(q)||^2.
/// Scalar; its gradient reaches q only through the first term and z only through the second.
pub fn vq_loss(z: &Tensor, q: &Tensor, commitment: f64) -> Result<Tensor> {
    if z.dims() != q.dims() || z.rank() != 3 {
        bail!(
            "vq loss: z {:?} and q {:?} must both be (B, N, Dc)",
            z.dims(),
            q.dims()
        );
    }
    let (z, q) = (z.to_dtype(DType::F32)?, q.to_dtype(DType::F32)?);
    let sq = |a: &Tensor, b: &Tensor| (a - b)?.sqr()?.sum(D::Minus1)?.mean_all(); // per token, averaged
    let codebook = sq(&z.detach(), &q)?;
    let commit = sq(&z, &q.detach())?;
    codebook + (commit * commitment)?
}

/// Cosine along the last dim: a, b (…, D) -> (…).
fn cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let norm = |x: &Tensor| (x.sqr()?.sum(D::Minus1)? + NORM_EPS2)?.sqrt();
    (a * b)?.sum(D::Minus1)? / (norm(a)? * norm(b)?)?
}
