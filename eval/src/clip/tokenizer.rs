//! CLIP's prompt tokenization (github.com/openai/CLIP `clip/clip.py`, `tokenize`): a
//! `tokenizer.json` (Hugging Face `openai/clip-vit-large-patch14`, read by the `tokenizers`
//! crate) for the text, then OpenAI's framing, done here rather than by the file's post
//! processor so any CLIP `tokenizer.json` gives the same ids:
//!
//! ```text
//! [<|startoftext|>, t_1 .. t_n, <|endoftext|>, 0, 0, ...]   exactly context_length (77) ids
//! n > context_length - 2: t truncated to context_length - 2 (clip.tokenize(truncate=True))
//! ```
//!
//! Padding is 0 as `clip.tokenize` (HF pads with `<|endoftext|>`); under the causal mask
//! nothing after EOS reaches the EOS row, so both give the same embeddings. The text tower
//! pools at `argmax(ids)`, so loading checks that `<|endoftext|>` has the highest id of the
//! vocabulary (true of OpenAI's, 49407 of 49408).

use std::path::Path;

use candle_core::{bail, Device, Result, Tensor};
use tokenizers::Tokenizer;

/// CLIP's begin-of-text token.
pub const BOS: &str = "<|startoftext|>";
/// CLIP's end-of-text token, the highest id of the vocabulary.
pub const EOS: &str = "<|endoftext|>";
/// The id after EOS (`clip.tokenize`'s zeros).
pub const PAD_ID: u32 = 0;

/// A CLIP tokenizer framing prompts to a fixed length.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    context_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("context_length", &self.context_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// From a `tokenizer.json` file; errors name the file.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let at = format!("clip tokenizer {}", path.display());
        let inner = Tokenizer::from_file(path)
            .map_err(|e| candle_core::Error::msg(format!("{at}: {e}")))?;
        Self::from_tokenizer(inner, context_length, &at)
    }

    /// From the bytes of a `tokenizer.json`; `at` names the source in errors.
    pub fn from_bytes(bytes: &[u8], context_length: usize, at: &str) -> Result<Self> {
        let inner = Tokenizer::from_bytes(bytes)
            .map_err(|e| candle_core::Error::msg(format!("{at}: {e}")))?;
        Self::from_tokenizer(inner, context_length, at)
    }

    /// Wraps a loaded tokenizer: drops its own padding and truncation, finds BOS and EOS and
    /// checks that EOS has the highest id. Errors begin with `at`.
    pub fn from_tokenizer(mut inner: Tokenizer, context_length: usize, at: &str) -> Result<Self> {
        if context_length < 2 {
            bail!("{at}: context_length {context_length} leaves no room for BOS and EOS");
        }
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| candle_core::Error::msg(format!("{at}: {e}")))?;
        let id = |t: &str| match inner.token_to_id(t) {
            Some(id) => Ok(id),
            None => Err(candle_core::Error::msg(format!("{at}: no token {t}"))),
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        if let Some((tok, top)) = inner
            .get_vocab(true)
            .into_iter()
            .filter(|(_, i)| *i > eos)
            .max_by_key(|(_, i)| *i)
        {
            bail!(
                "{at}: {EOS} is id {eos} but {tok:?} is {top}; CLIP pools the text at the \
                 highest id, so EOS must be the highest"
            );
        }
        Ok(ClipTokenizer {
            inner,
            bos,
            eos,
            context_length,
        })
    }

    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The framed ids of each prompt, each exactly `context_length` long. An error naming
    /// the prompt the tokenizer refuses.
    pub fn encode(&self, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let enc = self.inner.encode(*p, false).map_err(|e| {
                    candle_core::Error::msg(format!("clip tokenizer: prompt {i} {p:?}: {e}"))
                })?;
                let body = enc.get_ids();
                let n = body.len().min(self.context_length - 2);
                let mut ids = Vec::with_capacity(self.context_length);
                ids.push(self.bos);
                ids.extend_from_slice(&body[..n]);
                ids.push(self.eos);
                ids.resize(self.context_length, PAD_ID);
                Ok(ids)
            })
            .collect()
    }

    /// [`ClipTokenizer::encode`] as a u32 tensor (B, context_length) on `device`; an error for
    /// no prompts.
    pub fn encode_tensor(&self, prompts: &[&str], device: &Device) -> Result<Tensor> {
        if prompts.is_empty() {
            bail!("clip tokenizer: no prompts");
        }
        let ids = self.encode(prompts)?;
        Tensor::from_vec(ids.concat(), (prompts.len(), self.context_length), device)
    }
}
