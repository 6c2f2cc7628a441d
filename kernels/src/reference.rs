//! Slow reference versions of the fused ops, composed of plain differentiable candle tensor
//! ops (so candle's autograd differentiates them). They define what the fused ops must
//! compute: the tests compare forward and gradients against them, and `trainer bench ops`
//! times the fused ops against them. Same signatures and formulas as the fused ops
//! (see `softmax.rs`, `rms_norm.rs`, `layer_norm.rs`); computed in the input's dtype.

use candle_core::{Result, Tensor, D};

/// exp(x - max) / sum(exp(x - max)) over the last dim. x: (…, D) -> (…, D).
/// The max is detached: it cancels in the result, so its gradient is zero anyway.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    crate::check_rank("reference softmax_last_dim", x)?;
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// x / sqrt(mean(x^2) + eps) * w over the last dim. x: (…, D), weight: (D) -> (…, D).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    crate::check_rank("reference rms_norm", x)?;
    crate::check_param("reference rms_norm", x, weight, "weight")?;
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

/// (x - mean) / sqrt(var + eps) * w + b over the last dim (biased variance).
/// x: (…, D), weight: (D), bias: (D) or none -> (…, D).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    crate::check_rank("reference layer_norm", x)?;
    crate::check_param("reference layer_norm", x, weight, "weight")?;
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?;
    match bias {
        Some(b) => {
            crate::check_param("reference layer_norm", x, b, "bias")?;
            y.broadcast_add(b)
        }
        None => Ok(y),
    }
}
