//! A synthetic *scene*: the content of a picture and nothing about its look. 1 to 4 shapes
//! with kind, size class, position, rotation and a palette slot (the style decides what
//! colour a slot is), drawn from a content seed only. The English prompt that names the
//! content ([`Scene::prompt`], the text side of the DiT's training pairs, arXiv 2511.10555
//! Sec. 3.2) is written in `prompt.rs`.
//!
//! Coordinates are normalised to [0, 1] with y pointing down, as in the image. Each shape's
//! geometry is a signed distance function ([`ShapeKind::distance`], in `sdf.rs`), so that the
//! renderer can anti-alias, outline and wobble every kind the same way.

use serde::Serialize;

use super::sdf::len;
use crate::rng::{mix, Rng};

/// Number of palette slots a scene chooses from; a style maps slot `k` to colour
/// `k % palette.len()`.
pub const PALETTE_SLOTS: u8 = 5;

/// Stream label for scene draws, so scene seeds never share a stream with style seeds.
const SCENE_STREAM: u64 = 0x5343_454E_4500;

/// Placement attempts per shape and size class before shrinking it (then dropping it).
const PLACEMENT_TRIES: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ShapeKind {
    Circle,
    Oval,
    Square,
    Triangle,
    Pentagon,
    Hexagon,
    Diamond,
    Star,
    Ring,
    Cross,
    Heart,
    Crescent,
}

impl ShapeKind {
    pub const ALL: [ShapeKind; 12] = [
        ShapeKind::Circle,
        ShapeKind::Oval,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Pentagon,
        ShapeKind::Hexagon,
        ShapeKind::Diamond,
        ShapeKind::Star,
        ShapeKind::Ring,
        ShapeKind::Cross,
        ShapeKind::Heart,
        ShapeKind::Crescent,
    ];

    /// The English noun, singular.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Oval => "oval",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Pentagon => "pentagon",
            ShapeKind::Hexagon => "hexagon",
            ShapeKind::Diamond => "diamond",
            ShapeKind::Star => "star",
            ShapeKind::Ring => "ring",
            ShapeKind::Cross => "cross",
            ShapeKind::Heart => "heart",
            ShapeKind::Crescent => "crescent",
        }
    }

    /// The English noun, plural ("crosses", "stars").
    pub fn plural(self) -> String {
        let name = self.name();
        if name.ends_with('s') || name.ends_with('x') || name.ends_with("sh") {
            format!("{name}es")
        } else {
            format!("{name}s")
        }
    }

    /// Largest rotation (radians, either way) that keeps the kind recognisable as its name:
    /// a square turned 45 degrees would read as a diamond.
    fn max_rotation(self) -> f32 {
        let degrees: f32 = match self {
            ShapeKind::Circle | ShapeKind::Ring => 0.0,
            ShapeKind::Diamond => 8.0,
            ShapeKind::Square | ShapeKind::Triangle | ShapeKind::Pentagon => 12.0,
            ShapeKind::Cross | ShapeKind::Star | ShapeKind::Heart => 18.0,
            ShapeKind::Oval => 25.0,
            ShapeKind::Hexagon => 30.0,
            ShapeKind::Crescent => 40.0,
        };
        degrees.to_radians()
    }

    /// Farthest extent from the centre as a multiple of the shape's radius (for placement
    /// and the renderer's bounding test).
    pub fn bound(self) -> f32 {
        match self {
            ShapeKind::Square | ShapeKind::Triangle | ShapeKind::Heart => 1.12,
            ShapeKind::Star => 1.06,
            _ => 1.01,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SizeClass {
    Small,
    Medium,
    Large,
}

impl SizeClass {
    /// Radius range, normalised.
    fn radius_range(self) -> (f32, f32) {
        match self {
            SizeClass::Small => (0.08, 0.11),
            SizeClass::Medium => (0.13, 0.17),
            SizeClass::Large => (0.2, 0.27),
        }
    }

    fn smaller(self) -> Option<SizeClass> {
        match self {
            SizeClass::Large => Some(SizeClass::Medium),
            SizeClass::Medium => Some(SizeClass::Small),
            SizeClass::Small => None,
        }
    }

    /// The prompt adjective; medium is the unmarked default.
    pub fn adjective(self) -> Option<&'static str> {
        match self {
            SizeClass::Small => Some("small"),
            SizeClass::Medium => None,
            SizeClass::Large => Some("large"),
        }
    }
}

/// One shape: centre `(cx, cy)` and `radius` normalised, `rotation` in radians.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    pub kind: ShapeKind,
    pub size: SizeClass,
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
    pub rotation: f32,
    /// Which palette colour the style paints it with, in 0..PALETTE_SLOTS.
    pub colour_slot: u8,
}

