//! Rectified flow matching, the training objective of the style-conditioned DiT (DESIGN.md,
//! "The method" item 2): Liu, Gong & Liu 2022, "Flow Straight and Fast"; Esser et al. 2024,
//! "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (SD3), section
//! 3.1 (logit-normal timestep sampling) and section 5.3.2 (resolution-dependent shift, eq. 23).
//!
//! Convention (SD3's, and Qwen-Image's, whose sigmas run from 1 to 0):
//!
//! ```text
//! x_t = (1 - t) x0 + t e,   e ~ N(0, I),   x0 the (latent) image
//! v   = e - x0              the velocity target, d x_t / d t
//! ```
//!
//! so t = 0 is data and t = 1 is pure noise; sampling integrates from t = 1 down to t = 0
//! (`dit_sample.rs`). The model is trained with || v_theta(x_t, t, c) - v ||^2.
//!
//! Timesteps are logit-normal, t = sigmoid(m + s z) with z ~ N(0, 1), then shifted by
//! t' = alpha t / (1 + (alpha - 1) t): alpha > 1 spends more steps at high noise, which larger
//! images need (their pixels are more redundant, so the same t destroys less; SD3 uses
//! alpha = 3 at 1024 px). Classifier-free guidance needs the model to see dropped
//! conditions: `drop_mask` picks the training examples whose style or prompt is replaced by
//! the empty condition.
//!
//! Every random draw comes from `data::rng` (DESIGN.md, "Determinism"); noise is drawn per
//! image from that image's own seed, so it does not depend on the batch an image is in.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use data::rng::{mix, Rng};

use crate::config::rules::Rules;

/// `flow:` how training examples are noised and their conditions dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// m of the logit-normal timestep density (SD3 section 3.1): the mean of logit(t).
    /// 0 centres the training effort on t = 0.5.
    pub logit_mean: f64,
    /// s of the logit-normal density: the spread of logit(t). SD3's best setting is m = 0,
    /// s = 1.
    pub logit_std: f64,
    /// The resolution-dependent shift alpha (SD3 section 5.3.2): t' = alpha t / (1 + (alpha
    /// - 1) t). 1 is no shift; SD3 uses 3.0 at 1024 px. The sampler must use the same value.
    pub shift: f64,
    /// Probability that a training example's style condition is replaced by the empty one,
    /// so the model also learns the unconditional velocity classifier-free guidance needs.
    pub style_drop: f64,
    /// Probability that a training example's prompt is replaced by the empty prompt.
    pub prompt_drop: f64,
    /// What the network outputs; the loss is on the velocity either way.
    pub prediction: Prediction,
    /// With `prediction: image`, the velocity (x_t - x0_hat) / t divides by max(t, min_t) so
    /// that the loss weight 1/t^2 stays bounded near the data end (Li & He 2025 use 0.05).
    pub min_t: f64,
}

/// What the MMDiT's output stands for. Either way the training loss and the sampler use the
/// velocity; `Image` only changes how it is computed from the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// v = e - x0 directly (SD3, FLUX, Qwen-Image).
    Velocity,
    /// The clean image x0; v = (x_t - x0_hat) / t. Li & He 2025 ("Back to Basics: Let
    /// Denoising Generative Models Denoise") show why a narrow transformer needs this: with
    /// large patches (patch 8 at width 128 has 192 values per token and 128 channels) a
    /// velocity must reproduce the per-pixel noise through the bottleneck and cannot, while
    /// the clean image lies near a low-dimensional manifold and x_t reaches the velocity
    /// untouched. Pixel-space demos predict the image.
    Image,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            logit_mean: 0.0,
            logit_std: 1.0,
            shift: 1.0,
            style_drop: 0.1,
            prompt_drop: 0.1,
            prediction: Prediction::Velocity,
            min_t: 0.05,
        }
    }
}

