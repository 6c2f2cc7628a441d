//! The DiT's text branch as in a VLM (DESIGN.md, "Style-conditioned diffusion transformer";
//! CoTyle, arXiv 2511.10555, Sec. 3.2): the style embeddings are treated as image features of a
//! vision-language model. A Qwen2 language model (`models/qwen2.rs`; the paper: Qwen2.5-VL-7B's)
//! embeds the templated prompt (`stages/dit_text.rs`), the style embeddings replace the
//! embeddings of the run of image-placeholder tokens, and the LM's last hidden states, without
//! the template's fixed prefix, condition the DiT.
//!
//! The style embeddings must be at the LM's width (the codebook's encoder width: in
//! Qwen2.5-VL the vision merger's output is the LM's width by construction). Frozen with
//! pretrained weights (the paper) or trainable for small from-scratch configs: which one is
//! decided by how the caller builds the `VarBuilder` (plain tensors or a varmap).

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use super::qwen2::{Qwen2, Qwen2Config};

pub struct StyleTextEncoder {
    lm: Qwen2,
}

impl StyleTextEncoder {
    /// The LM's tensors under `vb`, named as a `Qwen2ForCausalLM` checkpoint (its head, if
    /// any, is not read).
    pub fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        // The head is unused: build the LM tied so no `lm_head.weight` is required.
        let cfg = Qwen2Config {
            tie_word_embeddings: true,
            ..cfg.clone()
        };
        Ok(StyleTextEncoder {
            lm: Qwen2::new(&cfg, vb)?,
        })
    }

    /// ids: (B, T) u32 templated prompts, style: (B, N, C) style embeddings for the N
    /// placeholders at `style_at..style_at + N`, `prefix`: leading tokens to drop ->
    /// (B, T - prefix, C) conditioning tokens (style positions first, then the prompt).
    pub fn forward(
        &self,
        ids: &Tensor,
        style: &Tensor,
        style_at: usize,
        prefix: usize,
    ) -> Result<Tensor> {
        let embeds = scatter_styles(&self.lm.embed_tokens(ids)?, style, style_at)?;
        let h = self.lm.hidden_states(&embeds)?;
        let t = h.dim(1)?;
        h.narrow(1, prefix, t - prefix)
    }

    /// The ablation that skips the text branch for the style (`text.inject: direct`): the LM
    /// reads the templated prompt with its placeholder tokens as they are, and the style
    /// embeddings then replace its outputs at the placeholder positions, so they reach the DiT
    /// untouched by the LM. Same shapes as `forward`.
    pub fn forward_direct(
        &self,
        ids: &Tensor,
        style: &Tensor,
        style_at: usize,
        prefix: usize,
    ) -> Result<Tensor> {
        if style_at < prefix {
            bail!("placeholders at {style_at} lie inside the dropped prefix of {prefix} tokens");
        }
        let h = self.lm.hidden_states(&self.lm.embed_tokens(ids)?)?;
        let t = h.dim(1)?;
        scatter_styles(&h.narrow(1, prefix, t - prefix)?, style, style_at - prefix)
    }
}

