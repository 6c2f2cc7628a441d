//! Evaluation for cotyle (DESIGN.md, "Evaluation"). Holds the held-out-style retrieval
//! metrics of the codebook stage ([`mod@retrieval`], issue 4); CSD style descriptors,
//! code-to-style consistency and diversity, CLIP-T, quality, reports and grids arrive with
//! issue 7. This crate depends on no training code: metrics take plain slices.

pub mod error;
pub mod retrieval;

pub use error::EvalError;
pub use retrieval::{retrieval, Retrieval};