impl Shape {
    /// Extent from the centre, normalised.
    pub fn extent(&self) -> f32 {
        self.radius * self.kind.bound()
    }
}

/// The content of one picture; shapes are painted in order (later on top).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scene {
    pub shapes: Vec<Shape>,
}

impl Scene {
    /// The scene of `seed`: 1..=4 shapes with little overlap, a pure function of the seed.
    pub fn from_seed(seed: u64) -> Scene {
        let mut rng = Rng::new(mix(seed, SCENE_STREAM));
        let count = 1 + rng.weighted(&[0.3, 0.3, 0.25, 0.15]);
        let size_weights: [f32; 3] = match count {
            1 => [0.15, 0.35, 0.5],
            2 => [0.35, 0.45, 0.2],
            _ => [0.5, 0.42, 0.08],
        };
        let mut shapes: Vec<Shape> = Vec::with_capacity(count);
        for _ in 0..count {
            // Repeating a kind already present gives prompts like "two stars above a circle".
            let kind = if !shapes.is_empty() && rng.chance(0.35) {
                shapes[rng.below(shapes.len() as u64) as usize].kind
            } else {
                *rng.pick(&ShapeKind::ALL)
            };
            let size = [SizeClass::Small, SizeClass::Medium, SizeClass::Large]
                [rng.weighted(&size_weights)];
            let colour_slot = rng.below(u64::from(PALETTE_SLOTS)) as u8;
            let rotation = rng.range_f32(-1.0, 1.0) * kind.max_rotation();
            if let Some(shape) = place(&mut rng, &shapes, kind, size, rotation, colour_slot) {
                shapes.push(shape);
            }
        }
        Scene { shapes }
    }
}

/// Rejection-samples a position that keeps the shape inside the frame and apart from the
/// shapes already placed, shrinking the size class when it cannot fit; `None` if even a
/// small one does not fit.
fn place(
    rng: &mut Rng,
    placed: &[Shape],
    kind: ShapeKind,
    size: SizeClass,
    rotation: f32,
    colour_slot: u8,
) -> Option<Shape> {
    let mut size = Some(size);
    while let Some(class) = size {
        let (lo, hi) = class.radius_range();
        for _ in 0..PLACEMENT_TRIES {
            let radius = rng.range_f32(lo, hi);
            let margin = radius * kind.bound() + 0.03;
            let cx = rng.range_f32(margin, 1.0 - margin);
            let cy = rng.range_f32(margin, 1.0 - margin);
            let candidate = Shape {
                kind,
                size: class,
                cx,
                cy,
                radius,
                rotation,
                colour_slot,
            };
            let clear = placed.iter().all(|s| {
                len(s.cx - cx, s.cy - cy) >= 0.9 * (s.extent() + candidate.extent()) + 0.02
            });
            if clear {
                return Some(candidate);
            }
        }
        size = class.smaller();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scene_is_a_pure_function_of_its_seed() {
        assert_eq!(Scene::from_seed(9), Scene::from_seed(9));
        assert_ne!(Scene::from_seed(9), Scene::from_seed(10));
    }

    #[test]
    fn scene_shapes_fit_the_frame_and_barely_overlap() {
        let mut counts = [0usize; 5];
        for seed in 0..2000 {
            let scene = Scene::from_seed(seed);
            assert!((1..=4).contains(&scene.shapes.len()), "seed {seed}");
            counts[scene.shapes.len()] += 1;
            for (i, a) in scene.shapes.iter().enumerate() {
                assert!(a.cx - a.extent() >= 0.0 && a.cx + a.extent() <= 1.0);
                assert!(a.cy - a.extent() >= 0.0 && a.cy + a.extent() <= 1.0);
                assert!(a.colour_slot < PALETTE_SLOTS);
                for b in &scene.shapes[i + 1..] {
                    assert!(len(a.cx - b.cx, a.cy - b.cy) >= 0.9 * (a.extent() + b.extent()));
                }
            }
        }
        assert!(counts[1..].iter().all(|&c| c > 100), "{counts:?}");
    }

    #[test]
    fn plurals_and_names() {
        assert_eq!(ShapeKind::Cross.plural(), "crosses");
        assert_eq!(ShapeKind::Star.plural(), "stars");
        assert_eq!(ShapeKind::ALL.len(), 12);
    }
}
