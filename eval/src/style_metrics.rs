//! Style metrics of CoTyle (arXiv 2511.10555, Sec. 4, Table 1; DESIGN.md, "Evaluation"):
//! code-to-style consistency and diversity over images generated from style codes, and the
//! image-conditioned consistency (and matched / mismatched "style gap") of images generated
//! from reference images. Inputs are style embeddings (CSD, [`mod@crate::csd`]), one row of
//! width `d` per image, row-major in one flat slice, as in [`mod@crate::retrieval`].
//!
//! Definitions. Every row x_i is scaled here to unit L2 norm, in f64: u_i = x_i / ||x_i||_2,
//! and cos(i, j) = <u_i, u_j>. Images are grouped by style code: G_c = { i : code_i = c },
//! n_c = |G_c|, C codes.
//!
//! ```text
//! consistency     = (1/C) sum_c [ 2 / (n_c (n_c - 1)) * sum_{i<j in G_c} cos(i, j) ]
//! P_x             = { (i, j) : i < j, code_i != code_j }          (cross-code pairs)
//! diversity       = 1 - (1/|P_x|) sum_{(i,j) in P_x} cos(i, j)
//! margin          = consistency - (1 - diversity)
//!                 = consistency - mean cross-code cosine
//! ```
//!
//! Consistency is the mean over codes of each code's mean over its unordered pairs; every
//! code needs n_c >= 2. Diversity is the mean over ALL cross-code pairs, each unordered pair
//! once (not a mean over pairs of codes): larger codes weigh more. Under the paper's
//! protocol (500 codes x 4 images, every code the same size) both choices coincide with
//! their per-code / per-code-pair counterparts. The margin is the acceptance test of the
//! code-to-style stage: images of one code must be clearly more alike than images of
//! different codes (paper, CoTyle: 0.6007 - (1 - 0.7764) = 0.3771).
//!
//! For reference-conditioned generation, generated image g_i (N of them) was made from
//! reference r_{o(i)} (R references, o = `owner`):
//!
//! ```text
//! image_consistency = matched = (1/N) sum_i cos(g_i, r_{o(i)})
//! mismatched        = (1 / (N (R - 1))) sum_i sum_{r != o(i)} cos(g_i, r_r)
//! ```
//!
//! mismatched is the mean over all (generated, other reference) pairs, references that own
//! no generated image included; matched - mismatched is the style gap the DiT stage reports.
//!
//! Numerics: unit rows and every sum are f64; each dot product is summed in a fixed order
//! (4 lanes, then the tail). Where rows are spread over threads, each thread only fills
//! per-row partial sums, which are then added in row order: the result does not depend on
//! the thread count. Cosines are not clamped (rounding may give 1 + 1e-16).

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::EvalError;

/// Code-to-style consistency and diversity of one set of generated images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StyleScores {
    /// Mean over codes of the mean pairwise cosine within the code.
    pub consistency: f64,
    /// 1 - mean cosine over all cross-code pairs.
    pub diversity: f64,
    /// Distinct codes.
    pub codes: usize,
    /// Images (rows).
    pub images: usize,
}

impl StyleScores {
    /// consistency - (1 - diversity): how much more alike images of one code are than
    /// images of different codes. Positive and clearly above 0 is the acceptance criterion.
    pub fn margin(&self) -> f64 {
        self.consistency - (1.0 - self.diversity)
    }
}

const STYLE_AT: &str = "style embeddings";
const GENERATED_AT: &str = "generated embeddings";
const REFERENCE_AT: &str = "reference embeddings";

/// Code-to-style consistency of `embeddings` (n rows of `d`, row-major; n = `codes.len()`),
/// image i made from style code `codes[i]` (see the module header for the formula).
/// Refused: `d = 0`, no rows, a length other than n x d, a non-finite value or an all-zero
/// row (named by row and column), a code with fewer than 2 images (named, with its row).
pub fn consistency(embeddings: &[f32], d: usize, codes: &[u32]) -> Result<f64, EvalError> {
    let unit = unit_rows(STYLE_AT, embeddings, d, codes.len())?;
    consistency_of(&unit, d, &groups(codes))
}

