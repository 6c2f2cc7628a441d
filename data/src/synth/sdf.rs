//! Signed distance functions of the scene's shape kinds: [`ShapeKind::distance`] and the
//! 2D primitives it is built from (box, equilateral triangle, regular pentagon and hexagon,
//! rhombus, five-pointed star, heart). The primitives follow Inigo Quilez's 2D distance
//! functions (iquilezles.org/articles/distfunctions2d), so that the renderer can anti-alias,
//! outline and wobble every kind the same way.
//!
//! Coordinates are relative to the shape's centre, in the shape's frame with y down as in the
//! image; primitives marked "(y up)" keep the reference's convention and are called with y
//! flipped.

use super::scene::ShapeKind;

impl ShapeKind {
    /// Inradius as a fraction of the radius, for polygons that corner rounding applies to;
    /// `None` for curved kinds.
    fn inradius(self) -> Option<f32> {
        match self {
            ShapeKind::Square => Some(0.78),
            ShapeKind::Triangle => Some(0.55),
            ShapeKind::Pentagon => Some(0.81),
            ShapeKind::Hexagon => Some(0.87),
            ShapeKind::Diamond => Some(0.56),
            ShapeKind::Star => Some(0.3),
            ShapeKind::Cross => Some(0.32),
            _ => None,
        }
    }

    /// Signed distance (negative inside) at `(x, y)` relative to the shape's centre, already
    /// rotated into the shape's frame (y down), for radius `r`. `rounding` in [0, 1) turns
    /// that fraction of a polygon's inradius into round corners at the same inradius.
    /// Lipschitz 1 (exact or a bound), which the renderer's early-out relies on.
    pub fn distance(self, x: f32, y: f32, r: f32, rounding: f32) -> f32 {
        match self.inradius() {
            Some(inr) if rounding > 0.0 => {
                self.sharp_distance(x, y, r * (1.0 - rounding)) - rounding * inr * r
            }
            _ => self.sharp_distance(x, y, r),
        }
    }

    fn sharp_distance(self, x: f32, y: f32, r: f32) -> f32 {
        match self {
            ShapeKind::Circle => len(x, y) - r,
            ShapeKind::Oval => (len(x, y / 0.62) - r) * 0.62,
            ShapeKind::Square => sd_box(x, y, 0.78 * r, 0.78 * r),
            ShapeKind::Triangle => sd_triangle(x, -y, 1.1 * r * 0.866_025_4),
            ShapeKind::Pentagon => sd_pentagon(x, y, 0.809 * r),
            ShapeKind::Hexagon => sd_hexagon(x, y, 0.866 * r),
            ShapeKind::Diamond => sd_rhombus(x, y, 0.68 * r, r),
            ShapeKind::Star => sd_star5(x, -y, 1.06 * r, 0.45),
            ShapeKind::Ring => (len(x, y) - 0.72 * r).abs() - 0.28 * r,
            ShapeKind::Cross => {
                sd_box(x, y, 0.95 * r, 0.32 * r).min(sd_box(x, y, 0.32 * r, 0.95 * r))
            }
            ShapeKind::Heart => {
                let s = r / 0.62;
                sd_heart(x / s, -y / s + 0.55) * s
            }
            ShapeKind::Crescent => (len(x, y) - r).max(0.85 * r - len(x - 0.38 * r, y)),
        }
    }
}

