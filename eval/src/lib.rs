//! Evaluation for cotyle (DESIGN.md, "Evaluation"): CSD style descriptors, code-to-style
//! consistency and diversity, CLIP-T, quality, reports and grids. Empty for now: the metrics
//! arrive with issue 7. This crate depends on no training code.
