//! The frozen image autoencoder of latent-space DiT configs (DESIGN.md, "Style-conditioned
//! diffusion transformer": pixel space for tiny and demo configs, latents through a frozen VAE
//! where a config names one). FLUX's KL autoencoder (Black Forest Labs 2024,
//! `flux/modules/autoencoder.py`; 16 latent channels, 8x down-sampling), the layout of
//! Qwen-Image's latents, built from candle-transformers' `flux::autoencoder` encoder and decoder
//! as they are: no gradient flows through a frozen model, so its fused ops are fine here.
//!
//! We wrap the two halves instead of using candle-transformers' `AutoEncoder` because its
//! `encode` draws the posterior sample from the device RNG, unseeded: training inputs would
//! differ from run to run. Here `encode` returns the posterior mean (what latent caches and
//! diffusers' `latent_dist.mode()` use), so a resumed run sees the same latents.
//!
//! images (B, 3, H, W) in [-1, 1] -> `encode` -> (B, z, H/f, W/f), f = 2^(levels - 1),
//! scaled as FLUX trains on them, (z - shift) * scale, about unit variance;
//! `decode` inverts the scaling and returns (B, 3, H, W) in about [-1, 1].
//!
//! Tensor names are FLUX's `ae.safetensors` (`encoder.down.0.block.0.conv1.weight`, ...).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::autoencoder::{self as flux_ae, Decoder, Encoder};
use serde::{Deserialize, Serialize};

use crate::config::rules::Rules;
use crate::models::init::tensor_rng;

/// The seed of random (weightless) autoencoders: "VAE".
const VAE_SEED: u64 = 0x0056_4145;

/// `vae:` the frozen autoencoder of a latent-space config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaeConfig {
    /// FLUX `ae.safetensors`; empty: seeded random weights (tests and smoke runs only: a
    /// random autoencoder does not reconstruct anything).
    pub weights: std::path::PathBuf,
    /// Latent channels (FLUX: 16); the DiT's `model.in_channels`.
    pub z_channels: usize,
    /// Width of the first level; GroupNorm's 32 groups need a multiple of 32.
    pub ch: usize,
    /// Width multipliers per level; levels - 1 halvings of the side.
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Latents are (z - shift) * scale (FLUX: 0.1159 and 0.3611).
    pub shift_factor: f64,
    pub scale_factor: f64,
}

impl Default for VaeConfig {
    /// FLUX.1's autoencoder (`flux::autoencoder::Config::dev()`).
    fn default() -> Self {
        VaeConfig {
            weights: std::path::PathBuf::new(),
            z_channels: 16,
            ch: 128,
            ch_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            shift_factor: 0.1159,
            scale_factor: 0.3611,
        }
    }
}

impl VaeConfig {
    /// Side reduction of the latents: 2^(levels - 1) (FLUX: 8).
    pub fn downscale(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut r = Rules::new(prefix);
        r.need(self.z_channels > 0, "z_channels", "must be at least 1");
        r.need(
            self.ch > 0 && self.ch.is_multiple_of(32),
            "ch",
            format!(
                "{} must be a positive multiple of 32 (GroupNorm of 32 groups)",
                self.ch
            ),
        );
        r.need(
            !self.ch_mult.is_empty() && self.ch_mult.iter().all(|&m| m > 0),
            "ch_mult",
            "must list at least one positive multiplier",
        );
        r.need(
            self.num_res_blocks > 0,
            "num_res_blocks",
            "must be at least 1",
        );
        r.need(
            self.scale_factor > 0.0 && self.scale_factor.is_finite(),
            "scale_factor",
            "must be a positive number",
        );
        r.into_vec()
    }

    fn flux(&self) -> flux_ae::Config {
        flux_ae::Config {
            resolution: 256,
            in_channels: 3,
            ch: self.ch,
            out_ch: 3,
            ch_mult: self.ch_mult.clone(),
            num_res_blocks: self.num_res_blocks,
            z_channels: self.z_channels,
            scale_factor: self.scale_factor,
            shift_factor: self.shift_factor,
        }
    }
}

/// A frozen image autoencoder.
pub struct Vae {
    cfg: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
}

