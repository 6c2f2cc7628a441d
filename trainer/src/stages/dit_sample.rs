//! Sampling the style-conditioned DiT (DESIGN.md, "The method" item 2): Euler steps on the
//! rectified-flow ODE d x_t / d t = v(x_t, t) from noise (t = 1) to data (t = 0), with the
//! convention of `dit_flow.rs` (x_t = (1 - t) x0 + t e, v = e - x0).
//!
//! - Schedule: `steps` equal steps in t, each shifted by SD3's t -> alpha t / (1 + (alpha - 1)
//!   t) (Esser et al. 2024, "Scaling Rectified Flow Transformers", section 5.3.2), which is
//!   what diffusers' `FlowMatchEulerDiscreteScheduler` does with a fixed `shift`.
//! - Classifier-free guidance (Ho & Salimans 2022): v = v_u + w (v_c - v_u), optionally
//!   rescaled so each sample keeps the norm of its conditional velocity, as Qwen-Image's
//!   "true CFG" pipeline does (Wu et al. 2025, "Qwen-Image Technical Report"; diffusers'
//!   `QwenImagePipeline`). Large w otherwise inflates the velocity and over-saturates.
//!
//! The sampler never trains: each velocity is detached before it enters x, so no graph grows
//! across steps.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::dit_flow::shift_t;

/// `steps + 1` times from 1.0 (noise) down to 0.0 (data): linear in t, then shifted with
/// [`shift_t`]. The ends are exactly 1 and 0; strictly decreasing for shift > 0.
/// `steps == 0` gives `[1.0]`.
pub fn timesteps(steps: usize, shift: f64) -> Vec<f64> {
    if steps == 0 {
        return vec![1.0];
    }
    (0..=steps)
        .map(|i| shift_t((steps - i) as f64 / steps as f64, shift))
        .collect()
}

/// Classifier-free guidance settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// w: 1 is the conditional velocity alone, 0 the unconditional one, > 1 pushes away from
    /// the unconditional.
    pub scale: f64,
    /// Rescale the guided velocity of each sample to the norm of its conditional velocity.
    pub rescale: bool,
}

/// The guided velocity. cond, uncond: (B, ...) -> (B, ...):
/// v = uncond + scale (cond - uncond); with `rescale`, v_b *= ||cond_b|| / ||v_b|| for each
/// sample b, the norms over all of a sample's elements (computed in f32).
/// `scale == 1` returns `cond` itself (bit for bit, rescaled or not).
pub fn guide(cond: &Tensor, uncond: &Tensor, g: &Guidance) -> Result<Tensor> {
    if cond.dims() != uncond.dims() {
        bail!(
            "conditional velocity has shape {:?}, the unconditional {:?}",
            cond.dims(),
            uncond.dims()
        );
    }
    if g.scale == 1.0 {
        return Ok(cond.clone());
    }
    let v = (uncond + ((cond - uncond)? * g.scale)?)?;
    let b = cond.dim(0)?;
    if !g.rescale || b == 0 {
        return Ok(v);
    }
    // (B, ...) -> (B, 1) L2 norm per sample.
    let norm = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.to_dtype(DType::F32)?
            .reshape((b, x.elem_count() / b))?
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()
    };
    // A zero guided velocity stays zero instead of becoming NaN.
    let ratio = (norm(cond)? / norm(&v)?.maximum(1e-12)?)?;
    let mut shape = vec![1usize; cond.rank()];
    shape[0] = b;
    Ok(v.broadcast_mul(&ratio.to_dtype(v.dtype())?.reshape(shape)?)?)
}

