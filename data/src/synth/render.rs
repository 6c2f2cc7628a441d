//! The synthetic renderer: `render(style, scene, size)` paints a [`Scene`] in a [`Style`].
//!
//! A pure, single-threaded function (callers parallelise over images), so a (style, scene,
//! size) triple gives the same bytes on every machine. Per pixel, in normalised coordinates:
//! background colour and pattern, then the drop shadow, then each shape in order from its
//! signed distance field: wobble (smooth value noise seeded by the style) displaces the
//! distance, a band just inside the edge is the outline, and pixels near an edge are
//! supersampled 4x (rotated grid) for anti-aliasing. Then the whole-image effects in a fixed
//! order: paper grain, blur, posterise, dither, vignette, colour temperature (all but paper
//! grain in `effects.rs`).

use image::RgbImage;

use super::effects::{apply_tone_effects, blur};
use super::scene::{Scene, Shape};
use super::style::{luminance, Fill, PatternKind, Rgb, Style};
use crate::rng::mix;

/// Rotated-grid 4x supersampling offsets, in pixels.
const SUBSAMPLES: [(f32, f32); 4] = [
    (-0.375, -0.125),
    (0.125, -0.375),
    (0.375, 0.125),
    (-0.125, 0.375),
];
/// Distance (in pixels) beyond which every subsample agrees with the centre: the largest
/// subsample offset (0.4 px) plus the half-width of each subsample's soft edge (0.25 px).
const SUPERSAMPLE_BAND: f32 = 0.7;

/// Noise stream labels derived from the style seed.
const WOBBLE_NOISE: u64 = 0x4E01;
const FILL_NOISE: u64 = 0x4E02;
const PATTERN_NOISE: u64 = 0x4E03;
const GRAIN_NOISE: u64 = 0x4E04;

/// Smooth 2D value noise in [0, 1): hashed lattice values, smoothstep interpolation.
#[derive(Clone, Copy)]
struct ValueNoise {
    seed: u32,
}

impl ValueNoise {
    fn new(style_seed: u64, label: u64) -> Self {
        ValueNoise {
            seed: mix(style_seed, label) as u32,
        }
    }

    fn lattice(&self, ix: i32, iy: i32) -> f32 {
        // A 32-bit integer hash (lowbias32 finaliser) of the lattice point.
        let mut h = (ix as u32).wrapping_mul(0x8DA6_B343)
            ^ (iy as u32).wrapping_mul(0xD816_3841)
            ^ self.seed;
        h ^= h >> 16;
        h = h.wrapping_mul(0x7FEB_352D);
        h ^= h >> 15;
        h = h.wrapping_mul(0x846C_A68B);
        h ^= h >> 16;
        (h >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (ix, iy) = (fx as i32, fy as i32);
        let (tx, ty) = (x - fx, y - fy);
        let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let top = lerp(self.lattice(ix, iy), self.lattice(ix + 1, iy), sx);
        let bottom = lerp(self.lattice(ix, iy + 1), self.lattice(ix + 1, iy + 1), sx);
        lerp(top, bottom, sy)
    }
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn mix_rgb(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        lerp(a[0], b[0], t),
        lerp(a[1], b[1], t),
        lerp(a[2], b[2], t),
    ]
}

pub(super) fn scale_rgb(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

/// Coverage of a band of half-width `half` at distance `dist` from its centre line, with a
/// one-pixel soft edge (`px` = pixel size, normalised).
fn band(dist: f32, half: f32, px: f32) -> f32 {
    ((half - dist) / px + 0.5).clamp(0.0, 1.0)
}

/// Distance from `t` to the nearest integer.
fn to_nearest_int(t: f32) -> f32 {
    (t - t.round()).abs()
}

/// Per-shape values computed once per image.
struct Prepared<'a> {
    shape: &'a Shape,
    cos: f32,
    sin: f32,
    /// Bounding radius including wobble, normalised.
    reach: f32,
    /// Factor on the style's wobble amplitude for this shape.
    wobble_scale: f32,
    colour: Rgb,
    dark: Rgb,
    light: Rgb,
    /// Gap colour for hatching and halftone.
    paper: Rgb,
    /// Halftone dot radius as a fraction of the cell.
    dot: f32,
}

/// Everything `render` needs, resolved for one image size.
struct Painter<'a> {
    style: &'a Style,
    shapes: Vec<Prepared<'a>>,
    /// Pixel size, normalised.
    px: f32,
    outline_width: f32,
    wobble: ValueNoise,
    fill_noise: ValueNoise,
    pattern_noise: ValueNoise,
}