/// embeds (B, T, C) with rows `at..at + N` replaced by style (B, N, C) -> (B, T, C).
/// Differentiable in both (a concatenation of views).
pub fn scatter_styles(embeds: &Tensor, style: &Tensor, at: usize) -> Result<Tensor> {
    let (b, t, c) = embeds.dims3()?;
    let (bs, n, cs) = style.dims3()?;
    if bs != b || cs != c || at + n > t {
        bail!(
            "style embeddings {:?} do not fit placeholders {at}..{} of prompt embeddings {:?} \
             (same batch, the LM's width {c})",
            style.dims(),
            at + n,
            embeds.dims()
        );
    }
    let style = style.to_dtype(embeds.dtype())?;
    Tensor::cat(
        &[
            &embeds.narrow(1, 0, at)?,
            &style,
            &embeds.narrow(1, at + n, t - at - n)?,
        ],
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2::init_tensors;
    use crate::models::varmap_from;
    use candle_core::{DType, Device};

    fn cfg() -> Qwen2Config {
        Qwen2Config {
            vocab_size: 20,
            max_position_embeddings: 16,
            hidden_size: 32,
            intermediate_size: 48,
            tie_word_embeddings: true,
            ..Qwen2Config::tiny()
        }
    }

    #[test]
    fn the_style_embeddings_land_exactly_on_the_placeholders() {
        let dev = Device::Cpu;
        let e = Tensor::arange(0f32, 2.0 * 7.0 * 3.0, &dev)
            .unwrap()
            .reshape((2, 7, 3))
            .unwrap();
        let s = (Tensor::ones((2, 2, 3), DType::F32, &dev).unwrap() * -1.0).unwrap();
        let out: Vec<Vec<Vec<f32>>> = scatter_styles(&e, &s, 3).unwrap().to_vec3().unwrap();
        let want: Vec<Vec<Vec<f32>>> = e.to_vec3().unwrap();
        for (b, row) in out.iter().enumerate() {
            for (t, v) in row.iter().enumerate() {
                if (3..5).contains(&t) {
                    assert_eq!(v, &[-1.0; 3], "row {b} position {t}");
                } else {
                    assert_eq!(v, &want[b][t], "row {b} position {t}");
                }
            }
        }
        let err = scatter_styles(&e, &s, 6).unwrap_err().to_string();
        assert!(err.contains("placeholders 6..8"), "{err}");
    }

    #[test]
    fn direct_injection_puts_the_raw_style_embeddings_in_the_output() {
        let dev = Device::Cpu;
        let vb = VarBuilder::from_tensors(init_tensors(&cfg(), 3).unwrap(), DType::F32, &dev);
        let enc = StyleTextEncoder::new(&cfg(), vb).unwrap();
        let style = Tensor::randn(0f32, 1.0, (1, 3, 32), &dev).unwrap();
        let ids = Tensor::new(&[[1u32, 2, 5, 5, 5, 7, 9, 4]], &dev).unwrap();
        let out = enc.forward_direct(&ids, &style, 2, 1).unwrap();
        assert_eq!(out.dims(), [1, 7, 32]);
        // Placeholders 2..5 of the prompt are output rows 1..4 once the prefix is dropped.
        let got: Vec<Vec<f32>> = out
            .get(0)
            .unwrap()
            .narrow(0, 1, 3)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(got, style.get(0).unwrap().to_vec2::<f32>().unwrap());
        // The other rows do not see the style: another style changes only the placeholders.
        let other = enc
            .forward_direct(&ids, &style.zeros_like().unwrap(), 2, 1)
            .unwrap();
        let diff = (out - other).unwrap().abs().unwrap().sum(2).unwrap();
        let diff: Vec<f32> = diff.get(0).unwrap().to_vec1().unwrap();
        for (t, d) in diff.iter().enumerate() {
            assert_eq!(*d > 0.0, (1..4).contains(&t), "row {t}: {d}");
        }
        assert!(enc.forward_direct(&ids, &style, 0, 1).is_err());
    }

    #[test]
    fn gradients_reach_the_lm_and_the_style_embeddings() {
        let dev = Device::Cpu;
        let varmap = varmap_from(init_tensors(&cfg(), 3).unwrap()).unwrap();
        let enc = StyleTextEncoder::new(&cfg(), VarBuilder::from_varmap(&varmap, DType::F32, &dev))
            .unwrap();
        let style =
            candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 32), &dev).unwrap())
                .unwrap();
        let ids = Tensor::new(
            &[[1u32, 2, 5, 5, 5, 7, 9, 4], [1, 2, 5, 5, 5, 3, 0, 0]],
            &dev,
        )
        .unwrap();
        let out = enc.forward(&ids, style.as_tensor(), 2, 1).unwrap();
        assert_eq!(out.dims(), [2, 7, 32]);
        let proj = Tensor::randn(0f32, 1.0, (2, 7, 32), &dev).unwrap();
        let grads = (out * proj).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(style.as_tensor()).expect("style gradient");
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            let s = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(s > 0.0 && s.is_finite(), "{name}: {s}");
        }
    }
}
