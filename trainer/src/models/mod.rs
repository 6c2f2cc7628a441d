//! Model definitions only: no loops, no files (DESIGN.md, "Layout" and "Rules of the house").
//! Each model is `new(cfg, vb)` with `vb.pp(..)` paths that mirror the reference checkpoint's
//! tensor names, so real weights load without renaming.
//!
//! - [`vision`]: the Qwen2.5-VL vision tower (the frozen feature extractor of the codebook).
//! - [`codebook`]: the style codebook (projection, cosine VQ, mirror = style embeddings).
//! - [`mmdit`]: the stage-2 diffusion transformer, an MMDiT in Qwen-Image's layout.
//! - [`qwen2`]: the style generator, a Qwen2 decoder over codebook indices.
//! - [`style_text`]: the DiT's text branch, a Qwen2 LM with the style embeddings scattered in.
//! - [`layers`]: `Linear` and `RmsNorm` on the `kernels` ops; [`init`]: seeded init streams.

pub mod codebook;
pub mod init;
pub mod layers;
pub mod mmdit;
pub mod qwen2;
pub mod style_text;
#[cfg(test)]
pub mod testing;
pub mod vae;
pub mod vision;

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

/// A `VarMap` holding `tensors` as trainable variables under their names: the trainable
/// build of a model is `VarBuilder::from_varmap(&varmap_from(init)?, dtype, dev)`, and the
/// optimiser takes the varmap's `(name, Var)` pairs.
pub fn varmap_from(tensors: HashMap<String, Tensor>) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .expect("a fresh VarMap's lock is not poisoned");
        for (name, t) in tensors {
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}