impl<'a> Painter<'a> {
    fn new(style: &'a Style, scene: &'a Scene, size: u32) -> Self {
        let colours = &style.palette.colours;
        let bg = style.background.colour;
        let gradient_strength = match style.fill {
            Fill::LinearGradient { strength, .. } | Fill::RadialGradient { strength } => strength,
            _ => 0.0,
        };
        let shapes = scene
            .shapes
            .iter()
            .map(|shape| {
                let colour = colours[usize::from(shape.colour_slot) % colours.len()];
                let k = 0.6 * gradient_strength;
                Prepared {
                    shape,
                    cos: shape.rotation.cos(),
                    sin: shape.rotation.sin(),
                    reach: shape.extent() + style.wobble.amplitude,
                    // Small shapes wobble less, so they stay recognisable.
                    wobble_scale: (shape.radius / 0.18).clamp(0.5, 1.0),
                    colour,
                    dark: scale_rgb(colour, 1.0 - k),
                    light: mix_rgb(colour, [1.0; 3], k),
                    paper: mix_rgb(colour, bg, 0.6),
                    dot: 0.5 * (1.0 - luminance(colour)).clamp(0.3, 0.95).sqrt(),
                }
            })
            .collect();
        // Line art always needs a visible line.
        let outline_width = if style.line_art {
            style.outline.width.max(0.022)
        } else {
            style.outline.width
        };
        Painter {
            style,
            shapes,
            px: 1.0 / size as f32,
            outline_width,
            wobble: ValueNoise::new(style.seed, WOBBLE_NOISE),
            fill_noise: ValueNoise::new(style.seed, FILL_NOISE),
            pattern_noise: ValueNoise::new(style.seed, PATTERN_NOISE),
        }
    }

