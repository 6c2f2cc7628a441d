//! The parameterised layers the models here share, on the `kernels` ops (which have a
//! backward, unlike candle's fused norms; DESIGN.md, "Rules of the house"). Parameter names
//! are those of `torch.nn.Linear` and the Hugging Face RMSNorm modules (`weight`, `bias`), so
//! a `VarBuilder` over a HF checkpoint loads them as they are.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// `torch.nn.Linear`: y = x Wᵀ + b, weight (out, in), optional bias (out).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (out, inp) and, when `bias`, `bias` (out) under `vb`.
    pub fn new(vb: VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out, inp), "weight")?;
        let bias = if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// x: (…, in) -> (…, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// RMSNorm over the last dim with a gain `weight` (D) (HF `Qwen2RMSNorm`, T5's LayerNorm).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Loads `weight` (dim) under `vb`.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    /// x: (…, D) -> (…, D).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::rms_norm(x, &self.weight, self.eps)
    }
}

/// The gated MLP of HF Llama/Qwen2 (`Qwen2MLP`, Qwen2.5-VL's vision `Qwen2_5_VLMLP`):
/// down(silu(gate(x)) * up(x)), tensors `gate_proj`, `up_proj`, `down_proj`.
#[derive(Debug, Clone)]
pub struct SwiGluMlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl SwiGluMlp {
    /// Width `dim` in and out, `hidden` inside; `bias` on all three projections or none.
    pub fn new(vb: VarBuilder, dim: usize, hidden: usize, bias: bool) -> Result<Self> {
        Ok(SwiGluMlp {
            gate: Linear::new(vb.pp("gate_proj"), dim, hidden, bias)?,
            up: Linear::new(vb.pp("up_proj"), dim, hidden, bias)?,
            down: Linear::new(vb.pp("down_proj"), hidden, dim, bias)?,
        })
    }

    /// x: (…, dim) -> (…, dim).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = kernels::swiglu(&self.gate.forward(x)?, &self.up.forward(x)?)?;
        self.down.forward(&h)
    }
}
