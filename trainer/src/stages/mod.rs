//! The training stages (DESIGN.md, "Layout": `src/stages/`): each an explicit loop over the
//! shared pieces in `train/`, with its own config sections, evaluation and loss.
//!
//! - [`codebook`]: stage 1, the style codebook loop; [`codebook_parts`] builds its encoder
//!   and codebook (fresh or from a checkpoint), [`codebook_loss`] its losses,
//!   [`codebook_eval`] held-out retrieval, [`codebook_extract`] the index sequences for the
//!   AR stage, [`codebook_config`] its config sections.

pub mod ar;
pub mod ar_data;
pub mod ar_sample;
pub mod codebook;
pub mod codebook_config;
pub mod codebook_eval;
pub mod codebook_extract;
pub mod codebook_loss;
pub mod codebook_parts;
