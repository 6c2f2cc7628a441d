//! Whole-image post effects of the synthetic renderer, applied to the linear buffer of
//! painted pixels after paper grain and before quantising to 8 bits, in a fixed order:
//! separable Gaussian blur, then per pixel posterise, ordered dither (4x4 Bayer threshold
//! matrix), vignette and colour temperature. Every effect's strength comes from the
//! [`Style`]; all are sized relative to the image so a style looks the same at every size.

use super::render::scale_rgb;
use super::style::{Rgb, Style};

/// Separable Gaussian blur with clamped edges; `sigma` in pixels, below 0.3 is a no-op.
pub(super) fn blur(buf: &mut [Rgb], n: usize, sigma: f32) {
    if sigma < 0.3 || n < 2 {
        return;
    }
    let radius = (2.5 * sigma).ceil() as usize;
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|i| (-((i as f32 - radius as f32).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut tmp = vec![[0f32; 3]; buf.len()];
    let clamp = |i: isize| i.clamp(0, n as isize - 1) as usize;
    for row in 0..n {
        for col in 0..n {
            let mut acc = [0f32; 3];
            for (k, w) in kernel.iter().enumerate() {
                let c = buf[row * n + clamp(col as isize + k as isize - radius as isize)];
                (0..3).for_each(|ch| acc[ch] += w * c[ch]);
            }
            tmp[row * n + col] = acc;
        }
    }
    for row in 0..n {
        for col in 0..n {
            let mut acc = [0f32; 3];
            for (k, w) in kernel.iter().enumerate() {
                let c = tmp[clamp(row as isize + k as isize - radius as isize) * n + col];
                (0..3).for_each(|ch| acc[ch] += w * c[ch]);
            }
            buf[row * n + col] = acc;
        }
    }
}

/// 4x4 Bayer matrix, thresholds in (0, 1).
const BAYER4: [[f32; 4]; 4] = [
    [0.0, 8.0, 2.0, 10.0],
    [12.0, 4.0, 14.0, 6.0],
    [3.0, 11.0, 1.0, 9.0],
    [15.0, 7.0, 13.0, 5.0],
];

/// Posterise, dither, vignette and temperature, in that order.
pub(super) fn apply_tone_effects(buf: &mut [Rgb], n: usize, style: &Style) {
    let t = style.temperature;
    let warm = [1.0 + 0.2 * t, 1.0 + 0.04 * t, 1.0 - 0.2 * t];
    for (i, c) in buf.iter_mut().enumerate() {
        let (col, row) = (i % n, i / n);
        if let Some(levels) = style.posterise {
            let q = f32::from(levels - 1);
            *c = c.map(|v| (v.clamp(0.0, 1.0) * q).round() / q);
        }
        if let Some(levels) = style.dither {
            // The Bayer cell scales with the image so the pattern matches at every size.
            let (bx, by) = (col * 64 / n % 4, row * 64 / n % 4);
            let threshold = (BAYER4[by][bx] + 0.5) / 16.0;
            let q = f32::from(levels - 1);
            *c = c.map(|v| {
                (v.clamp(0.0, 1.0) * q + threshold - 0.5)
                    .round()
                    .clamp(0.0, q)
                    / q
            });
        }
        if style.vignette > 0.0 {
            let (x, y) = (
                (col as f32 + 0.5) / n as f32 - 0.5,
                (row as f32 + 0.5) / n as f32 - 0.5,
            );
            let r2 = (x * x + y * y) * 2.0;
            *c = scale_rgb(*c, 1.0 - style.vignette * r2 * r2.sqrt());
        }
        if t != 0.0 {
            *c = [c[0] * warm[0], c[1] * warm[1], c[2] * warm[2]];
        }
    }
}
