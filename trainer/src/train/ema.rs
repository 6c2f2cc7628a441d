//! Exponential moving average of the trainable weights, the copy a diffusion model is sampled
//! and exported from (DiT, Peebles & Xie 2023, "Scalable Diffusion Models with Transformers",
//! section 4: EMA with decay 0.9999).
//!
//! After optimiser step `step` (the number of EMA updates made before this one: 0 for the
//! first), every shadow tensor moves towards its parameter:
//!
//! ```text
//! d      = min(decay, (1 + step) / (10 + step))
//! shadow = d * shadow + (1 - d) * param
//! ```
//!
//! The warm-up factor is TensorFlow's `ExponentialMovingAverage(num_updates=..)`; diffusers'
//! `EMAModel` without `use_ema_warmup` uses the same factor, offset by one update. Early on
//! the average follows the fast-moving weights closely (d = 0.1 at step 0, 0.5 at step 8,
//! 0.99 at step 890) instead of remembering the random initialisation for the ~10k steps a
//! bare 0.9999 would need.
//!
//! The shadow is kept in f32 (f64 for f64 parameters) whatever the parameters' dtype, and is
//! updated from detached tensors: no graph is built and the parameters are never written.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, Var};

/// The moving average of a set of named parameters.
pub struct Ema {
    decay: f64,
    /// (name, average), sorted by name; each tensor has its parameter's shape.
    shadow: Vec<(String, Tensor)>,
}

/// The dtype the average of a `dtype` parameter is held in.
fn shadow_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

