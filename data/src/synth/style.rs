//! A synthetic *style*: every rendering parameter of a picture, drawn from one style seed and
//! nothing else (no content), so that images sharing a seed form the same-style pairs the
//! codebook's contrastive loss needs (arXiv 2511.10555, Sec. 3.1).
//!
//! Fifteen factors, each drawn from its own random stream `Rng::new(mix(seed, FACTOR_k))`,
//! so that they vary independently (changing how one factor is drawn never shifts another's
//! stream). A few read an earlier factor's *result* to keep shapes visible: the background
//! flips to a tint when its tone would match the palette's lightness, palette colours keep a
//! luminance gap of 0.2 from the background, and a light (dark) outline on a light (dark)
//! ground becomes dark (light). The palette factor, with the colour helpers and the
//! background luminance gap, is built in `palette.rs`.
//!
//! | factor          | values                                                                |
//! |-----------------|-----------------------------------------------------------------------|
//! | palette         | 6 harmonies x base hue x 3 saturation x 4 lightness bands, 3-5 colours |
//! | background      | light, dark or tinted                                                  |
//! | fill            | flat, linear/radial gradient, hatch, cross-hatch, halftone, noise      |
//! | outline         | none/thin (0.011-0.016)/thick (0.026-0.04) x dark/light/accent         |
//! | edge wobble     | off, or amplitude 0.006-0.022 at 3-9 cycles per side                   |
//! | bg pattern      | plain, stripes, grid, grain, dots, checker, gradient                   |
//! | posterise       | off or 2-8 levels per channel                                          |
//! | blur            | off or Gaussian sigma 0.004-0.016 (0.25-1 px at 64 px)                 |
//! | dither          | off or ordered Bayer 4x4 to 2-4 levels                                 |
//! | vignette        | off or 0.25-0.7                                                        |
//! | temperature     | neutral, warm or cool (strength 0.4-1)                                 |
//! | shadow          | off or drop shadow (offset 0.015-0.04, darkness, softness)             |
//! | line art        | 1 in 10 styles draw outlines only                                      |
//! | corner rounding | off or 0.12-0.4 of a polygon's inradius                                |
//! | paper grain     | off or 0.04-0.1                                                        |
//!
//! Counting only coarse classes (hue in 12 sectors, each continuous range in 3 bins) gives
//! about 10^13 combinations; with the continuous parameters every seed is its own style.
//! All spatial parameters are fractions of the image side. Factors are bold on purpose: a
//! model must tell styles apart at 64 px.

use serde::Serialize;

use super::palette::{draw_palette, keep_apart_from};
use crate::rng::{mix, Rng};

pub use super::palette::{hsl, luminance, Harmony, Palette, Rgb};