/// Diversity of `embeddings` (n rows of `d`; n = `codes.len()`): 1 - the mean cosine over
/// all pairs of images of different codes (module header). Codes of a single image are
/// allowed here. Refused: as [`consistency`] for the embeddings, and fewer than 2 codes.
pub fn diversity(embeddings: &[f32], d: usize, codes: &[u32]) -> Result<f64, EvalError> {
    let unit = unit_rows(STYLE_AT, embeddings, d, codes.len())?;
    diversity_of(&unit, d, codes, &groups(codes))
}

/// [`consistency`] and [`diversity`] together, the rows normalised once. Refused: whatever
/// either refuses.
pub fn style_scores(embeddings: &[f32], d: usize, codes: &[u32]) -> Result<StyleScores, EvalError> {
    let unit = unit_rows(STYLE_AT, embeddings, d, codes.len())?;
    let groups = groups(codes);
    Ok(StyleScores {
        consistency: consistency_of(&unit, d, &groups)?,
        diversity: diversity_of(&unit, d, codes, &groups)?,
        codes: groups.len(),
        images: codes.len(),
    })
}

/// Image-conditioned consistency: mean cosine between each generated image and the
/// reference it was made from. `generated`: N rows of `d` (N = `owner.len()`);
/// `references`: R rows of `d` (R = `references.len() / d`); generated row i was made from
/// reference row `owner[i]`. Refused: `d = 0`, no generated or no reference rows, lengths
/// that are not N x d / a multiple of d, a non-finite value or an all-zero row (named by
/// input, row and column), an owner past the last reference (named by generated row).
pub fn image_consistency(
    generated: &[f32],
    references: &[f32],
    d: usize,
    owner: &[usize],
) -> Result<f64, EvalError> {
    let (g, r) = checked_pairs(generated, references, d, owner)?;
    Ok(matched_of(&g, &r, d, owner))
}

/// (matched, mismatched): the mean cosine of each generated image to its own reference
/// (= [`image_consistency`]) and the mean cosine over all pairs of a generated image and a
/// reference it was NOT made from (module header). Inputs as [`image_consistency`];
/// refused in addition: a single reference (nothing to mismatch against).
pub fn matched_mismatched(
    generated: &[f32],
    references: &[f32],
    d: usize,
    owner: &[usize],
) -> Result<(f64, f64), EvalError> {
    let (g, r) = checked_pairs(generated, references, d, owner)?;
    let n_refs = r.len() / d;
    if n_refs < 2 {
        return Err(EvalError::input(
            REFERENCE_AT,
            "a single reference: no other reference to measure the mismatched similarity",
        ));
    }
    let matched = matched_of(&g, &r, d, owner);
    let per_row: Vec<f64> = g
        .par_chunks_exact(d)
        .zip(owner.par_iter())
        .map(|(gi, &own)| {
            r.chunks_exact(d)
                .enumerate()
                .filter(|&(k, _)| k != own)
                .map(|(_, rk)| dot(gi, rk))
                .sum::<f64>()
        })
        .collect();
    let pairs = owner.len() * (n_refs - 1);
    let mismatched = per_row.iter().sum::<f64>() / pairs as f64;
    Ok((matched, mismatched))
}

/// Rows of each code, codes ascending, rows ascending within a code.
fn groups(codes: &[u32]) -> BTreeMap<u32, Vec<usize>> {
    let mut groups = BTreeMap::<u32, Vec<usize>>::new();
    for (row, &c) in codes.iter().enumerate() {
        groups.entry(c).or_default().push(row);
    }
    groups
}

fn consistency_of(
    unit: &[f64],
    d: usize,
    groups: &BTreeMap<u32, Vec<usize>>,
) -> Result<f64, EvalError> {
    if let Some((code, rows)) = groups.iter().find(|(_, rows)| rows.len() < 2) {
        return Err(EvalError::input(
            format!("style codes, code {code} (row {})", rows[0]),
            "a single image: pairwise consistency needs 2 or more images per code",
        ));
    }
    let row = |i: usize| &unit[i * d..(i + 1) * d];
    let mut sum_over_codes = 0f64;
    for rows in groups.values() {
        let mut sum = 0f64;
        for (a, &i) in rows.iter().enumerate() {
            for &j in &rows[a + 1..] {
                sum += dot(row(i), row(j));
            }
        }
        let n = rows.len();
        sum_over_codes += sum / (n * (n - 1) / 2) as f64;
    }
    Ok(sum_over_codes / groups.len() as f64)
}

