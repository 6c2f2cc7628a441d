//! Slow reference versions of the fused ops, composed of plain differentiable candle tensor
//! ops (so candle's autograd differentiates them). They define what the fused ops must
//! compute: the tests compare forward and gradients against them, and `trainer bench ops`
//! times the fused ops against them. Same signatures and formulas as the fused ops
//! (see `softmax.rs`, `rms_norm.rs`, `layer_norm.rs`, `activation.rs`, `rope.rs`,
//! `attention.rs`); computed in the input's dtype.

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

/// x * sigma(x) = x / (1 + exp(-x)). x: any shape.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.div(&(x.neg()?.exp()? + 1.0)?)
}

/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (PyTorch `gelu(approximate="tanh")`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let u = ((x + (x.powf(3.0)? * 0.044_715)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
    ((x * 0.5)? * (u.tanh()? + 1.0)?)?.contiguous()
}

/// silu(gate) * up. gate, up: the same shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    silu(gate)? * up
}

/// Rotary embedding of x: (B, H, T, D) with cos, sin: (T, D/2) -> (B, H, T, D), from
/// narrow/cat/broadcast ops; same pairs and checks as `kernels::rope`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: crate::RopeLayout) -> Result<Tensor> {
    crate::rope::check(x, cos, sin)?;
    let (b, h, t, d) = x.dims4()?;
    let (c, s) = (
        cos.unsqueeze(0)?.unsqueeze(0)?,
        sin.unsqueeze(0)?.unsqueeze(0)?,
    );
    match layout {
        crate::RopeLayout::Half => {
            let (x1, x2) = (x.narrow(3, 0, d / 2)?, x.narrow(3, d / 2, d / 2)?);
            let y1 = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
            let y2 = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
            Tensor::cat(&[y1, y2], 3)
        }
        crate::RopeLayout::Interleaved => {
            let xp = x.reshape((b, h, t, d / 2, 2))?;
            let (x0, x1) = (
                xp.narrow(4, 0, 1)?.squeeze(4)?,
                xp.narrow(4, 1, 1)?.squeeze(4)?,
            );
            let y0 = (x0.broadcast_mul(&c)? - x1.broadcast_mul(&s)?)?;
            let y1 = (x0.broadcast_mul(&s)? + x1.broadcast_mul(&c)?)?;
            Tensor::stack(&[y0, y1], 4)?.reshape((b, h, t, d))
        }
    }
}

/// softmax(scale · q·kᵀ + mask + causal mask) · v over (B, H, T, D), from matmul, a repeat of
/// the kv heads (grouped-query attention) and `softmax_last_dim` above; same shapes, checks
/// and semantics as `kernels::attention` (causal: key j hidden from row i when
/// j > Tk - Tq + i). Unlike the fused op, a row whose keys are all masked gives NaN here.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &crate::AttentionOpts,
) -> Result<Tensor> {
    let dims = crate::attention::check(q, k, v)?;
    let crate::attention::Dims {
        b,
        h,
        hkv,
        tq,
        tk,
        d,
    } = dims;
    let g = h / hkv;
    let repeat = |t: &Tensor| -> Result<Tensor> {
        match g {
            1 => t.contiguous(),
            _ => t
                .unsqueeze(2)?
                .broadcast_as((b, hkv, g, tk, d))?
                .reshape((b, h, tk, d)),
        }
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scale = opts.scale.unwrap_or(1.0 / (d.max(1) as f64).sqrt());
    let mut s = (q.contiguous()?.matmul(&k.t()?)? * scale)?;
    if let Some(m) = opts.mask {
        crate::attention::check_mask(m, ("q", q), &dims)?;
        s = s.broadcast_add(&m.to_dtype(s.dtype())?)?;
    }
    if opts.causal {
        let hidden: Vec<f32> = (0..tq * tk)
            .map(|x| {
                let (i, j) = (x / tk, x % tk);
                if j as isize > tk as isize - tq as isize + i as isize {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let hidden = Tensor::from_vec(hidden, (tq, tk), q.device())?.to_dtype(s.dtype())?;
        s = s.broadcast_add(&hidden)?;
    }
    softmax_last_dim(&s)?.matmul(&v)
}

/// x Wᵀ + b from candle ops: x flattened to (N, in), a 2-D matmul with the transposed weight,
/// a broadcast add, the leading dims restored; same shapes and checks as `kernels::linear`.
/// x: (…, in), weight: (out, in), bias: (out) or none -> (…, out).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    crate::linear::check(x, weight, bias)?;
    let (out, inp) = weight.dims2()?;
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out;
    }
    let y = x.reshape(((), inp))?.matmul(&weight.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b)?.reshape(shape),
        None => y.reshape(shape),
    }
}
