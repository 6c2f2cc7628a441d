//! Per-resolution constants of the vision tower: the window order of the tokens, the 2D
//! rotary tables and the window attention mask. They depend only on the config and the image
//! size, so the encoder builds them once per (H, W) and keeps them.
//!
//! Follows HF `transformers` (`vision_utils.py`: `get_vision_position_ids`,
//! `get_vision_window_index`; `modeling_qwen2_5_vl.py`: `Qwen2_5_VLVisionRotaryEmbedding`) and
//! the Qwen2.5-VL report (Bai et al. 2025, section 2.1: window attention, 2D RoPE).
//!
//! Orders, for a grid of gh x gw patches and m = spatial_merge_size:
//! - *block order* (the HF processor's): the (gh/m) x (gw/m) merged units row-major, each unit's
//!   m x m patches row-major inside it; the output tokens are the units in this order.
//! - *window order*: units grouped by window (windows of `window_units` x `window_units` units,
//!   row-major over windows, row-major inside; the windows at the bottom and right edges are
//!   partial when the grid is not a multiple), the m x m patches of a unit still consecutive.
//!   The blocks run in window order so that a window is a contiguous run of tokens.

use candle_core::{DType, Device, Result, Tensor};

use super::VisionConfig;

/// Constants for one image size; tensors on the encoder's device.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Merged units per column and per row: (H / (p m), W / (p m)).
    pub units_h: usize,
    pub units_w: usize,
    /// (U) u32: the block-order index of the unit at each window-order position.
    pub order: Tensor,
    /// (U) u32: the inverse permutation, window order -> block order.
    pub inverse: Tensor,
    /// (T, D/2) in the model's dtype, T = U m^2 tokens in window order: the angles of the
    /// first D/4 rotated pairs are row * f_k, of the last D/4 column * f_k (HF's
    /// `cat(freq_h, freq_w)`).
    pub cos: Tensor,
    pub sin: Tensor,
    /// (T, T) f32: 0 within a window, -inf across; None when one window covers the image.
    pub window_mask: Option<Tensor>,
}

impl Layout {
    /// Constants for h x w pixel images (multiples of patch * merge; the caller checks).
    pub fn new(cfg: &VisionConfig, h: usize, w: usize, dtype: DType, dev: &Device) -> Result<Self> {
        let m = cfg.spatial_merge_size;
        let (units_h, units_w) = (h / cfg.token_px(), w / cfg.token_px());
        let (order, window_of_unit) = window_order(units_h, units_w, cfg.window_units());
        let mut inverse = vec![0u32; order.len()];
        for (pos, &u) in order.iter().enumerate() {
            inverse[u as usize] = pos as u32;
        }
        // Row and column of every patch, in window order.
        let per_unit = m * m;
        let mut rows = Vec::with_capacity(order.len() * per_unit);
        let mut cols = Vec::with_capacity(order.len() * per_unit);
        for &u in &order {
            let (uh, uw) = (u as usize / units_w, u as usize % units_w);
            for i in 0..m {
                for j in 0..m {
                    rows.push(uh * m + i);
                    cols.push(uw * m + j);
                }
            }
        }
        let (cos, sin) = rope_tables(&rows, &cols, cfg.head_dim(), cfg.rope_theta);
        let t = rows.len();
        let half = cfg.head_dim() / 2;
        let n_windows = window_of_unit.iter().max().map_or(0, |w| w + 1);
        let window_mask = if n_windows > 1 {
            let mut mask = vec![0f32; t * t];
            for i in 0..t {
                for j in 0..t {
                    if window_of_unit[i / per_unit] != window_of_unit[j / per_unit] {
                        mask[i * t + j] = f32::NEG_INFINITY;
                    }
                }
            }
            Some(Tensor::from_vec(mask, (t, t), dev)?)
        } else {
            None
        };
        let u = order.len();
        Ok(Layout {
            units_h,
            units_w,
            order: Tensor::from_vec(order, u, dev)?,
            inverse: Tensor::from_vec(inverse, u, dev)?,
            cos: Tensor::from_vec(cos, (t, half), dev)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (t, half), dev)?.to_dtype(dtype)?,
            window_mask,
        })
    }
}

/// The merged units of a units_h x units_w grid in window order, as block-order indices, and
/// the window of each window-order position. `win` units per window side (>= 1); as HF, the
/// edge windows are partial and no empty window is counted.
pub(crate) fn window_order(units_h: usize, units_w: usize, win: usize) -> (Vec<u32>, Vec<usize>) {
    let mut order = Vec::with_capacity(units_h * units_w);
    let mut window = Vec::with_capacity(units_h * units_w);
    let mut id = 0;
    for r0 in (0..units_h).step_by(win) {
        for c0 in (0..units_w).step_by(win) {
            for r in r0..(r0 + win).min(units_h) {
                for c in c0..(c0 + win).min(units_w) {
                    order.push((r * units_w + c) as u32);
                    window.push(id);
                }
            }
            id += 1;
        }
    }
    (order, window)
}

/// cos and sin tables (T, D/2), row-major, for patches at (rows[t], cols[t]) and head width D.
/// As HF's axial rotary embedding: f_k = 1 / theta^(2k / (D/2)) for k < D/4, in f32 as HF
/// computes it, angles row * f_k then col * f_k.
pub(crate) fn rope_tables(
    rows: &[usize],
    cols: &[usize],
    head_dim: usize,
    theta: f64,
) -> (Vec<f32>, Vec<f32>) {
    let spatial = head_dim / 2;
    let inv_freq: Vec<f32> = (0..spatial / 2)
        .map(|k| 1.0 / (theta as f32).powf((2 * k) as f32 / spatial as f32))
        .collect();
    let n = rows.len() * spatial;
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (&r, &c) in rows.iter().zip(cols) {
        for pos in [r, c] {
            for &f in &inv_freq {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}
