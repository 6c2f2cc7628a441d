//! The DiT's prompt side (DESIGN.md, "Style-conditioned diffusion transformer"; CoTyle, arXiv
//! 2511.10555, Sec. 3.2): a tokenizer read from a Hugging Face `tokenizer.json` and the chat
//! template of a VLM with a run of image-placeholder tokens, where the style embeddings go.
//!
//! The template is Qwen-Image's (Qwen2.5-VL chat format), with N placeholders:
//! ```text
//! <|im_start|>system\nDescribe the image ...:<|im_end|>\n<|im_start|>user\n
//! <|vision_start|><|image_pad|> x N<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n
//! ```
//! Everything before `<|vision_start|>` is the same for every prompt: that prefix is what the
//! conditioning drops (Qwen-Image drops its system prompt the same way), so the DiT sees the
//! style positions, then the prompt. Placeholders therefore sit at the same positions in every
//! row, [`Encoded::style_at`], and prompts are right-padded, so with a causal LM no real token
//! ever attends to a pad.
//!
//! For the synthetic data there is no pretrained tokenizer to borrow: [`word_tokenizer`] builds
//! a word-level one (lower-cased, split on whitespace and punctuation) over the words of the
//! dataset's prompts plus the template's special tokens, in the same `tokenizer.json` format;
//! `trainer data tokenizer` writes it (`configs/tokenizers/synth.json` is one).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

/// The special tokens of the template, in the order a word tokenizer numbers them.
pub const SPECIAL: [&str; 6] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
];
/// Padding token (Qwen2's).
const PAD: &str = "<|endoftext|>";
const PLACEHOLDER: &str = "<|image_pad|>";
/// The word tokenizer's unknown token.
const UNK: &str = "[UNK]";
const SYSTEM: &str = "Describe the image by detailing the color, shape, size, texture, quantity, \
                      text, spatial relationships of the objects and background:";

/// A batch of prompts in the template, as token ids.
#[derive(Debug)]
pub struct Encoded {
    /// (B, T) u32, right-padded.
    pub ids: Tensor,
    /// (B, T) f32: 1 for tokens, 0 for padding.
    pub mask: Tensor,
    /// Position of the first placeholder; the style run is `style_at..style_at + N`.
    pub style_at: usize,
    /// Tokens before `<|vision_start|>`: dropped from the conditioning.
    pub prefix: usize,
}

/// The tokenizer and the template.
pub struct PromptTemplate {
    tokenizer: Tokenizer,
    /// Ids up to and including `<|vision_start|>`.
    head: Vec<u32>,
    placeholder: u32,
    vision_end: u32,
    /// Ids of `<|im_end|>\n<|im_start|>assistant\n`.
    tail: Vec<u32>,
    pad: u32,
    /// Style placeholders per prompt.
    styles: usize,
}