impl FlowConfig {
    /// Rules beyond the types, as `(key, message)`; `prefix` is this section's dotted key.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut rules = Rules::new(prefix);
        rules.need(
            self.logit_mean.is_finite(),
            "logit_mean",
            format!("{} must be a finite number", self.logit_mean),
        );
        rules.need(
            self.logit_std > 0.0 && self.logit_std.is_finite(),
            "logit_std",
            format!("{} must be a positive number", self.logit_std),
        );
        rules.need(
            self.shift > 0.0 && self.shift.is_finite(),
            "shift",
            format!("{} must be a positive number (1 = no shift)", self.shift),
        );
        rules.need(
            self.min_t > 0.0 && self.min_t < 1.0,
            "min_t",
            format!("{} must be in (0, 1)", self.min_t),
        );
        for (k, p) in [
            ("style_drop", self.style_drop),
            ("prompt_drop", self.prompt_drop),
        ] {
            rules.need(
                (0.0..=1.0).contains(&p),
                k,
                format!("{p} must be a probability in [0, 1]"),
            );
        }
        rules.into_vec()
    }
}

/// The shift t -> alpha t / (1 + (alpha - 1) t), written as alpha t / (alpha t + 1 - t) so that
/// t = 0 and t = 1 map to exactly 0 and 1. Increasing in t for alpha > 0; shift_t(0.5, 3) = 0.75.
pub fn shift_t(t: f64, shift: f64) -> f64 {
    let st = shift * t;
    st / (st + (1.0 - t))
}

/// `n` training timesteps: t = shift_t(sigmoid(m + s z)), z ~ N(0, 1) from `rng` (one
/// `Rng::normal` per draw). In (0, 1) but for f32 rounding, which reaches 1 only when
/// m + s z > ~17 (never for the defaults: Box-Muller's |z| is at most ~8.6).
pub fn sample_timesteps(cfg: &FlowConfig, rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let x = cfg.logit_mean + cfg.logit_std * rng.normal() as f64;
            let t = 1.0 / (1.0 + (-x).exp());
            shift_t(t, cfg.shift) as f32
        })
        .collect()
}

/// The noised input and the velocity target.
/// x0, noise: (B, C, H, W); t: (B) -> x_t = (1 - t) x0 + t noise, v = noise - x0, both
/// (B, C, H, W) in x0's dtype. Exact at the ends: t = 0 gives x0, t = 1 gives the noise.
pub fn noisy(x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, _, _, _) = x0.dims4()?;
    if noise.dims() != x0.dims() {
        bail!(
            "noise has shape {:?}, the images {:?}",
            noise.dims(),
            x0.dims()
        );
    }
    if t.dims() != [b] {
        bail!(
            "timesteps have shape {:?}, expected ({b}) for {b} images",
            t.dims()
        );
    }
    let dtype = x0.dtype();
    let t = t.to_dtype(dtype)?.reshape((b, 1, 1, 1))?;
    let one_minus_t = t.affine(-1.0, 1.0)?;
    let xt = (x0.broadcast_mul(&one_minus_t)? + noise.to_dtype(dtype)?.broadcast_mul(&t)?)?;
    let v = (noise.to_dtype(dtype)? - x0)?;
    Ok((xt, v))
}

/// The velocity the network's output `pred` stands for (see `Prediction`).
/// pred, xt: (B, C, H, W); t: (B) -> (B, C, H, W).
pub fn velocity(cfg: &FlowConfig, pred: Tensor, xt: &Tensor, t: &Tensor) -> Result<Tensor> {
    match cfg.prediction {
        Prediction::Velocity => Ok(pred),
        Prediction::Image => {
            let b = xt.dim(0)?;
            let t = t
                .to_dtype(xt.dtype())?
                .clamp(cfg.min_t, f64::INFINITY)?
                .reshape((b, 1, 1, 1))?;
            Ok((xt - pred)?.broadcast_div(&t)?)
        }
    }
}

/// Label of the noise stream, so a seed used for noise and for something else (the
/// timestep, a crop) gives unrelated draws.
const NOISE_STREAM: u64 = 0x6E6F_6973_6500_0001;