/// Integrates from `noise` (t = 1) to t = 0 with `steps` Euler steps on [`timesteps`]:
/// x <- x + (t_next - t) v(x, t). `velocity` gets the whole batch x_t: (B, C, H, W) and the
/// current t and returns v: (B, C, H, W) (the caller runs the model, and guidance, inside it).
/// x keeps the noise's dtype (pass f32 noise: tens of bf16 additions lose detail).
pub fn euler(
    velocity: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
    noise: Tensor,
    steps: usize,
    shift: f64,
) -> Result<Tensor> {
    if steps == 0 {
        bail!("the sampler needs at least 1 step");
    }
    noise.dims4()?;
    let mut x = noise.detach();
    for w in timesteps(steps, shift).windows(2) {
        let (t, next) = (w[0], w[1]);
        let v = velocity(&x, t).with_context(|| format!("velocity at t = {t}"))?;
        if v.dims() != x.dims() {
            bail!(
                "velocity at t = {t} has shape {:?}, the sample {:?}",
                v.dims(),
                x.dims()
            );
        }
        let v = v.detach().to_dtype(x.dtype())?;
        x = (x + (v * (next - t))?)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::dit_flow::seeded_noise;
    use candle_core::Device;

    fn v(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn dit_sample_timesteps_run_from_noise_to_data() {
        assert_eq!(timesteps(4, 1.0), [1.0, 0.75, 0.5, 0.25, 0.0]);
        assert_eq!(timesteps(0, 3.0), [1.0]);
        assert_eq!(timesteps(2, 3.0), [1.0, 0.75, 0.0]);
        for shift in [0.5, 1.0, 3.0, 3.1] {
            let ts = timesteps(25, shift);
            assert_eq!((ts.len(), ts[0], ts[25]), (26, 1.0, 0.0));
            assert!(ts.windows(2).all(|w| w[1] < w[0]), "{shift}: {ts:?}");
        }
        // A shift above 1 spends the steps nearer the noise.
        let (plain, shifted) = (timesteps(10, 1.0), timesteps(10, 3.0));
        assert!(plain.iter().zip(&shifted).all(|(p, s)| s >= p));
        assert!(shifted[5] > plain[5]);
    }

    #[test]
    fn dit_sample_euler_lands_on_a_single_point_for_any_step_count() -> Result<()> {
        let dev = &Device::Cpu;
        let x0 = Tensor::arange(0f32, 16., dev)?
            .reshape((2, 2, 2, 2))?
            .cos()?;
        for shift in [1.0, 3.0] {
            for steps in [1, 2, 7, 50] {
                let noise = seeded_noise((2, 2, 2, 2), &[4, 5], dev)?;
                let mut seen = Vec::new();
                // The exact velocity of the data distribution {x0}: (x_t - x0) / t = e - x0.
                let mut vel = |x: &Tensor, t: f64| -> Result<Tensor> {
                    assert_eq!(x.dims(), [2, 2, 2, 2], "the whole batch at once");
                    seen.push(t);
                    Ok(((x - &x0)? / t)?)
                };
                let out = euler(&mut vel, noise, steps, shift)?;
                let d = max_diff(&out, &x0);
                assert!(d < 1e-5, "{steps} steps, shift {shift}: off by {d}");
                assert_eq!(seen, timesteps(steps, shift)[..steps]);
            }
        }
        Ok(())
    }

    /// Data N(mu, sigma^2 I), with a^2 = (1-t)^2 sigma^2 + t^2: the exact velocity is
    /// v(x, t) = k (x - (1-t) mu) - mu, k = (t - (1-t) sigma^2) / a^2, and the ODE carries
    /// noise e to mu + sigma e (x_t = (1-t) mu + a(t) e). This checks the direction of time
    /// and the step sizes.
    #[test]
    fn dit_sample_euler_converges_on_a_gaussian() -> Result<()> {
        let dev = &Device::Cpu;
        let (mu, sigma) = (0.5f64, 0.3f64);
        let noise = seeded_noise((1, 3, 4, 4), &[77], dev)?;
        let exact = noise.affine(sigma, mu)?;
        let err = |steps: usize| -> Result<f32> {
            let mut vel = |x: &Tensor, t: f64| -> Result<Tensor> {
                let a2 = (1.0 - t).powi(2) * sigma * sigma + t * t;
                let k = (t - (1.0 - t) * sigma * sigma) / a2;
                Ok(x.affine(k, -k * (1.0 - t) * mu - mu)?)
            };
            Ok(max_diff(
                &euler(&mut vel, noise.clone(), steps, 3.0)?,
                &exact,
            ))
        };
        // Euler is first order: four times the steps, a quarter of the error.
        let (coarse, fine) = (err(100)?, err(400)?);
        let ratio = coarse / fine;
        assert!(
            (3.5..4.5).contains(&ratio) && fine < 0.01,
            "{coarse} {fine}"
        );
        Ok(())
    }

    #[test]
    fn dit_sample_guidance_ends_and_rescaled_norms() -> Result<()> {
        let dev = &Device::Cpu;
        let cond = seeded_noise((2, 2, 3, 3), &[1, 2], dev)?;
        // Sample 1 ten times larger, so a batch-wide norm would fail the check below.
        let scale_rows = Tensor::new(&[1f32, 10.0], dev)?.reshape((2, 1, 1, 1))?;
        let cond = cond.broadcast_mul(&scale_rows)?;
        let uncond = seeded_noise((2, 2, 3, 3), &[3, 4], dev)?;
        for rescale in [false, true] {
            let g = Guidance {
                scale: 1.0,
                rescale,
            };
            assert_eq!(v(&guide(&cond, &uncond, &g)?), v(&cond));
        }
        let g0 = Guidance {
            scale: 0.0,
            rescale: false,
        };
        assert_eq!(v(&guide(&cond, &uncond, &g0)?), v(&uncond));
        let g = Guidance {
            scale: 4.0,
            rescale: false,
        };
        let plain = guide(&cond, &uncond, &g)?;
        let want = (&uncond + ((&cond - &uncond)? * 4.0)?)?;
        assert!(max_diff(&plain, &want) < 1e-6);

        let out = guide(&cond, &uncond, &Guidance { rescale: true, ..g })?;
        for b in 0..2 {
            let n = |t: &Tensor| t.get(b).unwrap().sqr().unwrap().sum_all().unwrap();
            let (got, want) = (n(&out).to_scalar::<f32>()?, n(&cond).to_scalar::<f32>()?);
            assert!((got.sqrt() - want.sqrt()).abs() < 1e-5 * want.sqrt(), "{b}");
            // Same direction as the plain guided velocity: only the length changed.
            let dot = (out.get(b)? * plain.get(b)?)?
                .sum_all()?
                .to_scalar::<f32>()?;
            let pn = n(&plain).to_scalar::<f32>()?.sqrt();
            assert!((dot / (got.sqrt() * pn) - 1.0).abs() < 1e-5, "{b}");
        }
        assert!(guide(&cond, &uncond.get(0)?, &g).is_err());
        Ok(())
    }

    #[test]
    fn dit_sample_euler_is_deterministic_and_checks_its_inputs() -> Result<()> {
        let dev = &Device::Cpu;
        let run = || -> Result<Vec<f32>> {
            let noise = seeded_noise((2, 1, 4, 4), &[8, 9], dev)?;
            let mut vel = |x: &Tensor, t: f64| -> Result<Tensor> { Ok((x.sin()? * t)?) };
            Ok(v(&euler(&mut vel, noise, 12, 3.0)?))
        };
        assert_eq!(run()?, run()?);

        let noise = seeded_noise((1, 1, 2, 2), &[1], dev)?;
        let mut vel = |x: &Tensor, _t: f64| -> Result<Tensor> { Ok(x.clone()) };
        assert!(euler(&mut vel, noise.clone(), 0, 1.0).is_err());
        let mut wrong = |x: &Tensor, _t: f64| -> Result<Tensor> { Ok(x.get(0)?) };
        let e = euler(&mut wrong, noise, 3, 1.0).unwrap_err().to_string();
        assert!(e.contains("t = 1"), "{e}");
        Ok(())
    }
}