impl Vae {
    /// `vb` holds `encoder.*` and `decoder.*` (FLUX's names).
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let problems = cfg.problems("vae");
        if let Some((k, m)) = problems.first() {
            bail!("{k}: {m}");
        }
        let f = cfg.flux();
        Ok(Vae {
            cfg: cfg.clone(),
            encoder: Encoder::new(&f, vb.pp("encoder")).context("the VAE encoder")?,
            decoder: Decoder::new(&f, vb.pp("decoder")).context("the VAE decoder")?,
        })
    }

    /// The weights `cfg.weights` names, or seeded random ones: convolution kernels normal
    /// with std 1/sqrt(fan-in) from a stream per tensor name, biases 0, norms at their
    /// constant init (candle's CPU RNG cannot be seeded, so every build overwrites them).
    pub fn load(cfg: &VaeConfig, dev: &Device) -> Result<Self> {
        if cfg.weights.as_os_str().is_empty() {
            let varmap = candle_nn::VarMap::new();
            let vae = Self::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
            for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
                let dims = var.dims().to_vec();
                if name.contains("norm") {
                    continue;
                }
                let value = if dims.len() < 2 {
                    Tensor::zeros(dims.as_slice(), DType::F32, dev)?
                } else {
                    let fan_in: usize = dims[1..].iter().product();
                    let mut rng = tensor_rng(VAE_SEED, name);
                    let std = 1.0 / (fan_in as f32).sqrt();
                    let n: usize = dims.iter().product();
                    let v: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
                    Tensor::from_vec(v, dims.as_slice(), dev)?
                };
                var.set(&value)?;
            }
            return Ok(vae);
        }
        // SAFETY (of the mmap): the file is only read, and not expected to change meanwhile.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&cfg.weights], DType::F32, dev)
                .with_context(|| format!("reading VAE weights {}", cfg.weights.display()))?
        };
        Self::new(cfg, vb).with_context(|| format!("loading {}", cfg.weights.display()))
    }

    /// images (B, 3, H, W) in [-1, 1] -> scaled posterior means (B, z, H/f, W/f).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = images.dims4()?;
        let f = self.cfg.downscale();
        if c != 3 || h % f != 0 || w % f != 0 {
            bail!(
                "VAE input is {:?}: expected (B, 3, H, W) with H and W multiples of {f}",
                images.dims()
            );
        }
        let moments = self.encoder.forward(images)?;
        let mean = moments.narrow(1, 0, self.cfg.z_channels)?;
        Ok(((mean - self.cfg.shift_factor)? * self.cfg.scale_factor)?.detach())
    }

    /// latents (B, z, h, w) -> images (B, 3, h f, w f), about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, z, _, _) = latents.dims4()?;
        if z != self.cfg.z_channels {
            bail!(
                "VAE latents have {z} channels, the autoencoder {}",
                self.cfg.z_channels
            );
        }
        let x = ((latents / self.cfg.scale_factor)? + self.cfg.shift_factor)?;
        Ok(self.decoder.forward(&x)?.detach())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VaeConfig {
        VaeConfig {
            z_channels: 4,
            ch: 32,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            ..VaeConfig::default()
        }
    }

    #[test]
    fn vae_shapes_determinism_and_config_rules() -> Result<()> {
        let dev = &Device::Cpu;
        let cfg = tiny();
        assert_eq!(cfg.downscale(), 2);
        assert_eq!(VaeConfig::default().downscale(), 8);
        let vae = Vae::load(&cfg, dev)?;
        let x = Tensor::rand(-1f32, 1., (2, 3, 16, 16), dev)?;
        let z = vae.encode(&x)?;
        assert_eq!(z.dims(), [2, 4, 8, 8]);
        let again = Vae::load(&cfg, dev)?.encode(&x)?;
        let diff = (&z - &again)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(
            diff, 0.0,
            "the posterior mean of a seeded VAE is deterministic"
        );
        assert_eq!(vae.decode(&z)?.dims(), [2, 3, 16, 16]);
        assert!(vae
            .encode(&Tensor::zeros((1, 3, 15, 16), DType::F32, dev)?)
            .is_err());
        assert!(vae
            .decode(&Tensor::zeros((1, 3, 8, 8), DType::F32, dev)?)
            .is_err());

        let bad = VaeConfig {
            ch: 48,
            ch_mult: vec![],
            ..cfg
        };
        let keys: Vec<String> = bad.problems("vae").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["vae.ch", "vae.ch_mult"]);
        Ok(())
    }
}
