//! Synthetic paired-style images: the stand-in for the paper's style-paired training data
//! (arXiv 2511.10555, Sec. 3.1 trains the codebook on image pairs that share a style).
//!
//! A picture is `render(style, scene, size)`:
//! - [`Style`] is drawn from a style seed only: palette, background, fill, outline, wobble,
//!   background pattern and post effects. It never looks at content.
//! - [`Scene`] is drawn from a content seed only: which shapes, where, how big, and which
//!   palette *slot* each uses. Its [`Scene::prompt`] names content, never colours or rendering.
//! - [`render()`] is a pure, single-threaded function of the two, so two images with the same
//!   style seed are a positive pair, and the dataset is byte-identical on every machine.
//!
//! [`generate`] renders the dataset into parquet shards (`trainer data synth`).
//!
//! All geometry is in normalised units (fractions of the image side), so one style looks the
//! same at 64 and at 256 pixels.

pub mod generate;
pub mod render;
pub mod scene;
pub mod style;

mod effects;
mod palette;
mod prompt;
mod sdf;

pub use render::render;
pub use scene::Scene;
pub use style::Style;
