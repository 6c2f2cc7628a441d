//! The training stages (DESIGN.md, "Layout": `src/stages/`): each an explicit loop over the
//! shared pieces in `train/`, with its own config sections, evaluation and loss.
//!
//! - [`codebook`]: stage 1, the style codebook loop; [`codebook_parts`] builds its encoder
//!   and codebook (fresh or from a checkpoint), [`codebook_loss`] its losses,
//!   [`codebook_eval`] held-out retrieval, [`codebook_extract`] the index sequences for the
//!   AR stage, [`codebook_config`] its config sections.
//! - [`dit`]: stage 2, the style-conditioned DiT loop; [`dit_parts`] builds the frozen
//!   codebook, the text branch and the MMDiT, [`dit_text`] the tokenizer and prompt template,
//!   [`dit_flow`] the rectified-flow objective (timesteps, noise, condition dropout),
//!   [`dit_sample`] the Euler sampler with classifier-free guidance, [`dit_generate`] images
//!   from style indices and the held-out style check, [`dit_config`] its config sections.
//! - [`ar`]: stage 3, the style generator loop; [`ar_data`] its index batches,
//!   [`ar_sample`] code -> index sequence with the KV cache.
//! - [`descriptor`]: the offline style descriptor of the evaluation (a small CSD trained
//!   with a supervised-contrastive style loss on disjoint synthetic styles);
//!   [`descriptor_data`] its data (synthesis, K styles x M images batches, the held-out
//!   set), [`descriptor_config`] its config.

pub mod ar;
pub mod ar_data;
pub mod ar_sample;
pub mod codebook;
pub mod codebook_config;
pub mod codebook_eval;
pub mod codebook_extract;
pub mod codebook_loss;
pub mod codebook_parts;
pub mod descriptor;
pub mod descriptor_config;
pub mod descriptor_data;
pub mod dit;
pub mod dit_config;
pub mod dit_flow;
pub mod dit_generate;
pub mod dit_parts;
pub mod dit_sample;
pub mod dit_text;
pub mod eval_images;
pub mod eval_protocol;