    /// Signed distance of shape `s` at `(x, y)` (normalised image coordinates).
    fn distance(&self, s: &Prepared, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - s.shape.cx, y - s.shape.cy);
        // Rotate into the shape's frame.
        let (lx, ly) = (dx * s.cos + dy * s.sin, -dx * s.sin + dy * s.cos);
        s.shape
            .kind
            .distance(lx, ly, s.shape.radius, self.style.corner_rounding)
    }

    fn wobble_at(&self, x: f32, y: f32) -> f32 {
        let w = &self.style.wobble;
        if w.amplitude == 0.0 {
            return 0.0;
        }
        w.amplitude * (2.0 * self.wobble.at(x * w.frequency, y * w.frequency) - 1.0)
    }

    fn background(&self, x: f32, y: f32) -> Rgb {
        let base = self.style.background.colour;
        let pattern = &self.style.pattern;
        let px = self.px;
        let amount = match pattern.kind {
            PatternKind::Plain => return base,
            PatternKind::Stripes { angle, period } => {
                let u = (x * angle.cos() + y * angle.sin()) / period;
                band(to_nearest_int(u) * period, 0.25 * period, px)
            }
            PatternKind::Grid { spacing, line } => {
                let dx = to_nearest_int(x / spacing) * spacing;
                let dy = to_nearest_int(y / spacing) * spacing;
                band(dx.min(dy), line / 2.0, px)
            }
            PatternKind::Grain { frequency } => {
                let n = self.pattern_noise.at(x * frequency, y * frequency);
                (2.5 * n - 0.75).clamp(0.0, 1.0)
            }
            PatternKind::Dots { spacing, radius } => {
                let dx = to_nearest_int(x / spacing);
                let dy = to_nearest_int(y / spacing);
                band((dx * dx + dy * dy).sqrt() * spacing, radius * spacing, px)
            }
            PatternKind::Checker { cell } => {
                // Product of two anti-aliased square waves.
                let wave = |t: f32| {
                    let g = t / cell;
                    let edge = to_nearest_int(g) * cell / px;
                    let sign = if (g.floor() as i64).rem_euclid(2) == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    sign * (2.0 * edge).min(1.0)
                };
                0.5 + 0.5 * wave(x) * wave(y)
            }
            PatternKind::Gradient { angle } => {
                let t = (x - 0.5) * angle.cos() + (y - 0.5) * angle.sin();
                (0.5 + 1.2 * t).clamp(0.0, 1.0) * 1.6
            }
        };
        mix_rgb(base, pattern.ink, pattern.strength * amount)
    }

    fn fill(&self, s: &Prepared, x: f32, y: f32) -> Rgb {
        let px = self.px;
        let hatch = |angle: f32, spacing: f32, width: f32| {
            let u = (x * angle.cos() + y * angle.sin()) / spacing;
            band(to_nearest_int(u) * spacing, 0.5 * width * spacing, px)
        };
        match self.style.fill {
            Fill::Flat => s.colour,
            Fill::LinearGradient { angle, .. } => {
                let (dx, dy) = (x - s.shape.cx, y - s.shape.cy);
                let t = (dx * angle.cos() + dy * angle.sin()) / s.shape.extent();
                mix_rgb(s.dark, s.light, (0.5 + 0.5 * t).clamp(0.0, 1.0))
            }
            Fill::RadialGradient { .. } => {
                let r = s.shape.radius;
                let (dx, dy) = (x - s.shape.cx + 0.35 * r, y - s.shape.cy + 0.35 * r);
                let t = (dx * dx + dy * dy).sqrt() / (1.35 * r);
                mix_rgb(s.light, s.dark, t.clamp(0.0, 1.0))
            }
            Fill::Hatch {
                angle,
                spacing,
                width,
            } => mix_rgb(s.paper, s.colour, hatch(angle, spacing, width)),
            Fill::CrossHatch {
                angle,
                spacing,
                width,
            } => {
                let a = hatch(angle, spacing, width);
                let b = hatch(angle + std::f32::consts::FRAC_PI_2, spacing, width);
                mix_rgb(s.paper, s.colour, a.max(b))
            }
            Fill::Halftone { angle, cell } => {
                let (c, sn) = (angle.cos(), angle.sin());
                let (u, v) = ((x * c + y * sn) / cell, (-x * sn + y * c) / cell);
                let (du, dv) = (to_nearest_int(u), to_nearest_int(v));
                let cov = band((du * du + dv * dv).sqrt() * cell, s.dot * cell, px);
                mix_rgb(s.paper, scale_rgb(s.colour, 0.8), cov)
            }
            Fill::Noise { scale, contrast } => {
                let n = 0.65 * self.fill_noise.at(x / scale, y / scale)
                    + 0.35 * self.fill_noise.at(2.3 * x / scale + 17.0, 2.3 * y / scale);
                // Between a shade and a tint of the colour, so the hue survives.
                let t = (0.5 + 1.6 * (n - 0.5)).clamp(0.0, 1.0);
                let shade = scale_rgb(s.colour, 1.0 - 0.65 * contrast);
                mix_rgb(shade, mix_rgb(s.colour, [1.0; 3], 0.5 * contrast), t)
            }
        }
    }

    /// Colour of pixel `(col, row)` before the whole-image effects.
    fn pixel(&self, col: u32, row: u32) -> Rgb {
        let px = self.px;
        let (x, y) = ((col as f32 + 0.5) * px, (row as f32 + 0.5) * px);
        let mut c = self.background(x, y);
        if let Some(shadow) = &self.style.shadow {
            let (sx, sy) = (x - shadow.dx, y - shadow.dy);
            let soft = shadow.softness + 0.5 * px;
            let mut cover = 0f32;
            for s in &self.shapes {
                let (dx, dy) = (sx - s.shape.cx, sy - s.shape.cy);
                let reach = s.reach + soft;
                if dx * dx + dy * dy > reach * reach {
                    continue;
                }
                let mut d = self.distance(s, sx, sy) + s.wobble_scale * self.wobble_at(sx, sy);
                if self.style.line_art {
                    d = (d + 0.5 * self.outline_width).abs() - 0.5 * self.outline_width;
                }
                cover = cover.max((0.5 - 0.5 * d / soft).clamp(0.0, 1.0));
            }
            c = scale_rgb(c, 1.0 - shadow.darkness * cover);
        }
        let mut wobble: Option<f32> = None;
        let band_px = SUPERSAMPLE_BAND * px;
        let w = self.outline_width;
        for s in &self.shapes {
            let (dx, dy) = (x - s.shape.cx, y - s.shape.cy);
            let reach = s.reach + 2.0 * px;
            if dx * dx + dy * dy > reach * reach {
                continue;
            }
            let wob = s.wobble_scale * *wobble.get_or_insert_with(|| self.wobble_at(x, y));
            let d0 = self.distance(s, x, y) + wob;
            // (shape coverage, fill coverage); outline covers the difference.
            let (cover, fill) = if d0 >= band_px {
                continue;
            } else if d0 + w <= -band_px {
                (1.0, 1.0)
            } else if d0 <= -band_px && d0 + w >= band_px {
                (1.0, 0.0)
            } else {
                let (mut cover, mut fill) = (0.0, 0.0);
                for (ox, oy) in SUBSAMPLES {
                    let d = self.distance(s, x + ox * px, y + oy * px) + wob;
                    cover += (0.5 - 2.0 * d / px).clamp(0.0, 1.0);
                    fill += (0.5 - 2.0 * (d + w) / px).clamp(0.0, 1.0);
                }
                (0.25 * cover, 0.25 * fill)
            };
            let line = cover - fill;
            if self.style.line_art {
                c = mix_rgb(c, s.colour, line);
                continue;
            }
            let outline = self.style.outline.colour;
            let paint = if fill > 0.0 {
                self.fill(s, x, y)
            } else {
                outline
            };
            for k in 0..3 {
                c[k] = c[k] * (1.0 - cover) + outline[k] * line + paint[k] * fill;
            }
        }
        c
    }
}