/// Sub-stream labels, one per factor; never renumber (that would change every style).
pub(super) mod factor {
    pub const PALETTE: u64 = 0x5354_0001;
    pub const BACKGROUND: u64 = 0x5354_0002;
    pub const FILL: u64 = 0x5354_0003;
    pub const OUTLINE: u64 = 0x5354_0004;
    pub const WOBBLE: u64 = 0x5354_0005;
    pub const PATTERN: u64 = 0x5354_0006;
    pub const POSTERISE: u64 = 0x5354_0007;
    pub const BLUR: u64 = 0x5354_0008;
    pub const DITHER: u64 = 0x5354_0009;
    pub const VIGNETTE: u64 = 0x5354_000A;
    pub const TEMPERATURE: u64 = 0x5354_000B;
    pub const SHADOW: u64 = 0x5354_000C;
    pub const LINE_ART: u64 = 0x5354_000D;
    pub const ROUNDING: u64 = 0x5354_000E;
    pub const GRAIN: u64 = 0x5354_000F;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackgroundTone {
    Light,
    Dark,
    Tinted,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Background {
    pub tone: BackgroundTone,
    pub colour: Rgb,
}

/// How a shape's interior is painted. Angles in radians, lengths normalised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Fill {
    Flat,
    /// Dark-to-light ramp across the shape along `angle`; `strength` in (0, 1].
    LinearGradient {
        angle: f32,
        strength: f32,
    },
    /// Light spot near the top left fading to dark at the rim.
    RadialGradient {
        strength: f32,
    },
    /// Parallel ink lines; `width` is the line's fraction of `spacing`.
    Hatch {
        angle: f32,
        spacing: f32,
        width: f32,
    },
    /// Two perpendicular hatch layers.
    CrossHatch {
        angle: f32,
        spacing: f32,
        width: f32,
    },
    /// Ink dots on a rotated grid of `cell`; dot size grows with the colour's darkness.
    Halftone {
        angle: f32,
        cell: f32,
    },
    /// Colour modulated by value noise of feature size `scale`.
    Noise {
        scale: f32,
        contrast: f32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutlineWidth {
    None,
    Thin,
    Thick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutlineColour {
    Dark,
    Light,
    Accent,
}

/// A band of `width` just inside each shape's edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outline {
    pub class: OutlineWidth,
    /// Normalised; 0 when `class` is `None`.
    pub width: f32,
    pub tone: OutlineColour,
    pub colour: Rgb,
}

/// Smooth value-noise displacement of the shapes' distance fields; amplitude 0 is off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wobble {
    pub amplitude: f32,
    /// Noise cells per image side.
    pub frequency: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum PatternKind {
    Plain,
    Stripes {
        angle: f32,
        period: f32,
    },
    Grid {
        spacing: f32,
        line: f32,
    },
    /// Value noise with `frequency` cells per image side.
    Grain {
        frequency: f32,
    },
    /// `radius` is a fraction of `spacing`.
    Dots {
        spacing: f32,
        radius: f32,
    },
    Checker {
        cell: f32,
    },
    Gradient {
        angle: f32,
    },
}

/// Background pattern: `kind` painted in `ink` over the background at `strength`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pattern {
    pub kind: PatternKind,
    pub ink: Rgb,
    pub strength: f32,
}

/// Drop shadow behind the shapes; offsets and softness normalised, darkness in (0, 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shadow {
    pub dx: f32,
    pub dy: f32,
    pub darkness: f32,
    pub softness: f32,
}

/// Every rendering parameter of one synthetic style; see the module header for the factors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Style {
    /// The seed it was drawn from; also seeds the style's noise fields.
    pub seed: u64,
    pub palette: Palette,
    pub background: Background,
    pub fill: Fill,
    pub outline: Outline,
    pub wobble: Wobble,
    pub pattern: Pattern,
    /// Levels per channel, 2..=8.
    pub posterise: Option<u8>,
    /// Gaussian sigma, normalised; 0 is off.
    pub blur: f32,
    /// Ordered-dither levels per channel, 2..=4.
    pub dither: Option<u8>,
    /// Darkening at the corners, 0 is off.
    pub vignette: f32,
    /// -1 (cool) .. 1 (warm); 0 is neutral.
    pub temperature: f32,
    pub shadow: Option<Shadow>,
    /// Outlines only, no fill.
    pub line_art: bool,
    /// Fraction of each polygon's inradius turned into rounded corners; 0 is sharp.
    pub corner_rounding: f32,
    /// Amplitude of fine noise over the whole picture; 0 is off.
    pub paper_grain: f32,
}

pub(super) fn factor_rng(seed: u64, label: u64) -> Rng {
    Rng::new(mix(seed, label))
}

fn draw_background(seed: u64, palette: &Palette) -> Background {
    let mut rng = factor_rng(seed, factor::BACKGROUND);
    let mut tone = [
        BackgroundTone::Light,
        BackgroundTone::Dark,
        BackgroundTone::Tinted,
    ][rng.weighted(&[0.4, 0.3, 0.3])];
    // A dark palette on a dark background (or light on light) hides the shapes: use a tint
    // on the far side of the palette instead.
    let clash = match tone {
        BackgroundTone::Dark => palette.lightness.1 < 0.45,
        BackgroundTone::Light => palette.lightness.0 > 0.55,
        BackgroundTone::Tinted => false,
    };
    if clash {
        tone = BackgroundTone::Tinted;
    }
    let hue = palette.base_hue + *rng.pick(&[0.0, 180.0, 30.0, -30.0]);
    let palette_light = (palette.lightness.0 + palette.lightness.1) / 2.0;
    let colour = match tone {
        BackgroundTone::Light => hsl(hue, rng.range_f32(0.1, 0.35), rng.range_f32(0.88, 0.96)),
        BackgroundTone::Dark => hsl(hue, rng.range_f32(0.15, 0.35), rng.range_f32(0.07, 0.16)),
        BackgroundTone::Tinted => {
            // Keep shapes readable: tinted backgrounds sit on the far side of the palette.
            let l = if palette_light > 0.5 {
                rng.range_f32(0.2, 0.32)
            } else {
                rng.range_f32(0.7, 0.84)
            };
            hsl(hue, rng.range_f32(0.3, 0.6), l)
        }
    };
    Background { tone, colour }
}

