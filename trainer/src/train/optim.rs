//! AdamW over named parameters, with state a checkpoint can hold (candle_nn's `AdamW` keeps
//! its moments private, so a resumed run would restart them from zero), and global-norm
//! gradient clipping folded into the update.
//!
//! Weight decay applies to matrices and embeddings (rank >= 2) only, never to biases, norm
//! gains or other vectors: the usual rule (GPT-2, nanoGPT, DiT), since decaying a gain pulls
//! it towards 0, not towards its initial 1.
//!
//! The update of each parameter is `kernels::adamw_step` (in place, two passes, no
//! temporaries); on a device it does not cover yet, a composition of tensor ops with the
//! same formula runs instead (`step_with_tensor_ops`, also the reference in the tests).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

/// AdamW's hyper-parameters other than the learning rate, which the schedule sets per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    pub fn from_train(t: &super::TrainConfig) -> Self {
        AdamWConfig {
            betas: t.betas,
            eps: t.eps,
            weight_decay: t.weight_decay,
        }
    }
}

struct Param {
    name: String,
    var: Var,
    /// (2, numel): m and v.
    moments: Tensor,
    decay: bool,
}

pub struct AdamW {
    params: Vec<Param>,
    cfg: AdamWConfig,
    /// Optimiser steps taken (the bias correction's t after the next step is step + 1).
    step: u64,
}

/// What one step saw: the gradient norm before clipping, and parameters without a gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub grad_norm: f64,
    /// Parameters the loss did not reach: candle drops gradients silently through ops
    /// without a backward, so the loop warns about these instead of training them as frozen.
    pub no_grad: Vec<String>,
}

impl AdamW {
    /// Parameters sorted by name, so the state order (and the checkpoint) does not depend
    /// on how they were collected.
    pub fn new(mut named: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        named.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = named.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("parameter `{}` is listed twice", w[0].0);
        }
        let params = named
            .into_iter()
            .map(|(name, var)| {
                let dtype = var.dtype();
                if !matches!(dtype, DType::F32 | DType::F64) {
                    bail!("parameter `{name}` is {dtype:?}; trained parameters must be f32 or f64");
                }
                let moments = Tensor::zeros((2, var.elem_count()), dtype, var.device())?;
                let decay = var.rank() >= 2;
                Ok(Param {
                    name,
                    var,
                    moments,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            cfg,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The L2 norm of all gradients together (f64 accumulation of per-tensor sums).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for p in &self.params {
            if let Some(g) = grads.get(&p.var) {
                sq += g
                    .to_dtype(DType::F32)?
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    /// One step at learning rate `lr`; gradients are scaled so that their global norm is at
    /// most `clip` (0 = no clipping). A non-finite gradient norm is an error and leaves
    /// every parameter and moment untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: f64) -> Result<StepReport> {
        let grad_norm = self.grad_norm(grads)?;
        if !grad_norm.is_finite() {
            bail!(
                "gradient norm is {grad_norm} at optimiser step {}",
                self.step + 1
            );
        }
        let grad_scale = if clip > 0.0 && grad_norm > clip {
            clip / grad_norm
        } else {
            1.0
        };
        self.step += 1;
        let mut no_grad = Vec::new();
        for p in &self.params {
            let Some(g) = grads.get(&p.var) else {
                no_grad.push(p.name.clone());
                continue;
            };
            let s = kernels::AdamWStep {
                lr,
                beta1: self.cfg.betas[0],
                beta2: self.cfg.betas[1],
                eps: self.cfg.eps,
                weight_decay: if p.decay { self.cfg.weight_decay } else { 0.0 },
                step: self.step,
                grad_scale,
            };
            match p.var.device() {
                Device::Cpu => kernels::adamw_step(&p.var, g, &p.moments, &s),
                _ => step_with_tensor_ops(&p.var, g, &p.moments, &s),
            }
            .with_context(|| format!("AdamW update of `{}`", p.name))?;
        }
        Ok(StepReport { grad_norm, no_grad })
    }

    /// The state to checkpoint: `{name}.m`, `{name}.v` per parameter and `step`.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            out.insert(
                format!("{}.m", p.name),
                p.moments.get(0)?.reshape(p.var.shape())?,
            );
            out.insert(
                format!("{}.v", p.name),
                p.moments.get(1)?.reshape(p.var.shape())?,
            );
        }
        out.insert(
            "step".into(),
            Tensor::new(&[self.step as i64], &Device::Cpu)?,
        );
        Ok(out)
    }

    /// Restores what [`AdamW::state`] saved, for the same parameters; a missing or
    /// mis-shaped tensor is an error naming it (a run resumed with a different model).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| {
            state
                .get(k)
                .with_context(|| format!("optimiser state has no `{k}`"))
        };
        let step = get("step")?.to_vec1::<i64>()?;
        let [step] = step[..] else {
            bail!("optimiser state `step` must hold one value");
        };
        for p in &mut self.params {
            let mut rows = Vec::with_capacity(2);
            for part in ["m", "v"] {
                let k = format!("{}.{part}", p.name);
                let t = get(&k)?;
                if t.dims() != p.var.dims() {
                    bail!(
                        "optimiser state `{k}` has shape {:?}, but the parameter has {:?}",
                        t.dims(),
                        p.var.dims()
                    );
                }
                rows.push(
                    t.to_dtype(p.var.dtype())?
                        .to_device(p.var.device())?
                        .flatten_all()?,
                );
            }
            p.moments = Tensor::stack(&rows, 0)?;
        }
        self.step = u64::try_from(step).context("optimiser state `step` is negative")?;
        Ok(())
    }
}

