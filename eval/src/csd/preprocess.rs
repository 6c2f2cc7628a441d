//! CSD's image preprocessing (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion
//! Models"; github.com/learn2phoenix/CSD, `CSD/loss_utils.py`, `transforms_branch0`), which is
//! OpenAI CLIP's (Radford et al. 2021; github.com/openai/CLIP, `clip/clip.py`, `_transform`):
//!
//! ```text
//! Resize(224, BICUBIC)  short side -> 224, long side -> floor(224 * long / short)
//! CenterCrop(224)       offsets round((len - 224) / 2), Python's round (half to even)
//! ToTensor()            u8 / 255 -> [0, 1], channel-first
//! Normalize(mean, std)  (x - mean) / std with CLIP's mean and std below
//! ```
//!
//! The resize is PIL's bicubic, bit for bit (`resample.rs`): torchvision's `Resize` on a PIL
//! image calls `Image.resize(.., BICUBIC)`. An image whose size already matches is not
//! resampled (torchvision and PIL return it unchanged).

use candle_core::{Device, Result, Tensor};
use image::imageops;
use image::RgbImage;
use rayon::prelude::*;

use super::resample::resize_bicubic;
use crate::error::EvalError;

/// CLIP's per-channel mean of RGB in [0, 1] (`clip/clip.py`, `_transform`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation of RGB in [0, 1]. The digits as CLIP writes them;
/// they round to the same f32 values torch uses.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// (width, height) after torchvision's `Resize(size)` of a w x h image: the short side
/// becomes `size`, the long side `floor(size * long / short)` (Python's `int(..)`).
/// Meaningful for w, h, size >= 1 (a zero side is treated as 1 rather than dividing by 0).
pub fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    let scaled = |long: u32, short: u32| (size as u64 * long as u64 / short.max(1) as u64) as u32;
    if w <= h {
        (size, scaled(h, w))
    } else {
        (scaled(w, h), size)
    }
}

/// Offset of a centred crop of `size` out of `len` (>= size) as torchvision's `CenterCrop`:
/// `int(round((len - size) / 2))` with Python's round-half-to-even, so len - size = 1 gives 0,
/// 3 gives 2, 5 gives 2. 0 when len < size (torchvision would pad; [`resize_and_crop`] never
/// asks for that).
pub fn center_crop_offset(len: u32, size: u32) -> u32 {
    let d = len.saturating_sub(size);
    let half = d / 2;
    if d.is_multiple_of(2) || half.is_multiple_of(2) {
        half
    } else {
        half + 1
    }
}

/// Resize (short side to `size`, PIL's bicubic) and centre-crop to `size` x `size`. An error naming
/// the image's dimensions when it or `size` is empty or `size` overflows u32.
pub fn resize_and_crop(img: &RgbImage, size: usize) -> std::result::Result<RgbImage, EvalError> {
    let (w, h) = img.dimensions();
    let s = u32::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| EvalError::input("csd preprocess size", format!("{size} is not usable")))?;
    if w == 0 || h == 0 {
        return Err(EvalError::input(
            "csd preprocess image",
            format!("image is {w}x{h}; it needs at least one pixel"),
        ));
    }
    let (rw, rh) = resized_dims(w, h, s);
    let resized;
    let src = if (rw, rh) == (w, h) {
        img
    } else {
        resized = resize_bicubic(img, rw, rh);
        &resized
    };
    let (x0, y0) = (center_crop_offset(rw, s), center_crop_offset(rh, s));
    Ok(imageops::crop_imm(src, x0, y0, s, s).to_image())
}

/// One image as CSD sees it: resize, centre crop, [0, 1], CLIP normalisation.
/// img: any w x h RGB -> (3, size, size) channel-first, row-major. Errors as
/// [`resize_and_crop`].
pub fn preprocess(img: &RgbImage, size: usize) -> std::result::Result<Vec<f32>, EvalError> {
    let crop = resize_and_crop(img, size)?;
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in crop.pixels().enumerate() {
        for c in 0..3 {
            // torchvision: ToTensor divides in f32, Normalize subtracts then divides in f32.
            out[c * plane + i] = (px.0[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    Ok(out)
}

/// Stacks preprocessed images, each (3, size, size) as [`preprocess`] returns them, into one
/// f32 tensor (B, 3, size, size) on `device`. An error naming the first image of the wrong
/// length, or for an empty list.
pub fn batch(images: &[Vec<f32>], size: usize, device: &Device) -> Result<Tensor> {
    if images.is_empty() {
        candle_core::bail!("csd batch: no images");
    }
    let n = 3 * size * size;
    if let Some((i, v)) = images.iter().enumerate().find(|(_, v)| v.len() != n) {
        candle_core::bail!(
            "csd batch: image {i} has {} values, expected 3 x {size} x {size} = {n}",
            v.len()
        );
    }
    let flat: Vec<f32> = images.concat();
    Tensor::from_vec(flat, (images.len(), 3, size, size), device)
}

/// [`preprocess`] of every image (in parallel) then [`batch`]: images -> (B, 3, size, size).
/// An error naming the index of an image that cannot be preprocessed.
pub fn preprocess_batch(images: &[RgbImage], size: usize, device: &Device) -> Result<Tensor> {
    let pre = images
        .par_iter()
        .enumerate()
        .map(|(i, img)| {
            preprocess(img, size).map_err(|e| candle_core::Error::msg(format!("image {i}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    batch(&pre, size, device)
}