/// Renders `scene` in `style` as a `size` x `size` sRGB image. Pure and deterministic; any
/// size works (0 gives an empty image).
pub fn render(style: &Style, scene: &Scene, size: u32) -> RgbImage {
    let n = size as usize;
    let painter = Painter::new(style, scene, size);
    let mut buf: Vec<Rgb> = Vec::with_capacity(n * n);
    for row in 0..size {
        for col in 0..size {
            buf.push(painter.pixel(col, row));
        }
    }
    if style.paper_grain > 0.0 {
        let grain = ValueNoise::new(style.seed, GRAIN_NOISE);
        for (i, c) in buf.iter_mut().enumerate() {
            let (x, y) = ((i % n) as f32 + 0.5, (i / n) as f32 + 0.5);
            let g = style.paper_grain
                * (2.0 * grain.at(x * 80.0 / size as f32, y * 80.0 / size as f32) - 1.0);
            *c = [c[0] + g, c[1] + g, c[2] + g];
        }
    }
    blur(&mut buf, n, style.blur * size as f32);
    apply_tone_effects(&mut buf, n, style);
    let mut img = RgbImage::new(size, size);
    for (p, c) in img.pixels_mut().zip(&buf) {
        p.0 = c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean absolute difference per channel, in 0..255.
    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f32 {
        let total: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        total as f32 / a.as_raw().len() as f32
    }

    /// Normalised 4x4x4 colour histogram.
    fn histogram(img: &RgbImage) -> Vec<f32> {
        let mut h = vec![0f32; 64];
        for p in img.pixels() {
            let [r, g, b] = p.0.map(|v| usize::from(v / 64));
            h[r * 16 + g * 4 + b] += 1.0;
        }
        let n = (img.width() * img.height()) as f32;
        h.iter_mut().for_each(|v| *v /= n);
        h
    }

    fn l1(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
    }

    #[test]
    fn render_is_deterministic() {
        for seed in 0..8 {
            let (style, scene) = (Style::from_seed(seed), Scene::from_seed(seed + 100));
            assert_eq!(render(&style, &scene, 64), render(&style, &scene, 64));
        }
    }

    #[test]
    fn render_different_styles_differ_clearly() {
        let scene = Scene::from_seed(5);
        let diffs: Vec<f32> = (0..20)
            .map(|i| {
                let a = render(&Style::from_seed(2 * i), &scene, 64);
                let b = render(&Style::from_seed(2 * i + 1), &scene, 64);
                mean_abs_diff(&a, &b)
            })
            .collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        assert!(diffs.iter().all(|&d| d > 8.0), "{diffs:?}");
        assert!(mean > 40.0, "mean {mean}: {diffs:?}");
    }

    #[test]
    fn render_same_style_shares_colour_statistics() {
        // The dataset is learnable only if style, not content, dominates colour statistics.
        let styles = 12u64;
        let scenes = 4u64;
        let hists: Vec<Vec<Vec<f32>>> = (0..styles)
            .map(|s| {
                let style = Style::from_seed(1000 + s);
                (0..scenes)
                    .map(|c| histogram(&render(&style, &Scene::from_seed(c), 48)))
                    .collect()
            })
            .collect();
        let (mut within, mut nw, mut across, mut na) = (0.0, 0, 0.0, 0);
        for s in 0..styles as usize {
            for t in 0..styles as usize {
                for i in 0..scenes as usize {
                    for j in 0..scenes as usize {
                        if s == t && i < j {
                            within += l1(&hists[s][i], &hists[s][j]);
                            nw += 1;
                        } else if s < t && i == j {
                            across += l1(&hists[s][i], &hists[t][j]);
                            na += 1;
                        }
                    }
                }
            }
        }
        let (within, across) = (within / nw as f32, across / na as f32);
        assert!(
            within * 2.5 < across,
            "within-style {within} vs across-style {across}"
        );
    }

    #[test]
    fn render_any_size_without_panic() {
        for seed in 0..24 {
            let (style, scene) = (Style::from_seed(seed), Scene::from_seed(seed));
            for size in [0, 1, 2, 7, 64, 256] {
                let img = render(&style, &scene, size);
                assert_eq!(img.dimensions(), (size, size));
            }
        }
    }

    #[test]
    fn render_style_is_scale_consistent() {
        // A style at 64 px and at 256 px downsampled to 64 px look alike.
        let (style, scene) = (Style::from_seed(77), Scene::from_seed(3));
        let small = render(&style, &scene, 64);
        let big = render(&style, &scene, 256);
        let down = image::imageops::resize(&big, 64, 64, image::imageops::FilterType::Triangle);
        let other = render(&Style::from_seed(78), &scene, 64);
        assert!(mean_abs_diff(&small, &down) < 0.5 * mean_abs_diff(&small, &other));
    }

    /// Writes a grid of 8 styles (rows) x 6 scenes (columns) at 64 px for eyeballing:
    /// `cargo test -p cotyle-data --lib render_preview_grid -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn render_preview_grid() {
        let env = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (first, cell) = (
            env("SYNTH_GRID_FIRST", 0),
            env("SYNTH_GRID_CELL", 64) as u32,
        );
        let (rows, cols, gap) = (8u32, 6u32, 4u32); // cols = scene seeds below
        let mut grid = RgbImage::from_pixel(
            cols * (cell + gap),
            rows * (cell + gap),
            image::Rgb([128; 3]),
        );
        for r in 0..rows {
            let style = Style::from_seed(first + u64::from(r));
            println!("style {}: {}", first + u64::from(r), style.describe());
            // Scenes with one to four shapes (pinned in scene.rs's tests).
            for (c, scene_seed) in [0u64, 7, 13, 28, 34, 46].into_iter().enumerate() {
                let c = c as u32;
                let scene = Scene::from_seed(scene_seed);
                if r == 0 {
                    println!("  scene {c}: {}", scene.prompt());
                }
                let img = render(&style, &scene, cell);
                image::imageops::replace(
                    &mut grid,
                    &img,
                    i64::from(c * (cell + gap)),
                    i64::from(r * (cell + gap)),
                );
            }
        }
        let path = std::env::temp_dir().join(format!("cotyle_synth_grid_{first}_{cell}.png"));
        grid.save(&path).expect("write preview grid");
        println!("wrote {}", path.display());
    }

    /// Prints render times; never asserts them (DESIGN.md: speed is measured, not tested).
    /// `cargo test --release -p cotyle-data --lib render_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn render_timing() {
        for size in [64u32, 256] {
            let count = if size == 64 { 400 } else { 60 };
            let jobs: Vec<(Style, Scene)> = (0..count)
                .map(|i| (Style::from_seed(i), Scene::from_seed(i + 7)))
                .collect();
            let start = std::time::Instant::now();
            let mut checksum = 0u64;
            for (style, scene) in &jobs {
                checksum += u64::from(render(style, scene, size).as_raw()[0]);
            }
            let per = start.elapsed().as_secs_f64() * 1e3 / count as f64;
            println!("{size}px: {per:.3} ms per image over {count} styles (checksum {checksum})");
        }
    }
}
