//! Turning a style code into an index sequence: the counter-based RNG the code seeds, the
//! logits processors of the AR sampler (DESIGN.md, "Autoregressive style generator") and
//! style interpolation.
//!
//! The sampling contract, for a style code c and a sequence of length L:
//! - every random number is `CodeRng::new(c).uniform(stream, position)`, a pure function of
//!   (code, stream, position) (`philox`);
//! - position 0 is `Sampler::first`: uniform over the vocabulary;
//! - position t in 1..L is `Sampler::next` on the generator's logits at t given positions
//!   0..t, through repetition penalty, high-frequency suppression, temperature, top-k, top-p
//!   and an inverse-CDF draw, all sequential f64 (`logits`);
//! - so a code gives the same sequence on every machine, backend, batch size and thread
//!   count, provided the model's logits are the same;
//! - interpolation samples each code's sequence alone, then takes each position from one of
//!   them by weight (`interpolate`).

pub mod folder;
pub mod interpolate;
pub mod logits;
pub mod philox;
pub mod pipeline;

pub use interpolate::interpolate;
pub use logits::{Sampler, SamplingConfig};
pub use philox::CodeRng;
