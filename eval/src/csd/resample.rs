//! Bicubic resize of an 8-bit RGB image that reproduces PIL's `Image.resize(size,
//! Image.BICUBIC)` bit for bit (Pillow, `src/libImaging/Resample.c`), which is what CSD's
//! `transforms.Resize(224, BICUBIC)` runs on its PIL images (Somepalli et al. 2024,
//! github.com/learn2phoenix/CSD, `CSD/loss_utils.py`; the same as OpenAI CLIP's `_transform`,
//! github.com/openai/CLIP). The `image` crate's `CatmullRom` filter is the same cubic
//! (a = -0.5, widened by the downscale factor) but keeps its intermediate in f32 and does the
//! vertical pass first; on noise that differs from PIL by up to 20 levels (measured, 300 x 200
//! -> 336 x 224), so the descriptor would see other pixels than CSD did.
//!
//! The algorithm, per axis of `in` pixels to `out`: scale = in / out, filterscale =
//! max(scale, 1), support = 2 * filterscale; output pixel i is centred at (i + 0.5) * scale
//! and reads source pixels [trunc(centre - support + 0.5), trunc(centre + support + 0.5))
//! clipped to the image, weighted by cubic((x - centre + 0.5) / filterscale) normalised to sum
//! 1, then rounded to fixed point with 22 fraction bits (half away from zero). A pass sums
//! integer products from 2^21 (rounding), shifts right by 22 (floor) and clamps to [0, 255].
//! The horizontal pass runs first (when the width changes), then the vertical one on its u8
//! result (when the height changes).

use image::RgbImage;

/// Fraction bits of the fixed-point weights (Pillow's `PRECISION_BITS`, 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Keys' cubic convolution kernel with a = -0.5 (Pillow's `bicubic_filter`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of one axis: output pixel i reads `len[i]` source pixels from
/// `start[i]` with weights `w[i * taps..][..len[i]]`.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    taps: usize,
    w: Vec<i32>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `inp` -> `out` pixels.
    fn new(inp: usize, out: usize) -> Taps {
        let scale = inp as f64 / out as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let taps = support.ceil() as usize * 2 + 1;
        let mut t = Taps {
            start: Vec::with_capacity(out),
            len: Vec::with_capacity(out),
            taps,
            w: vec![0; out * taps],
        };
        let mut k = vec![0f64; taps];
        for i in 0..out {
            let centre = (i as f64 + 0.5) * scale;
            // C's (int) casts truncate toward zero, as `as` does.
            let lo = ((centre - support + 0.5) as i64).max(0) as usize;
            let hi = ((centre + support + 0.5) as i64).min(inp as i64) as usize;
            let n = hi - lo;
            let mut sum = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                *kx = bicubic((((x + lo) as f64) - centre + 0.5) / filterscale);
                sum += *kx;
            }
            for (x, kx) in k.iter().enumerate().take(n) {
                let v = if sum != 0.0 { kx / sum } else { *kx };
                let f = v * (1u32 << PRECISION_BITS) as f64;
                t.w[i * taps + x] = if v < 0.0 {
                    (f - 0.5) as i32
                } else {
                    (f + 0.5) as i32
                };
            }
            t.start.push(lo);
            t.len.push(n);
        }
        t
    }

    /// Output pixel i of one channel: `px(j)` reads source pixel j along the axis.
    #[inline]
    fn apply(&self, i: usize, px: impl Fn(usize) -> u8) -> u8 {
        let w = &self.w[i * self.taps..][..self.len[i]];
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (j, wj) in w.iter().enumerate() {
            acc += px(self.start[i] + j) as i64 * *wj as i64;
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// PIL-exact bicubic resize of `img` to `w` x `h` (both at least 1); `img` unchanged when the
/// size already matches.
pub fn resize_bicubic(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let mut cur = img.clone();
    if w != iw {
        let t = Taps::new(iw as usize, w as usize);
        let src = cur.as_raw();
        let stride = iw as usize * 3;
        let mut out = Vec::with_capacity(w as usize * ih as usize * 3);
        for y in 0..ih as usize {
            let row = &src[y * stride..][..stride];
            for x in 0..w as usize {
                for c in 0..3 {
                    out.push(t.apply(x, |j| row[j * 3 + c]));
                }
            }
        }
        cur = RgbImage::from_raw(w, ih, out).expect("w x ih x 3 bytes");
    }
    if h != ih {
        let t = Taps::new(ih as usize, h as usize);
        let src = cur.as_raw();
        let stride = w as usize * 3;
        let mut out = Vec::with_capacity(stride * h as usize);
        for y in 0..h as usize {
            for x in 0..stride {
                out.push(t.apply(y, |j| src[j * stride + x]));
            }
        }
        cur = RgbImage::from_raw(w, h, out).expect("w x h x 3 bytes");
    }
    cur
}
