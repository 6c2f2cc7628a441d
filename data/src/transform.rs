//! Image -> model input: resize the short side (antialiased triangle filter, as Pillow's
//! `BILINEAR` when shrinking), crop a square, scale to [0, 1] and normalise with the configured
//! mean and std, written straight into a channel-first f32 buffer (C, H, W).
//!
//! One fused pass per image instead of resize -> crop -> to-float -> normalise -> transpose:
//! only the cropped region is resampled, and no intermediate image is allocated per step.

use image::RgbImage;

use crate::config::{Crop, DataConfig};
use crate::rng::{mix, Rng};

#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Output side (the crop).
    pub size: u32,
    /// Short side after resizing (>= size).
    pub resize: u32,
    pub crop: Crop,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Resampling taps of one output coordinate: `weights[k]` applies to source index `start + k`.
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

impl Transform {
    /// Evaluation transforms always crop the centre, whatever the config says.
    pub fn from_config(cfg: &DataConfig, train: bool) -> Transform {
        Transform {
            size: cfg.image_size,
            resize: if cfg.resize == 0 {
                cfg.image_size
            } else {
                cfg.resize
            },
            crop: if train { cfg.crop } else { Crop::Center },
            mean: cfg.mean,
            std: cfg.std,
        }
    }

    /// Floats per output image: 3 * size * size.
    pub fn output_len(&self) -> usize {
        3 * (self.size as usize) * (self.size as usize)
    }

    /// Writes the (3, size, size) result into `out`. `crop_seed` picks the random crop's offset
    /// (the loader derives it from seed, epoch and position, so a resumed run crops the same).
    pub fn apply_into(&self, img: &RgbImage, crop_seed: u64, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.output_len(),
            "output buffer has the wrong length"
        );
        let (w, h) = (img.width() as usize, img.height() as usize);
        let size = self.size as usize;
        // Resized dimensions: the short side becomes `resize`, the long side keeps the ratio.
        let scale = self.resize as f64 / w.min(h) as f64;
        let rw = ((w as f64 * scale).round() as usize).max(size);
        let rh = ((h as f64 * scale).round() as usize).max(size);
        let (ox, oy) = match self.crop {
            Crop::Center => ((rw - size) / 2, (rh - size) / 2),
            Crop::Random => {
                let mut rng = Rng::new(mix(crop_seed, 0x5eed_c409));
                (
                    rng.below((rw - size + 1) as u64) as usize,
                    rng.below((rh - size + 1) as u64) as usize,
                )
            }
        };
        // Per channel, normalised = pixel * a + b with pixel in 0..=255.
        let a: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let b: [f32; 3] = std::array::from_fn(|c| -self.mean[c] / self.std[c]);
        let plane = size * size;
        let src = img.as_raw();

        if rw == w && rh == h {
            // No resampling: copy the crop.
            for y in 0..size {
                let row = &src[((y + oy) * w + ox) * 3..((y + oy) * w + ox + size) * 3];
                for (x, px) in row.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[c * plane + y * size + x] = px[c] as f32 * a[c] + b[c];
                    }
                }
            }
            return;
        }

        let xs = taps(w, rw, ox, size);
        let ys = taps(h, rh, oy, size);
        // Horizontal pass over only the source rows the vertical taps touch: (rows, size, 3).
        let row_lo = ys.first().map_or(0, |t| t.start);
        let row_hi = ys.last().map_or(0, |t| t.start + t.weights.len());
        let mut horiz = vec![0f32; (row_hi - row_lo) * size * 3];
        for (r, sy) in (row_lo..row_hi).enumerate() {
            let src_row = &src[sy * w * 3..(sy + 1) * w * 3];
            let dst = &mut horiz[r * size * 3..(r + 1) * size * 3];
            for (x, t) in xs.iter().enumerate() {
                let mut acc = [0f32; 3];
                for (k, wt) in t.weights.iter().enumerate() {
                    let p = &src_row[(t.start + k) * 3..(t.start + k) * 3 + 3];
                    acc[0] += p[0] as f32 * wt;
                    acc[1] += p[1] as f32 * wt;
                    acc[2] += p[2] as f32 * wt;
                }
                dst[x * 3..x * 3 + 3].copy_from_slice(&acc);
            }
        }
        // Vertical pass, normalise, and scatter to channel-first planes.
        let mut line = vec![0f32; size * 3];
        for (y, t) in ys.iter().enumerate() {
            line.iter_mut().for_each(|v| *v = 0.0);
            for (k, wt) in t.weights.iter().enumerate() {
                let r = t.start + k - row_lo;
                let src_line = &horiz[r * size * 3..(r + 1) * size * 3];
                for (acc, v) in line.iter_mut().zip(src_line) {
                    *acc += v * wt;
                }
            }
            for x in 0..size {
                for c in 0..3 {
                    // Clamp as an 8-bit resize would, so both paths see the same value range.
                    let v = line[x * 3 + c].clamp(0.0, 255.0);
                    out[c * plane + y * size + x] = v * a[c] + b[c];
                }
            }
        }
    }

    /// Convenience: a fresh buffer.
    pub fn apply(&self, img: &RgbImage, crop_seed: u64) -> Vec<f32> {
        let mut out = vec![0f32; self.output_len()];
        self.apply_into(img, crop_seed, &mut out);
        out
    }
}