impl Ema {
    /// Starts the average at a copy of the parameters' current values (sorted by name, as
    /// `AdamW` does, so the order does not depend on how they were collected).
    /// `decay` must lie in [0, 1].
    pub fn new(named: &[(String, Var)], decay: f64) -> Result<Ema> {
        if !(0.0..=1.0).contains(&decay) {
            bail!("EMA decay must lie in [0, 1], got {decay}");
        }
        let mut shadow = named
            .iter()
            .map(|(name, var)| {
                let t = var.as_tensor().detach();
                // A real copy: the optimiser updates parameters in place.
                let t = t.to_dtype(shadow_dtype(t.dtype()))?.copy()?;
                Ok((name.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        shadow.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = shadow.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("parameter `{}` is listed twice for the EMA", w[0].0);
        }
        Ok(Ema { decay, shadow })
    }

    /// The decay the update after `step` earlier updates uses: min(decay, (1+step)/(10+step)).
    pub fn decay_at(&self, step: u64) -> f64 {
        let s = step as f64;
        self.decay.min((1.0 + s) / (10.0 + s))
    }

    /// Moves the average towards the parameters' current values. `named` must hold every
    /// averaged parameter (by name; extra ones are an error too, so a parameter added to the
    /// model after the EMA was built is not silently left out), with unchanged shapes.
    pub fn update(&mut self, named: &[(String, Var)], step: u64) -> Result<()> {
        let d = self.decay_at(step);
        if named.len() != self.shadow.len() {
            bail!(
                "EMA update got {} parameters, but averages {}",
                named.len(),
                self.shadow.len()
            );
        }
        let by_name: HashMap<&str, &Var> = named.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for (name, avg) in &mut self.shadow {
            let var = by_name
                .get(name.as_str())
                .with_context(|| format!("EMA update: no parameter `{name}`"))?;
            if var.dims() != avg.dims() {
                bail!(
                    "EMA update: parameter `{name}` has shape {:?}, the average {:?}",
                    var.dims(),
                    avg.dims()
                );
            }
            // Detached: the result carries no graph back to the parameter.
            let p = var.as_tensor().detach().to_dtype(avg.dtype())?;
            *avg = (avg.affine(d, 0.0)? + p.affine(1.0 - d, 0.0)?)?;
        }
        Ok(())
    }

    /// The averages by parameter name (no prefix: the caller picks the checkpoint's keys).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.shadow.iter().cloned().collect()
    }

    /// Restores averages [`Ema::tensors`] saved, for the same parameters; a missing or
    /// mis-shaped tensor is an error naming it. Extra tensors in `saved` are ignored.
    pub fn load(&mut self, saved: &HashMap<String, Tensor>) -> Result<()> {
        let mut next = Vec::with_capacity(self.shadow.len());
        for (name, avg) in &self.shadow {
            let t = saved
                .get(name)
                .with_context(|| format!("EMA state has no `{name}`"))?;
            if t.dims() != avg.dims() {
                bail!(
                    "EMA state `{name}` has shape {:?}, but the parameter has {:?}",
                    t.dims(),
                    avg.dims()
                );
            }
            let t = t.detach().to_dtype(avg.dtype())?.to_device(avg.device())?;
            next.push((name.clone(), t));
        }
        // All or nothing: a failed load leaves the average as it was.
        self.shadow = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn params(k: f64) -> Result<Vec<(String, Var)>> {
        let dev = &Device::Cpu;
        let w = Tensor::arange(0f32, 6., dev)?
            .reshape((2, 3))?
            .affine(k, 1.0)?;
        let b = Tensor::new(&[0.5f32, -1.5], dev)?.affine(k, 0.0)?;
        Ok(vec![
            ("layer.weight".into(), Var::from_tensor(&w)?),
            ("layer.bias".into(), Var::from_tensor(&b)?),
        ])
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn one_update_at_decay_one_half_is_the_mean() -> Result<()> {
        let ps = params(1.0)?;
        let mut ema = Ema::new(&ps, 0.5)?;
        let before: Vec<Vec<f32>> = ps.iter().map(|(_, v)| values(v.as_tensor())).collect();
        // The optimiser writes in place: the average must have kept its own copy.
        for (_, v) in &ps {
            v.set(&v.as_tensor().affine(3.0, 2.0)?)?;
        }
        // Far past warm-up, d = min(0.5, ...) = 0.5.
        ema.update(&ps, 1000)?;
        let avg = ema.tensors();
        for ((name, v), old) in ps.iter().zip(&before) {
            let want: Vec<f32> = old.iter().map(|&a| (a + (3.0 * a + 2.0)) / 2.0).collect();
            let got = values(&avg[name]);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-6 * w.abs().max(1.0),
                    "{name}: {got:?} vs {want:?}"
                );
            }
            assert!(!avg[name].track_op(), "the average must not carry a graph");
            assert!(v.as_tensor().is_variable());
        }
        Ok(())
    }

    #[test]
    fn warm_up_follows_the_weights_early() -> Result<()> {
        let ps = params(1.0)?;
        let mut ema = Ema::new(&ps, 0.9999)?;
        assert_eq!(ema.decay_at(0), 0.1);
        assert_eq!(ema.decay_at(8), 0.5);
        assert_eq!(ema.decay_at(u64::MAX / 2), 0.9999);
        assert!((ema.decay_at(890) - 0.99).abs() < 1e-12);
        let old = values(ps[1].1.as_tensor());
        ps[1].1.set(&Tensor::new(&[10f32, 20.], &Device::Cpu)?)?;
        ema.update(&ps, 0)?;
        let got = values(&ema.tensors()["layer.bias"]);
        let want = [0.1 * old[0] + 0.9 * 10.0, 0.1 * old[1] + 0.9 * 20.0];
        assert!((got[0] - want[0]).abs() < 1e-5 && (got[1] - want[1]).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn tensors_load_round_trip_and_errors() -> Result<()> {
        let ps = params(1.0)?;
        let mut a = Ema::new(&ps, 0.9)?;
        a.update(&params(2.0)?, 50)?;
        let saved = a.tensors();
        let mut b = Ema::new(&params(-4.0)?, 0.9)?;
        b.load(&saved)?;
        for (name, t) in b.tensors() {
            assert_eq!(values(&t), values(&saved[&name]), "{name}");
        }

        let mut bad = saved.clone();
        bad.insert(
            "layer.bias".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu)?,
        );
        let e = b.load(&bad).unwrap_err().to_string();
        assert!(e.contains("layer.bias") && e.contains("[3]"), "{e}");
        bad.remove("layer.bias");
        let e = b.load(&bad).unwrap_err().to_string();
        assert!(e.contains("no `layer.bias`"), "{e}");
        // A failed load changed nothing.
        assert_eq!(
            values(&b.tensors()["layer.bias"]),
            values(&saved["layer.bias"])
        );

        let e = b.update(&ps[..1], 0).unwrap_err().to_string();
        assert!(e.contains("got 1 parameters"), "{e}");
        let dup = vec![ps[0].clone(), ps[0].clone()];
        assert!(Ema::new(&dup, 0.9).is_err());
        assert!(Ema::new(&ps, 1.5).is_err());
        Ok(())
    }

    #[test]
    fn same_updates_give_bit_identical_averages() -> Result<()> {
        let run = || -> Result<Vec<Vec<f32>>> {
            let ps = params(1.0)?;
            let mut ema = Ema::new(&ps, 0.999)?;
            for step in 0..20u64 {
                for (_, v) in &ps {
                    v.set(&(v.as_tensor().affine(0.9, 0.0)?.sin()? * 1.3)?)?;
                }
                ema.update(&ps, step)?;
            }
            let t = ema.tensors();
            Ok(["layer.bias", "layer.weight"]
                .iter()
                .map(|k| values(&t[*k]))
                .collect())
        };
        assert_eq!(run()?, run()?);
        Ok(())
    }
}
