//! Palette construction for synthetic styles: the colour-harmony schemes (hue offsets on the
//! colour wheel: mono, analogous, complementary, triadic, split-complementary, tetradic), HSL to
//! sRGB conversion, Rec. 709 luma (ITU-R BT.709 coefficients) to judge light versus dark, and
//! the visibility adjustment that keeps every shape colour a luminance gap of 0.2 away from the
//! background. The palette is the first of a style's factors (see `style.rs`).

use serde::Serialize;

use super::style::{factor, factor_rng};

/// An sRGB colour with channels in [0, 1].
pub type Rgb = [f32; 3];

/// How the palette's hues relate to its base hue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Harmony {
    Mono,
    Analogous,
    Complementary,
    Triadic,
    SplitComplementary,
    Tetradic,
}

impl Harmony {
    const ALL: [Harmony; 6] = [
        Harmony::Mono,
        Harmony::Analogous,
        Harmony::Complementary,
        Harmony::Triadic,
        Harmony::SplitComplementary,
        Harmony::Tetradic,
    ];

    /// Hue offsets in degrees from the base hue, cycled over the palette's colours.
    fn hue_offsets(self) -> &'static [f32] {
        match self {
            Harmony::Mono => &[0.0],
            Harmony::Analogous => &[0.0, 35.0, -35.0, 70.0],
            Harmony::Complementary => &[0.0, 180.0],
            Harmony::Triadic => &[0.0, 120.0, 240.0],
            Harmony::SplitComplementary => &[0.0, 150.0, 210.0],
            Harmony::Tetradic => &[0.0, 90.0, 180.0, 270.0],
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Harmony::Mono => "mono",
            Harmony::Analogous => "analogous",
            Harmony::Complementary => "complementary",
            Harmony::Triadic => "triadic",
            Harmony::SplitComplementary => "split-complementary",
            Harmony::Tetradic => "tetradic",
        }
    }
}

/// Shape colours. A scene's `colour_slot` picks `colours[slot % colours.len()]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Palette {
    pub harmony: Harmony,
    /// Degrees in [0, 360).
    pub base_hue: f32,
    /// (low, high) HSL saturation band the colours are drawn from.
    pub saturation: (f32, f32),
    /// (low, high) HSL lightness band the colours are drawn from.
    pub lightness: (f32, f32),
    /// 3 to 5 fill colours.
    pub colours: Vec<Rgb>,
    /// A saturated contrasting colour for outlines.
    pub accent: Rgb,
}

/// HSL to sRGB; `hue` in degrees (any value), `s` and `l` in [0, 1].
pub fn hsl(hue: f32, s: f32, l: f32) -> Rgb {
    let h = hue.rem_euclid(360.0) / 60.0;
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [r + m, g + m, b + m]
}

/// Rec. 709 luma of an sRGB colour (good enough to judge light versus dark).
pub fn luminance(c: Rgb) -> f32 {
    0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
}

/// Draws the palette; colours are returned as HSL triples too, for [`keep_apart_from`].
pub(super) fn draw_palette(seed: u64) -> (Palette, Vec<[f32; 3]>) {
    let mut rng = factor_rng(seed, factor::PALETTE);
    let harmony = *rng.pick(&Harmony::ALL);
    let base_hue = rng.range_f32(0.0, 360.0);
    let saturation = *rng.pick(&[(0.25, 0.45), (0.5, 0.7), (0.75, 1.0), (0.8, 1.0)]);
    let lightness = *rng.pick(&[(0.22, 0.38), (0.4, 0.58), (0.6, 0.78), (0.25, 0.75)]);
    let count = 3 + rng.below(3) as usize;
    let offsets = harmony.hue_offsets();
    let hsl_colours: Vec<[f32; 3]> = (0..count)
        .map(|i| {
            let hue = base_hue + offsets[i % offsets.len()] + rng.range_f32(-8.0, 8.0);
            let s = rng.range_f32(saturation.0, saturation.1);
            // Spread lightness evenly so colours of one hue still differ (mono palettes).
            let t = (i as f32 + rng.range_f32(0.0, 0.6)) / count as f32;
            let l = lightness.0 + (lightness.1 - lightness.0) * t;
            [hue, s, l]
        })
        .collect();
    let colours = hsl_colours.iter().map(|&[h, s, l]| hsl(h, s, l)).collect();
    let accent_hue = match harmony {
        Harmony::Mono | Harmony::Analogous => base_hue + 180.0,
        _ => base_hue + offsets[1 % offsets.len()] + 20.0,
    };
    let palette = Palette {
        harmony,
        base_hue,
        saturation,
        lightness,
        colours,
        accent: hsl(accent_hue, 0.95, 0.5),
    };
    (palette, hsl_colours)
}

/// Moves each colour's lightness away from the background's until their luminances differ
/// by at least 0.2, so shapes never vanish into the background (a dark muted colour on a
/// dark ground, a pale yellow on white).
pub(super) fn keep_apart_from(background: Rgb, hsl_colours: &[[f32; 3]]) -> Vec<Rgb> {
    let bg = luminance(background);
    let step = if bg > 0.5 { -0.06 } else { 0.06 };
    hsl_colours
        .iter()
        .map(|&[h, s, mut l]| {
            for _ in 0..12 {
                if (luminance(hsl(h, s, l)) - bg).abs() >= 0.2 {
                    break;
                }
                l = (l + step).clamp(0.04, 0.96);
            }
            hsl(h, s, l)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsl_primaries() {
        let close = |a: Rgb, b: Rgb| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(hsl(0.0, 1.0, 0.5), [1.0, 0.0, 0.0]));
        assert!(close(hsl(120.0, 1.0, 0.5), [0.0, 1.0, 0.0]));
        assert!(close(hsl(240.0, 1.0, 0.5), [0.0, 0.0, 1.0]));
        assert!(close(hsl(-120.0, 1.0, 0.5), [0.0, 0.0, 1.0]));
        assert!(close(hsl(77.0, 0.0, 0.3), [0.3, 0.3, 0.3]));
    }
}