/// Standard normal noise of `shape` = (B, C, H, W), f32 on `dev`: row i is the stream of
/// `Rng::new(mix(seeds[i], NOISE_STREAM))` in (C, H, W) row-major order, so an image's noise
/// depends on its own seed only (the same in a batch of one or of 64, on every machine).
pub fn seeded_noise(
    shape: (usize, usize, usize, usize),
    seeds: &[u64],
    dev: &Device,
) -> Result<Tensor> {
    let (b, c, h, w) = shape;
    if seeds.len() != b {
        bail!("{} noise seeds for a batch of {b}", seeds.len());
    }
    let per = c * h * w;
    let mut buf = vec![0f32; b * per];
    if per > 0 {
        // Rows are independent streams, so filling them in parallel changes nothing.
        buf.par_chunks_mut(per)
            .zip(seeds.par_iter())
            .for_each(|(row, &seed)| {
                let mut rng = Rng::new(mix(seed, NOISE_STREAM));
                row.iter_mut().for_each(|x| *x = rng.normal());
            });
    }
    Ok(Tensor::from_vec(buf, (b, c, h, w), &Device::Cpu)?.to_device(dev)?)
}

/// `n` independent drop decisions, true (drop) with probability `p` (p <= 0 never, p >= 1
/// always). Always consumes exactly `n` draws, so the rest of the stream does not depend on p.
pub fn drop_mask(rng: &mut Rng, n: usize, p: f64) -> Vec<bool> {
    (0..n).map(|_| rng.next_f64() < p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn dit_flow_noisy_is_exact_at_the_ends_and_targets_the_velocity() -> Result<()> {
        let dev = &Device::Cpu;
        let x0 = Tensor::arange(0f32, 24., dev)?
            .reshape((3, 2, 2, 2))?
            .sin()?;
        let e = seeded_noise((3, 2, 2, 2), &[1, 2, 3], dev)?;
        let t = Tensor::new(&[0f32, 1.0, 0.25], dev)?;
        let (xt, vt) = noisy(&x0, &e, &t)?;
        assert_eq!(xt.dims(), [3, 2, 2, 2]);
        assert_eq!(v(&xt.get(0)?), v(&x0.get(0)?), "t = 0 is the data");
        assert_eq!(v(&xt.get(1)?), v(&e.get(1)?), "t = 1 is the noise");
        let (a, b, got) = (v(&x0.get(2)?), v(&e.get(2)?), v(&xt.get(2)?));
        for i in 0..a.len() {
            assert!((got[i] - (0.75 * a[i] + 0.25 * b[i])).abs() < 1e-6);
        }
        assert_eq!(v(&vt), v(&(&e - &x0)?));

        let e = noisy(&x0, &e, &Tensor::new(&[0f32, 1.0], dev)?).unwrap_err();
        assert!(e.to_string().contains("expected (3)"), "{e}");
        let other = Tensor::zeros((3, 2, 2, 1), candle_core::DType::F32, dev)?;
        assert!(noisy(&x0, &other, &t).is_err());
        Ok(())
    }

    #[test]
    fn dit_flow_an_exact_image_prediction_gives_the_exact_velocity() -> Result<()> {
        let dev = &Device::Cpu;
        let x0 = Tensor::arange(0f32, 16., dev)?
            .reshape((2, 2, 2, 2))?
            .cos()?;
        let e = seeded_noise((2, 2, 2, 2), &[4, 5], dev)?;
        let t = Tensor::new(&[0.3f32, 0.9], dev)?;
        let (xt, target) = noisy(&x0, &e, &t)?;
        let image = FlowConfig {
            prediction: Prediction::Image,
            ..FlowConfig::default()
        };
        let got = velocity(&image, x0.clone(), &xt, &t)?;
        let err = v(&(got - &target)?)
            .iter()
            .fold(0f32, |m, d| m.max(d.abs()));
        assert!(err < 1e-5, "{err}");
        // Velocity prediction passes the output through.
        let out = velocity(&FlowConfig::default(), x0.clone(), &xt, &t)?;
        assert_eq!(v(&out), v(&x0));
        // Near the data end the division stops at min_t.
        let t0 = Tensor::new(&[0f32, 0.01], dev)?;
        let (xt0, _) = noisy(&x0, &e, &t0)?;
        let zero = x0.zeros_like()?;
        let got = velocity(&image, zero, &xt0, &t0)?;
        let err = v(&(got - (&xt0 / 0.05)?)?)
            .iter()
            .fold(0f32, |m, d| m.max(d.abs()));
        assert!(err < 1e-5, "divided by min_t = 0.05: {err}");
        Ok(())
    }

    #[test]
    fn dit_flow_timesteps_are_logit_normal_and_shifted() {
        let n = 20_000;
        let cfg = FlowConfig::default();
        let ts = sample_timesteps(&cfg, &mut Rng::new(7), n);
        assert!(ts.iter().all(|&t| t > 0.0 && t < 1.0));
        let mean = ts.iter().map(|&t| t as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(ts, sample_timesteps(&cfg, &mut Rng::new(7), n));
        assert_ne!(ts, sample_timesteps(&cfg, &mut Rng::new(8), n));

        assert_eq!(shift_t(0.5, 3.0), 0.75);
        assert_eq!((shift_t(0.0, 3.0), shift_t(1.0, 3.0)), (0.0, 1.0));
        assert_eq!((shift_t(0.0, 3.1), shift_t(1.0, 3.1)), (0.0, 1.0));
        assert!(
            (shift_t(0.3, 1.0) - 0.3).abs() < 1e-15,
            "shift 1 is the identity"
        );
        let shifted = FlowConfig { shift: 3.0, ..cfg };
        let mut ts = sample_timesteps(&shifted, &mut Rng::new(7), n);
        assert!(ts.iter().all(|&t| t > 0.0 && t < 1.0));
        ts.sort_by(f32::total_cmp);
        let median = ts[n / 2];
        assert!((median - 0.75).abs() < 0.02, "{median}");
    }

    #[test]
    fn dit_flow_noise_rows_follow_their_own_seed() -> Result<()> {
        let dev = &Device::Cpu;
        let batch = seeded_noise((3, 4, 8, 8), &[10, 11, 12], dev)?;
        let one = seeded_noise((1, 4, 8, 8), &[11], dev)?;
        assert_eq!(v(&batch.get(1)?), v(&one.get(0)?));
        assert_eq!(
            v(&batch),
            v(&seeded_noise((3, 4, 8, 8), &[10, 11, 12], dev)?)
        );
        assert_ne!(v(&batch.get(0)?), v(&batch.get(2)?));
        assert!(seeded_noise((2, 1, 1, 1), &[1], dev).is_err());

        let big = v(&seeded_noise((2, 4, 64, 64), &[5, 6], dev)?);
        let n = big.len() as f64;
        let mean = big.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = big.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.03 && (var.sqrt() - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
        Ok(())
    }

    #[test]
    fn dit_flow_drop_mask_rate_and_stream_position() {
        let mut r = Rng::new(3);
        let m = drop_mask(&mut r, 10_000, 0.1);
        let rate = m.iter().filter(|&&d| d).count() as f64 / 10_000.0;
        assert!((rate - 0.1).abs() < 0.015, "{rate}");
        assert_eq!(m, drop_mask(&mut Rng::new(3), 10_000, 0.1));
        assert!(drop_mask(&mut r, 100, 0.0).iter().all(|&d| !d));
        assert!(drop_mask(&mut r, 100, 1.0).iter().all(|&d| d));
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        drop_mask(&mut a, 5, 0.0);
        drop_mask(&mut b, 5, 0.7);
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn dit_flow_config_defaults_and_problems() {
        let cfg = FlowConfig::default();
        assert!(cfg.problems("flow").is_empty());
        assert_eq!((cfg.logit_std, cfg.shift, cfg.style_drop), (1.0, 1.0, 0.1));
        let bad = FlowConfig {
            logit_std: 0.0,
            shift: -1.0,
            style_drop: 1.5,
            ..cfg
        };
        let keys: Vec<String> = bad.problems("flow").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["flow.logit_std", "flow.shift", "flow.style_drop"]);
        let parsed: FlowConfig = serde_json::from_str(r#"{"shift": 3.0}"#).unwrap();
        assert_eq!(parsed, FlowConfig { shift: 3.0, ..cfg });
        assert!(serde_json::from_str::<FlowConfig>(r#"{"shfit": 3.0}"#).is_err());
    }
}
