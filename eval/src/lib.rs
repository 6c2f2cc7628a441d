//! Evaluation for cotyle (DESIGN.md, "Evaluation"). Holds the held-out-style retrieval
//! metrics of the codebook stage ([`mod@retrieval`], issue 4) and the CSD style descriptor
//! ([`mod@csd`]: CLIP ViT-L/14 without its projection plus style and content heads, its
//! preprocessing, on the `kernels` ops so it stays trainable), and the style metrics of the
//! paper's Table 1 ([`mod@style_metrics`]: code-to-style consistency and diversity, their
//! margin, image-conditioned consistency and the matched / mismatched style gap), and CLIP
//! ([`mod@clip`]: a Hugging Face `CLIPModel` checkpoint, its image tower being the CSD ViT
//! through one name table) for CLIP-T and a CLIP-IQA-style quality score; reports and grids
//! arrive with issue 7. This crate depends on no training code: metrics take plain slices.

pub mod clip;
pub mod csd;
pub mod error;
pub mod retrieval;
pub mod style_metrics;

pub use clip::{Clip, ClipConfig, ClipModel, ClipTokenizer};
pub use csd::{Csd, CsdConfig};
pub use error::EvalError;
pub use retrieval::{retrieval, Retrieval};
pub use style_metrics::{
    consistency, diversity, image_consistency, matched_mismatched, style_scores, StyleScores,
};