/// Triangle-filter taps for output indices `offset..offset + count` of a `src -> dst` resize.
/// When shrinking, the filter widens by the scale factor so that every source pixel
/// contributes (antialiasing), as Pillow does.
fn taps(src: usize, dst: usize, offset: usize, count: usize) -> Vec<Taps> {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    (offset..offset + count)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(src);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|j| {
                    let d = ((j as f64 + 0.5 - center) / support).abs();
                    (1.0 - d).max(0.0) as f32
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            Taps { start: lo, weights }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(size: u32, resize: u32, crop: Crop) -> Transform {
        Transform {
            size,
            resize,
            crop,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    #[test]
    fn identity_size_normalises_and_transposes() {
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(1, 0, image::Rgb([255, 0, 51]));
        let out = tf(2, 2, Crop::Center).apply(&img, 0);
        // Channel planes of 4; pixel (x=1, y=0) is index 1 of each plane.
        assert_eq!(out[1], 1.0);
        assert_eq!(out[4 + 1], -1.0);
        assert!((out[8 + 1] - (51.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        assert_eq!(out[0], -1.0);
    }

    #[test]
    fn constant_image_stays_constant_after_resize() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 100, 0]));
        let out = tf(8, 11, Crop::Random).apply(&img, 42);
        let expect = [200.0, 100.0, 0.0].map(|v: f32| (v / 255.0 - 0.5) / 0.5);
        for (i, v) in out.iter().enumerate() {
            assert!((v - expect[i / 64]).abs() < 1e-5, "index {i}: {v}");
        }
    }

    #[test]
    fn downscale_by_two_averages_blocks() {
        // A 4x4 checkerboard of 0/255 becomes uniform grey at 2x2 (each tap sees both colours).
        let img = RgbImage::from_fn(4, 4, |x, y| {
            if (x + y) % 2 == 0 {
                image::Rgb([255; 3])
            } else {
                image::Rgb([0; 3])
            }
        });
        let out = Transform {
            size: 2,
            resize: 2,
            crop: Crop::Center,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
        .apply(&img, 0);
        for v in out {
            assert!((v - 0.5).abs() < 0.13, "{v}");
        }
    }

    #[test]
    fn centre_crop_of_wide_image_takes_the_middle() {
        // 6x2 image, columns 2 and 3 white: the centre 2x2 crop is all white.
        let img = RgbImage::from_fn(6, 2, |x, _| {
            if x == 2 || x == 3 {
                image::Rgb([255; 3])
            } else {
                image::Rgb([0; 3])
            }
        });
        let out = tf(2, 2, Crop::Center).apply(&img, 0);
        assert!(out.iter().all(|v| *v == 1.0));
    }

    #[test]
    fn random_crop_is_seeded() {
        let img = RgbImage::from_fn(40, 40, |x, y| image::Rgb([x as u8 * 6, y as u8 * 6, 0]));
        let t = tf(16, 40, Crop::Random);
        assert_eq!(t.apply(&img, 7), t.apply(&img, 7));
        let distinct = (0..8).map(|s| t.apply(&img, s)).collect::<Vec<_>>();
        assert!(
            distinct.windows(2).any(|w| w[0] != w[1]),
            "random crops never moved"
        );
    }
}