fn draw_fill(seed: u64) -> Fill {
    let mut rng = factor_rng(seed, factor::FILL);
    let angle = rng.range_f32(0.0, std::f32::consts::PI);
    match rng.weighted(&[2.0, 1.5, 1.5, 1.2, 1.0, 1.0, 1.2]) {
        0 => Fill::Flat,
        1 => Fill::LinearGradient {
            angle,
            strength: rng.range_f32(0.6, 1.0),
        },
        2 => Fill::RadialGradient {
            strength: rng.range_f32(0.6, 1.0),
        },
        3 => Fill::Hatch {
            angle,
            spacing: rng.range_f32(0.05, 0.085),
            width: rng.range_f32(0.35, 0.6),
        },
        4 => Fill::CrossHatch {
            angle,
            spacing: rng.range_f32(0.06, 0.1),
            width: rng.range_f32(0.25, 0.4),
        },
        5 => Fill::Halftone {
            angle: angle / 2.0,
            cell: rng.range_f32(0.06, 0.09),
        },
        _ => Fill::Noise {
            scale: rng.range_f32(0.04, 0.1),
            contrast: rng.range_f32(0.5, 0.9),
        },
    }
}

fn draw_outline(seed: u64, palette: &Palette, background: &Background) -> Outline {
    let mut rng = factor_rng(seed, factor::OUTLINE);
    let class = *rng.pick(&[OutlineWidth::None, OutlineWidth::Thin, OutlineWidth::Thick]);
    let width = match class {
        OutlineWidth::None => 0.0,
        OutlineWidth::Thin => rng.range_f32(0.011, 0.016),
        OutlineWidth::Thick => rng.range_f32(0.026, 0.04),
    };
    let mut tone = *rng.pick(&[
        OutlineColour::Dark,
        OutlineColour::Light,
        OutlineColour::Accent,
    ]);
    // A light outline on a light ground (or dark on dark) would just shrink the shape.
    let bg = luminance(background.colour);
    if tone == OutlineColour::Light && bg > 0.6 {
        tone = OutlineColour::Dark;
    } else if tone == OutlineColour::Dark && bg < 0.2 {
        tone = OutlineColour::Light;
    }
    let colour = match tone {
        OutlineColour::Dark => hsl(palette.base_hue, 0.3, 0.07),
        OutlineColour::Light => hsl(palette.base_hue, 0.2, 0.96),
        OutlineColour::Accent => palette.accent,
    };
    Outline {
        class,
        width,
        tone,
        colour,
    }
}

fn draw_pattern(seed: u64, background: &Background) -> Pattern {
    let mut rng = factor_rng(seed, factor::PATTERN);
    let angle = rng.range_f32(0.0, std::f32::consts::PI);
    let kind = match rng.weighted(&[1.6, 1.2, 1.0, 1.0, 1.0, 0.8, 1.0]) {
        0 => PatternKind::Plain,
        1 => PatternKind::Stripes {
            angle,
            period: rng.range_f32(0.07, 0.16),
        },
        2 => PatternKind::Grid {
            spacing: rng.range_f32(0.08, 0.16),
            line: rng.range_f32(0.012, 0.022),
        },
        3 => PatternKind::Grain {
            frequency: rng.range_f32(10.0, 24.0),
        },
        4 => PatternKind::Dots {
            spacing: rng.range_f32(0.07, 0.13),
            radius: rng.range_f32(0.2, 0.32),
        },
        5 => PatternKind::Checker {
            cell: rng.range_f32(0.08, 0.2),
        },
        _ => PatternKind::Gradient { angle: angle * 2.0 },
    };
    // Ink on the opposite side of the background's lightness so the pattern always shows.
    let hue = rng.range_f32(0.0, 360.0);
    let ink = if luminance(background.colour) > 0.45 {
        hsl(hue, 0.4, 0.12)
    } else {
        hsl(hue, 0.3, 0.92)
    };
    Pattern {
        kind,
        ink,
        strength: rng.range_f32(0.15, 0.32),
    }
}

