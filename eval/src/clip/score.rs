//! The two CLIP scores on embeddings, in f64 on the host.
//!
//! **CLIP-T** (text alignment, as in the paper's Table 1 and e.g. StyleDrop / InstantStyle):
//! for an image x and its prompt y, `cos(E_I(x), E_T(y))`, the cosine of CLIP's projected
//! image and text embeddings (no ×100, no clipping at 0 as in Hessel et al.'s CLIPScore); the
//! reported figure is the mean over the pairs.
//!
//! **Quality** after CLIP-IQA (Wang, Chan, Loy 2023, "Exploring CLIP for Assessing the Look and
//! Feel of Images", AAAI, section 3): with an antonym prompt pair (t+, t-) = ("Good photo.",
//! "Bad photo."), `s± = logit_scale · cos(E_I(x), E_T(t±))` and the score is the softmax
//! probability of the positive, `exp(s+) / (exp(s+) + exp(s-)) = sigmoid(s+ - s-)`, in [0, 1].
//! `logit_scale` is CLIP's learnt temperature, `exp` of the checkpoint's `logit_scale` (100
//! for OpenAI's models). CLIP-IQA itself uses a ResNet-50 CLIP without positional embeddings
//! at the image's own resolution; we use the evaluation's CLIP (ViT-L/14 at 224, centre
//! crop), so the prompts and the formula are CLIP-IQA's but the numbers are not comparable to
//! its paper's.

use candle_core::{bail, Result, Tensor};

/// CLIP-IQA's antonym pair for overall quality: (positive, negative).
pub const QUALITY_PROMPTS: [&str; 2] = ["Good photo.", "Bad photo."];

/// Rows of a (N, P) tensor as f64 vectors, each divided by its L2 norm (floored at 1e-12,
/// as torch's `F.normalize`). An error naming `what` for another rank or N = 0.
pub fn unit_rows(x: &Tensor, what: &str) -> Result<Vec<Vec<f64>>> {
    if x.rank() != 2 || x.dim(0)? == 0 {
        bail!(
            "clip: {what} must be (N, P) with N >= 1, got {:?}",
            x.dims()
        );
    }
    let rows = x.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            r.into_iter().map(|v| v / n).collect()
        })
        .collect())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// CLIP-T per pair: the cosine of row i of `images` and row i of `texts`, each in [-1, 1].
/// images, texts: (N, P) -> N. An error naming the shapes when they differ.
pub fn pair_cosines(images: &Tensor, texts: &Tensor) -> Result<Vec<f64>> {
    if images.dims() != texts.dims() {
        bail!(
            "clip-t: image embeddings {:?} and text embeddings {:?} must have the same shape",
            images.dims(),
            texts.dims()
        );
    }
    let (a, b) = (
        unit_rows(images, "image embeddings")?,
        unit_rows(texts, "text embeddings")?,
    );
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| dot(x, y).clamp(-1.0, 1.0))
        .collect())
}

/// The quality score of each image: the softmax probability of the positive prompt over the
/// pair, from `logit_scale · cos`. images: (N, P), positive, negative: (1, P) or (P) text
/// embeddings, `scale` = exp(logit_scale) -> N values in [0, 1].
pub fn antonym_probability(
    images: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    scale: f64,
) -> Result<Vec<f64>> {
    let row = |t: &Tensor, what: &str| -> Result<Vec<f64>> {
        let t = if t.rank() == 1 {
            t.unsqueeze(0)?
        } else {
            t.clone()
        };
        let mut rows = unit_rows(&t, what)?;
        if rows.len() != 1 {
            bail!(
                "clip quality: {what} must be one embedding, got {:?}",
                t.dims()
            );
        }
        Ok(rows.remove(0))
    };
    let (pos, neg) = (
        row(positive, "positive prompt")?,
        row(negative, "negative prompt")?,
    );
    let imgs = unit_rows(images, "image embeddings")?;
    if pos.len() != imgs[0].len() || neg.len() != pos.len() {
        bail!(
            "clip quality: image embeddings {:?} and prompt embeddings of width {} differ",
            images.dims(),
            pos.len()
        );
    }
    Ok(imgs
        .iter()
        .map(|x| {
            let (sp, sn) = (scale * dot(x, &pos), scale * dot(x, &neg));
            let m = sp.max(sn);
            let (ep, en) = ((sp - m).exp(), (sn - m).exp());
            ep / (ep + en)
        })
        .collect())
}

/// The mean of per-pair scores (the paper's CLIP-T figure); None for no scores.
pub fn mean(scores: &[f64]) -> Option<f64> {
    (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
}