impl PromptTemplate {
    /// Reads `tokenizer.json`; `styles` placeholders (the codebook's tokens per image).
    pub fn from_file(path: &Path, styles: usize) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", path.display()))?;
        Self::new(tokenizer, styles).with_context(|| format!("tokenizer {}", path.display()))
    }

    pub fn new(tokenizer: Tokenizer, styles: usize) -> Result<Self> {
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                anyhow!("the tokenizer has no `{t}` token, which the template needs")
            })
        };
        let encode = |text: &str| -> Result<Vec<u32>> {
            Ok(tokenizer
                .encode(text, false)
                .map_err(|e| anyhow!("tokenizing the template: {e}"))?
                .get_ids()
                .to_vec())
        };
        let head = encode(&format!(
            "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        ))?;
        if head.last() != Some(&id("<|vision_start|>")?) {
            bail!("`<|vision_start|>` is not a single special token of this tokenizer");
        }
        Ok(PromptTemplate {
            head,
            placeholder: id(PLACEHOLDER)?,
            vision_end: id("<|vision_end|>")?,
            tail: encode("<|im_end|>\n<|im_start|>assistant\n")?,
            pad: id(PAD)?,
            styles,
            tokenizer,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Tokens of `prompt` in the template.
    pub fn length(&self, prompt: &str) -> Result<usize> {
        let words = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| anyhow!("tokenizing `{prompt}`: {e}"))?;
        Ok(self.head.len() + self.styles + 1 + words.len() + self.tail.len())
    }

    /// The prompts in the template, right-padded to the longest, on `dev`.
    pub fn encode(&self, prompts: &[&str], dev: &Device) -> Result<Encoded> {
        let mut rows = Vec::with_capacity(prompts.len());
        for p in prompts {
            let words = self
                .tokenizer
                .encode(*p, false)
                .map_err(|e| anyhow!("tokenizing `{p}`: {e}"))?;
            let mut row = self.head.clone();
            row.extend(std::iter::repeat_n(self.placeholder, self.styles));
            row.push(self.vision_end);
            row.extend_from_slice(words.get_ids());
            row.extend_from_slice(&self.tail);
            rows.push(row);
        }
        let t = rows.iter().map(Vec::len).max().unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for row in &rows {
            mask.extend((0..t).map(|i| if i < row.len() { 1f32 } else { 0.0 }));
            ids.extend(
                row.iter()
                    .copied()
                    .chain(std::iter::repeat(self.pad))
                    .take(t),
            );
        }
        let b = prompts.len();
        Ok(Encoded {
            ids: Tensor::from_vec(ids, (b, t), dev)?,
            mask: Tensor::from_vec(mask, (b, t), dev)?,
            style_at: self.head.len(),
            prefix: self.head.len() - 1,
        })
    }
}

/// A word-level `tokenizer.json` (as text) over the words of `prompts` (lower-cased; sorted, so
/// the same prompts always give the same ids) and the template's words and special tokens.
pub fn word_tokenizer<'a>(prompts: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let mut words = BTreeSet::new();
    let template = format!("system user assistant {SYSTEM}");
    for text in prompts {
        words.extend(split_words(&text.to_lowercase()));
    }
    words.extend(split_words(&template.to_lowercase()));
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, t) in SPECIAL.iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
        added.push(serde_json::json!({
            "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }));
    }
    vocab.insert(UNK.into(), SPECIAL.len().into());
    for w in words {
        let next = vocab.len();
        vocab.entry(w).or_insert(next.into());
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK}
    });
    let text = serde_json::to_string_pretty(&json)? + "\n";
    // What we write must be what the tokenizers crate reads.
    Tokenizer::from_bytes(text.as_bytes())
        .map_err(|e| anyhow!("built an unreadable tokenizer: {e}"))?;
    Ok(text)
}

/// The pieces HF's `Whitespace` pre-tokenizer makes: runs of word characters and runs of
/// other non-space characters.
fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_word = None;
    for c in text.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur_word = None;
            continue;
        }
        let word = c.is_alphanumeric() || c == '_';
        if cur_word.is_some_and(|w| w != word) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
        cur_word = Some(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(styles: usize) -> PromptTemplate {
        let json = word_tokenizer(["Two small stars, left of an oval.", "a square"]).unwrap();
        PromptTemplate::new(Tokenizer::from_bytes(json.as_bytes()).unwrap(), styles).unwrap()
    }

    #[test]
    fn prompts_follow_the_template_with_the_placeholders_at_one_place() {
        let t = template(4);
        let e = t
            .encode(
                &["a square", "two small stars, left of an oval."],
                &Device::Cpu,
            )
            .unwrap();
        let ids: Vec<Vec<u32>> = e.ids.to_vec2().unwrap();
        let mask: Vec<Vec<f32>> = e.mask.to_vec2().unwrap();
        let ph = t.placeholder;
        for row in &ids {
            assert_eq!(&row[..e.style_at], &t.head[..]);
            assert_eq!(&row[e.style_at..e.style_at + 4], &[ph; 4]);
            assert_eq!(row[e.style_at + 4], t.vision_end);
            assert_eq!(row.iter().filter(|&&i| i == ph).count(), 4);
        }
        assert_eq!(e.prefix + 1, e.style_at);
        // "a square" is 2 words, the other 9 (comma and period are words): 7 pads.
        let real: Vec<usize> = mask
            .iter()
            .map(|m| m.iter().filter(|&&v| v == 1.0).count())
            .collect();
        assert_eq!(real[1] - real[0], 7);
        assert!(mask[0][..real[0]].iter().all(|&v| v == 1.0));
        assert!(ids[0][real[0]..].iter().all(|&i| i == t.pad));
        let unk = t.tokenizer.token_to_id(UNK).unwrap();
        assert!(
            !ids[1].contains(&unk),
            "every word of a known prompt is in the vocabulary"
        );
        let e = t.encode(&["a purple hexagon"], &Device::Cpu).unwrap();
        assert!(e.ids.to_vec2::<u32>().unwrap()[0].contains(&unk));
    }

    #[test]
    fn word_tokenizers_are_deterministic_and_split_like_hf_whitespace() {
        let a = word_tokenizer(["b a", "c"]).unwrap();
        assert_eq!(a, word_tokenizer(["c", "a b"]).unwrap());
        assert_eq!(
            split_words("two stars, left-of it."),
            ["two", "stars", ",", "left", "-", "of", "it", "."]
        );
    }
}