/// The same update as `kernels::adamw_step`, from tensor ops (any device; the reference).
pub fn step_with_tensor_ops(
    p: &Var,
    g: &Tensor,
    moments: &Tensor,
    s: &kernels::AdamWStep,
) -> candle_core::Result<()> {
    let g = (g.flatten_all()? * s.grad_scale)?;
    let m = ((moments.get(0)? * s.beta1)? + (&g * (1.0 - s.beta1))?)?;
    let v = ((moments.get(1)? * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let t = s.step as i32;
    let mh = (&m / (1.0 - s.beta1.powi(t)))?;
    let vh = (&v / (1.0 - s.beta2.powi(t)))?;
    let upd = (mh / (vh.sqrt()? + s.eps)?)?.reshape(p.shape())?;
    let next = ((p.as_tensor() * (1.0 - s.lr * s.weight_decay))? - (upd * s.lr)?)?;
    p.set(&next)?;
    // Writes through `moments` in place, like the kernel.
    moments.slice_set(&Tensor::stack(&[m, v], 0)?, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(dev: &Device) -> Result<Vec<(String, Var)>> {
        let w = Tensor::arange(0f32, 12., dev)?.reshape((3, 4))?.sin()?;
        let b = Tensor::arange(0f32, 4., dev)?.cos()?;
        Ok(vec![
            ("layer.weight".into(), Var::from_tensor(&w)?),
            ("layer.bias".into(), Var::from_tensor(&b)?),
        ])
    }

    /// A loss that reaches both parameters with different gradients each step.
    fn grads(ps: &[(String, Var)], k: f64) -> Result<GradStore> {
        let x = Tensor::arange(0f32, 4., &Device::Cpu)?.affine(k, 0.5)?;
        let y = ps[0].1.matmul(&x.unsqueeze(1)?)?.squeeze(1)?.sum_all()?;
        let loss = (y.sqr()? + ps[1].1.sqr()?.sum_all()?)?;
        Ok(loss.backward()?)
    }

    const CFG: AdamWConfig = AdamWConfig {
        betas: [0.9, 0.95],
        eps: 1e-8,
        weight_decay: 0.1,
    };

    #[test]
    fn kernel_path_matches_tensor_ops_with_clipping_and_decay_rules() -> Result<()> {
        let dev = &Device::Cpu;
        let (a, b) = (params(dev)?, params(dev)?);
        let mut opt = AdamW::new(a.clone(), CFG)?;
        let mut moments: Vec<Tensor> = b
            .iter()
            .map(|(_, v)| Tensor::zeros((2, v.elem_count()), DType::F32, dev))
            .collect::<candle_core::Result<_>>()?;
        for step in 1..=4u64 {
            let k = step as f64 * 0.3;
            let rep = opt.step(&grads(&a, k)?, 1e-2, 0.5)?;
            assert!(rep.no_grad.is_empty());
            // The reference: same norm, same clip, decay on the matrix only.
            let gb = grads(&b, k)?;
            let norm = opt_norm(&b, &gb)?;
            assert!((norm - rep.grad_norm).abs() < 1e-4 * norm.max(1.0));
            for ((name, v), m) in b.iter().zip(&mut moments) {
                let s = kernels::AdamWStep {
                    lr: 1e-2,
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    weight_decay: if name.ends_with("weight") { 0.1 } else { 0.0 },
                    step,
                    grad_scale: if norm > 0.5 { 0.5 / norm } else { 1.0 },
                };
                step_with_tensor_ops(v, gb.get(v).unwrap(), m, &s)?;
            }
        }
        for ((_, va), (_, vb)) in a.iter().zip(&b) {
            let d = (va.as_tensor() - vb.as_tensor())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-6, "kernel and tensor-op AdamW differ by {d}");
        }
        Ok(())
    }

    fn opt_norm(ps: &[(String, Var)], g: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for (_, v) in ps {
            sq += g.get(v).unwrap().sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        Ok(sq.sqrt())
    }

    #[test]
    fn state_round_trip_resumes_identically() -> Result<()> {
        let dev = &Device::Cpu;
        let (a, b) = (params(dev)?, params(dev)?);
        let mut first = AdamW::new(a.clone(), CFG)?;
        first.step(&grads(&a, 0.3)?, 1e-2, 0.0)?;
        // A second optimiser over equal parameters takes over from the first's state.
        for ((_, vb), (_, va)) in b.iter().zip(&a) {
            vb.set(va.as_tensor())?;
        }
        let mut second = AdamW::new(b.clone(), CFG)?;
        second.load_state(&first.state()?)?;
        assert_eq!(second.steps_taken(), 1);
        first.step(&grads(&a, 0.6)?, 1e-2, 0.0)?;
        second.step(&grads(&b, 0.6)?, 1e-2, 0.0)?;
        for ((_, va), (_, vb)) in a.iter().zip(&b) {
            let d = (va.as_tensor() - vb.as_tensor())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(d, 0.0);
        }
        Ok(())
    }

    #[test]
    fn bad_state_and_gradients_are_errors() -> Result<()> {
        let dev = &Device::Cpu;
        let a = params(dev)?;
        let mut opt = AdamW::new(a.clone(), CFG)?;
        let mut st = opt.state()?;
        st.insert("layer.bias.m".into(), Tensor::zeros(5, DType::F32, dev)?);
        let e = opt.load_state(&st).unwrap_err().to_string();
        assert!(e.contains("layer.bias.m") && e.contains("[5]"), "{e}");
        st.remove("layer.bias.m");
        let e = opt.load_state(&st).unwrap_err().to_string();
        assert!(e.contains("no `layer.bias.m`"), "{e}");

        let nan = (a[1].1.sum_all()? * f64::NAN)?;
        let before = a[0].1.flatten_all()?.to_vec1::<f32>()?;
        let e = opt
            .step(&nan.backward()?, 1e-2, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN") && e.contains("step 1"), "{e}");
        assert_eq!(a[0].1.flatten_all()?.to_vec1::<f32>()?, before);
        assert_eq!(opt.steps_taken(), 0);

        // Only the bias is reached: the weight is reported, not updated.
        let rep = opt.step(&a[1].1.sum_all()?.backward()?, 1e-2, 0.0)?;
        assert_eq!(rep.no_grad, vec!["layer.weight".to_string()]);
        assert_eq!(a[0].1.flatten_all()?.to_vec1::<f32>()?, before);

        let dup = vec![a[0].clone(), a[0].clone()];
        assert!(AdamW::new(dup, CFG).is_err());
        Ok(())
    }
}