fn diversity_of(
    unit: &[f64],
    d: usize,
    codes: &[u32],
    groups: &BTreeMap<u32, Vec<usize>>,
) -> Result<f64, EvalError> {
    if groups.len() < 2 {
        return Err(EvalError::input(
            "style codes",
            format!(
                "all {} images have code {}: no pair of different codes",
                codes.len(),
                codes[0]
            ),
        ));
    }
    let n = codes.len();
    let row = |i: usize| &unit[i * d..(i + 1) * d];
    // Per row i: the sum over j > i of a different code; added in row order below.
    let per_row: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            (i + 1..n)
                .filter(|&j| codes[j] != codes[i])
                .map(|j| dot(row(i), row(j)))
                .sum::<f64>()
        })
        .collect();
    let same_code_pairs: usize = groups.values().map(|r| r.len() * (r.len() - 1) / 2).sum();
    let cross_pairs = n * (n - 1) / 2 - same_code_pairs;
    Ok(1.0 - per_row.iter().sum::<f64>() / cross_pairs as f64)
}

/// Checks both inputs and the owners; returns the unit rows of generated and references.
fn checked_pairs(
    generated: &[f32],
    references: &[f32],
    d: usize,
    owner: &[usize],
) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    let g = unit_rows(GENERATED_AT, generated, d, owner.len())?;
    if !references.len().is_multiple_of(d) {
        return Err(EvalError::input(
            REFERENCE_AT,
            format!(
                "{} floats, not a whole number of rows of d = {d}",
                references.len()
            ),
        ));
    }
    let n_refs = references.len() / d;
    let r = unit_rows(REFERENCE_AT, references, d, n_refs)?;
    if let Some((i, &o)) = owner.iter().enumerate().find(|&(_, &o)| o >= n_refs) {
        return Err(EvalError::input(
            format!("owner of generated row {i}"),
            format!("reference {o}, but there are {n_refs} references (rows 0..{n_refs})"),
        ));
    }
    Ok((g, r))
}

fn matched_of(g: &[f64], r: &[f64], d: usize, owner: &[usize]) -> f64 {
    let sum: f64 = g
        .chunks_exact(d)
        .zip(owner)
        .map(|(gi, &o)| dot(gi, &r[o * d..(o + 1) * d]))
        .sum();
    sum / owner.len() as f64
}

/// Checks `n` rows of `d` and returns them scaled to unit L2 norm, in f64. `at` names the
/// input in errors.
fn unit_rows(at: &str, embeddings: &[f32], d: usize, n: usize) -> Result<Vec<f64>, EvalError> {
    if d == 0 {
        return Err(EvalError::input(at, "embedding width d = 0"));
    }
    if n == 0 {
        return Err(EvalError::input(at, "no embeddings"));
    }
    if n.checked_mul(d) != Some(embeddings.len()) {
        return Err(EvalError::input(
            at,
            format!("{} floats, expected {n} rows x d = {d}", embeddings.len()),
        ));
    }
    let mut unit: Vec<f64> = embeddings.iter().map(|&v| f64::from(v)).collect();
    for (row, x) in unit.chunks_exact_mut(d).enumerate() {
        if let Some(col) = x.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::input(
                format!("{at} row {row} column {col}"),
                format!("non-finite value {}", x[col]),
            ));
        }
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(EvalError::input(
                format!("{at} row {row}"),
                "all zeros: cosine similarity is undefined",
            ));
        }
        for v in x.iter_mut() {
            *v /= norm;
        }
    }
    Ok(unit)
}

/// Dot product in a fixed summation order (4 lanes, then the tail).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (a4, a_tail) = a.as_chunks::<4>();
    let (b4, b_tail) = b.as_chunks::<4>();
    for (x, y) in a4.iter().zip(b4) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum() {
        // d = 11: two 4-lane chunks and a tail of 3.
        let a: Vec<f64> = (0..11).map(|i| i as f64 * 0.5 - 2.0).collect();
        let b: Vec<f64> = (0..11).map(|i| 3.0 - i as f64).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-12);
    }
}