pub(super) fn len(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

fn sd_box(x: f32, y: f32, bx: f32, by: f32) -> f32 {
    let dx = x.abs() - bx;
    let dy = y.abs() - by;
    len(dx.max(0.0), dy.max(0.0)) + dx.max(dy).min(0.0)
}

/// Equilateral triangle of half side `r`, centroid at the origin, apex up (y up).
fn sd_triangle(x: f32, y: f32, r: f32) -> f32 {
    let k = 3f32.sqrt();
    let mut px = x.abs() - r;
    let mut py = y + r / k;
    if px + k * py > 0.0 {
        (px, py) = ((px - k * py) / 2.0, (-k * px - py) / 2.0);
    }
    px -= px.clamp(-2.0 * r, 0.0);
    -len(px, py) * py.signum()
}

/// Regular pentagon of inradius `r`, flat side at +y (apex up in image coordinates).
fn sd_pentagon(x: f32, y: f32, r: f32) -> f32 {
    let (kx, ky, kz) = (0.809_017, 0.587_785_25, 0.726_542_5);
    let (mut px, mut py) = (x.abs(), y);
    let d = 2.0 * (-kx * px + ky * py).min(0.0);
    px += d * kx;
    py -= d * ky;
    let d = 2.0 * (kx * px + ky * py).min(0.0);
    px -= d * kx;
    py -= d * ky;
    px -= px.clamp(-r * kz, r * kz);
    py -= r;
    len(px, py) * py.signum()
}

/// Regular hexagon of inradius `r`, flat top and bottom.
fn sd_hexagon(x: f32, y: f32, r: f32) -> f32 {
    let (kx, ky, kz) = (-0.866_025_4, 0.5, 0.577_350_26);
    let (mut px, mut py) = (x.abs(), y.abs());
    let d = 2.0 * (kx * px + ky * py).min(0.0);
    px -= d * kx;
    py -= d * ky;
    px -= px.clamp(-kz * r, kz * r);
    py -= r;
    len(px, py) * py.signum()
}

/// Rhombus with half diagonals `bx` (horizontal) and `by` (vertical).
fn sd_rhombus(x: f32, y: f32, bx: f32, by: f32) -> f32 {
    let (px, py) = (x.abs(), y.abs());
    let ndot = (bx - 2.0 * px) * bx - (by - 2.0 * py) * by;
    let h = (ndot / (bx * bx + by * by)).clamp(-1.0, 1.0);
    let d = len(px - 0.5 * bx * (1.0 - h), py - 0.5 * by * (1.0 + h));
    d * (px * by + py * bx - bx * by).signum()
}

/// Five-pointed star with outer radius `r` and inner ratio `rf`, tip up (y up).
fn sd_star5(x: f32, y: f32, r: f32, rf: f32) -> f32 {
    let (k1x, k1y) = (0.809_017, -0.587_785_25);
    let (k2x, k2y) = (-k1x, k1y);
    let (mut px, mut py) = (x.abs(), y);
    let d = 2.0 * (k1x * px + k1y * py).max(0.0);
    px -= d * k1x;
    py -= d * k1y;
    let d = 2.0 * (k2x * px + k2y * py).max(0.0);
    px -= d * k2x;
    py -= d * k2y;
    px = px.abs();
    py -= r;
    let (bax, bay) = (rf * -k1y, rf * k1x - 1.0);
    let h = ((px * bax + py * bay) / (bax * bax + bay * bay)).clamp(0.0, r);
    len(px - bax * h, py - bay * h) * (py * bax - px * bay).signum()
}

/// Unit heart, bottom tip at the origin, about 1.1 tall (y up).
fn sd_heart(x: f32, y: f32) -> f32 {
    let px = x.abs();
    if y + px > 1.0 {
        return len(px - 0.25, y - 0.75) - std::f32::consts::SQRT_2 / 4.0;
    }
    let m = 0.5 * (px + y).max(0.0);
    let a = px * px + (y - 1.0) * (y - 1.0);
    let b = (px - m) * (px - m) + (y - m) * (y - m);
    a.min(b).sqrt() * (px - y).signum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdf_signs_match_inside_and_outside() {
        for kind in ShapeKind::ALL {
            for rounding in [0.0, 0.3] {
                let outside = kind.distance(0.0, 1.5, 1.0, rounding);
                assert!(outside > 0.3, "{kind:?} outside {outside}");
                // Every kind but the ring and crescent covers a point just left of centre.
                if !matches!(kind, ShapeKind::Ring | ShapeKind::Crescent) {
                    assert!(kind.distance(-0.05, 0.0, 1.0, rounding) < 0.0, "{kind:?}");
                }
            }
        }
        assert!(ShapeKind::Ring.distance(0.72, 0.0, 1.0, 0.0) < 0.0);
        assert!(ShapeKind::Crescent.distance(-0.8, 0.0, 1.0, 0.0) < 0.0);
        // Exact distance for the circle and the box.
        assert!((ShapeKind::Circle.distance(3.0, 4.0, 1.0, 0.0) - 4.0).abs() < 1e-5);
        assert!((ShapeKind::Square.distance(1.78, 0.0, 1.0, 0.0) - 1.0).abs() < 1e-5);
    }
}