fn draw_shadow(seed: u64) -> Option<Shadow> {
    let mut rng = factor_rng(seed, factor::SHADOW);
    if rng.chance(0.6) {
        return None;
    }
    let quadrant = rng.below(4) as f32;
    let angle = (45.0 + 90.0 * quadrant + rng.range_f32(-20.0, 20.0)).to_radians();
    let distance = rng.range_f32(0.015, 0.04);
    Some(Shadow {
        dx: distance * angle.cos(),
        dy: distance * angle.sin(),
        darkness: rng.range_f32(0.3, 0.65),
        softness: rng.range_f32(0.004, 0.03),
    })
}

impl Style {
    /// The style of `seed`: a pure function of the seed, identical on every machine.
    pub fn from_seed(seed: u64) -> Style {
        let (mut palette, hsl_colours) = draw_palette(seed);
        let background = draw_background(seed, &palette);
        palette.colours = keep_apart_from(background.colour, &hsl_colours);
        let outline = draw_outline(seed, &palette, &background);
        let pattern = draw_pattern(seed, &background);

        let mut rng = factor_rng(seed, factor::WOBBLE);
        let wobble = if rng.chance(0.4) {
            Wobble {
                amplitude: 0.0,
                frequency: 0.0,
            }
        } else {
            Wobble {
                amplitude: rng.range_f32(0.006, 0.022),
                frequency: rng.range_f32(3.0, 9.0),
            }
        };
        let mut rng = factor_rng(seed, factor::POSTERISE);
        let posterise = (!rng.chance(0.45)).then(|| 2 + rng.below(7) as u8);
        let mut rng = factor_rng(seed, factor::BLUR);
        let blur = if rng.chance(0.55) {
            0.0
        } else {
            rng.range_f32(0.004, 0.016)
        };
        let mut rng = factor_rng(seed, factor::DITHER);
        let dither = (!rng.chance(0.75)).then(|| 2 + rng.below(3) as u8);
        let mut rng = factor_rng(seed, factor::VIGNETTE);
        let vignette = if rng.chance(0.5) {
            0.0
        } else {
            rng.range_f32(0.25, 0.7)
        };
        let mut rng = factor_rng(seed, factor::TEMPERATURE);
        let temperature = match rng.weighted(&[0.4, 0.3, 0.3]) {
            0 => 0.0,
            1 => rng.range_f32(0.4, 1.0),
            _ => -rng.range_f32(0.4, 1.0),
        };
        let line_art = factor_rng(seed, factor::LINE_ART).chance(0.1);
        let mut rng = factor_rng(seed, factor::ROUNDING);
        let corner_rounding = if rng.chance(0.5) {
            0.0
        } else {
            rng.range_f32(0.12, 0.4)
        };
        let mut rng = factor_rng(seed, factor::GRAIN);
        let paper_grain = if rng.chance(0.65) {
            0.0
        } else {
            rng.range_f32(0.04, 0.1)
        };

        Style {
            seed,
            palette,
            background,
            fill: draw_fill(seed),
            outline,
            wobble,
            pattern,
            posterise,
            blur,
            dither,
            vignette,
            temperature,
            shadow: draw_shadow(seed),
            line_art,
            corner_rounding,
            paper_grain,
        }
    }

    /// One short human-readable line naming the factors that are on, e.g.
    /// "triadic vivid palette, light bg, hatched fill 35deg, thick dark outline, stripes bg, warm".
    pub fn describe(&self) -> String {
        let p = &self.palette;
        let sat = match p.saturation.0 {
            s if s < 0.4 => "muted",
            s if s < 0.7 => "medium",
            _ => "vivid",
        };
        let deg = |a: f32| a.to_degrees().round() as i32;
        let mut parts = vec![format!("{} {sat} palette", p.harmony.name())];
        parts.push(
            match self.background.tone {
                BackgroundTone::Light => "light bg",
                BackgroundTone::Dark => "dark bg",
                BackgroundTone::Tinted => "tinted bg",
            }
            .to_string(),
        );
        parts.push(if self.line_art {
            "line art".to_string()
        } else {
            match &self.fill {
                Fill::Flat => "flat fill".to_string(),
                Fill::LinearGradient { angle, .. } => format!("linear gradient {}deg", deg(*angle)),
                Fill::RadialGradient { .. } => "radial gradient".to_string(),
                Fill::Hatch { angle, .. } => format!("hatched fill {}deg", deg(*angle)),
                Fill::CrossHatch { .. } => "cross-hatched fill".to_string(),
                Fill::Halftone { .. } => "halftone fill".to_string(),
                Fill::Noise { .. } => "noisy fill".to_string(),
            }
        });
        if self.outline.class != OutlineWidth::None {
            let width = if self.outline.class == OutlineWidth::Thin {
                "thin"
            } else {
                "thick"
            };
            let tone = match self.outline.tone {
                OutlineColour::Dark => "dark",
                OutlineColour::Light => "light",
                OutlineColour::Accent => "accent",
            };
            parts.push(format!("{width} {tone} outline"));
        }
        if self.wobble.amplitude > 0.0 {
            parts.push("wobbly edges".to_string());
        }
        if self.corner_rounding > 0.0 {
            parts.push("rounded corners".to_string());
        }
        let pattern = match self.pattern.kind {
            PatternKind::Plain => None,
            PatternKind::Stripes { .. } => Some("stripes"),
            PatternKind::Grid { .. } => Some("grid"),
            PatternKind::Grain { .. } => Some("grainy"),
            PatternKind::Dots { .. } => Some("dotted"),
            PatternKind::Checker { .. } => Some("checker"),
            PatternKind::Gradient { .. } => Some("gradient"),
        };
        if let Some(name) = pattern {
            parts.push(format!("{name} bg"));
        }
        if self.shadow.is_some() {
            parts.push("drop shadow".to_string());
        }
        if let Some(levels) = self.posterise {
            parts.push(format!("posterise {levels}"));
        }
        if self.blur > 0.0 {
            parts.push("blurred".to_string());
        }
        if let Some(levels) = self.dither {
            parts.push(format!("dither {levels}"));
        }
        if self.paper_grain > 0.0 {
            parts.push("paper grain".to_string());
        }
        if self.vignette > 0.0 {
            parts.push("vignette".to_string());
        }
        if self.temperature > 0.0 {
            parts.push("warm".to_string());
        } else if self.temperature < 0.0 {
            parts.push("cool".to_string());
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_is_a_pure_function_of_its_seed() {
        assert_eq!(Style::from_seed(17), Style::from_seed(17));
        assert_ne!(Style::from_seed(17), Style::from_seed(18));
    }

    #[test]
    fn style_parameters_stay_in_range() {
        for seed in 0..500 {
            let s = Style::from_seed(seed);
            assert!((3..=5).contains(&s.palette.colours.len()));
            let colours = s
                .palette
                .colours
                .iter()
                .chain([&s.background.colour, &s.pattern.ink]);
            for c in colours {
                assert!(
                    c.iter().all(|v| (-1e-5..=1.00001).contains(v)),
                    "{seed}: {c:?}"
                );
            }
            assert!(s.posterise.is_none_or(|l| (2..=8).contains(&l)));
            assert!(s.dither.is_none_or(|l| (2..=4).contains(&l)));
            assert!((0.0..=0.016).contains(&s.blur));
            assert!((-1.0..=1.0).contains(&s.temperature));
            assert!(!s.describe().is_empty());
        }
    }

    #[test]
    fn style_factors_vary_independently() {
        // Every factor takes several values over a few hundred seeds, and no two of 500
        // styles coincide in their description-level classes *and* palette.
        let styles: Vec<Style> = (0..500).map(Style::from_seed).collect();
        let distinct = |f: &dyn Fn(&Style) -> String| {
            styles
                .iter()
                .map(f)
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert!(distinct(&|s| format!("{:?}", s.palette.harmony)) == 6);
        assert!(distinct(&|s| format!("{:?}", s.background.tone)) == 3);
        assert!(distinct(&|s| format!("{:?}", std::mem::discriminant(&s.fill))) == 7);
        assert!(distinct(&|s| format!("{:?}", std::mem::discriminant(&s.pattern.kind))) == 7);
        assert!(distinct(&|s| format!("{:?}{:?}", s.outline.class, s.outline.tone)) >= 7);
        assert!(distinct(&|s| format!("{:?}", s.posterise)) == 8);
        assert!(distinct(&|s| s.describe()) > 450);
        // Independence: fill kind is not determined by the harmony.
        let flat_mono = styles
            .iter()
            .filter(|s| s.palette.harmony == Harmony::Mono && s.fill == Fill::Flat)
            .count();
        assert!(flat_mono > 0);
    }

    #[test]
    fn style_describe_names_the_factors() {
        let s = Style::from_seed(3);
        let line = s.describe();
        assert!(line.contains("palette") && line.contains("bg"), "{line}");
    }
}
