//! Style interpolation: one index sequence mixed from the sequences of several style codes
//! by weights (CoTyle, arXiv 2511.10555, names style interpolation as a use but publishes no
//! rule; DESIGN.md, "Uses"). The rule is ours:
//!
//! 1. each code's own sequence is sampled as if alone (`Sampler::first`/`next` under that
//!    code's `CodeRng`), so every input is a sequence the generator could have produced;
//! 2. each position t is then taken from one of them, sequence j with probability
//!    w_j / sum(w), drawn with `rng.uniform(Stream::Mix, t)` of the caller's rng (the caller
//!    keys it on the first code, so a given list of codes and weights always mixes the same
//!    way).
//!
//! So weight 1 on one code (the others 0) returns that code's sequence exactly, and the share
//! of positions taken from each code converges to its normalised weight. Positions are kept
//! in place (position t comes from some code's position t), because the codebook's tokens are
//! spatial: a mixed sequence is a patchwork of the styles' tokens, not a shuffle.

use anyhow::{bail, ensure, Result};

use super::philox::{CodeRng, Stream};

/// Mixes `sequences` (all the same length) position by position, choosing sequence j with
/// probability weights[j] / sum(weights). Weights: one per sequence, each finite and >= 0,
/// summing to more than 0.
pub fn interpolate(sequences: &[Vec<u32>], weights: &[f64], rng: &CodeRng) -> Result<Vec<u32>> {
    ensure!(
        sequences.len() == weights.len(),
        "{} sequences but {} weights (one weight per code)",
        sequences.len(),
        weights.len()
    );
    ensure!(!sequences.is_empty(), "no sequences to interpolate");
    let len = sequences[0].len();
    for (j, s) in sequences.iter().enumerate() {
        ensure!(
            s.len() == len,
            "sequence {j} has {} indices but sequence 0 has {len}: interpolated sequences \
             must have the same length",
            s.len()
        );
    }
    for (j, &w) in weights.iter().enumerate() {
        ensure!(
            w.is_finite() && w >= 0.0,
            "weight {j} is {w}: weights must be finite and >= 0"
        );
    }
    // Sequential sums, so the mix is the same on every machine.
    let sum = weights.iter().fold(0.0, |a, &w| a + w);
    if !(sum > 0.0 && sum.is_finite()) {
        bail!("the weights sum to {sum}: at least one must be positive, and the sum finite");
    }
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for &w in weights {
        acc += w / sum;
        cumulative.push(acc);
    }
    // Rounding can leave the last cumulative weight just below u; fall back to the last code
    // that can be chosen at all.
    let last = weights.iter().rposition(|&w| w > 0.0).expect("sum > 0");
    Ok((0..len)
        .map(|t| {
            let u = rng.uniform(Stream::Mix, t as u64);
            let j = cumulative.iter().position(|&c| c > u).unwrap_or(last);
            sequences[j][t]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three distinguishable sequences of length n: sequence j holds 3 t + j at position t.
    fn three(n: u32) -> Vec<Vec<u32>> {
        (0..3)
            .map(|j| (0..n).map(|t| 3 * t + j).collect())
            .collect()
    }

    #[test]
    fn all_weight_on_one_code_returns_its_sequence() {
        let seqs = three(196);
        let rng = CodeRng::new(5);
        for (j, w) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.5]]
            .iter()
            .enumerate()
        {
            assert_eq!(
                interpolate(&seqs, w, &rng).unwrap(),
                seqs[j],
                "weights {w:?}"
            );
        }
    }

    #[test]
    fn shares_converge_to_the_weights_and_positions_stay_in_place() {
        let n = 20_000;
        let seqs = three(n);
        let mixed = interpolate(&seqs, &[0.3, 0.0, 0.7], &CodeRng::new(11)).unwrap();
        let mut from = [0usize; 3];
        for (t, &x) in mixed.iter().enumerate() {
            assert_eq!(x / 3, t as u32, "position {t} moved");
            from[(x % 3) as usize] += 1;
        }
        assert_eq!(from[1], 0, "a code of weight 0 is never chosen");
        let share = from[0] as f64 / n as f64;
        assert!((share - 0.3).abs() < 0.02, "share of the 0.3 code: {share}");
        // Unnormalised weights mean the same.
        let scaled = interpolate(&seqs, &[3.0, 0.0, 7.0], &CodeRng::new(11)).unwrap();
        assert_eq!(scaled, mixed);
    }

    #[test]
    fn deterministic_per_rng() {
        let seqs = three(196);
        let w = [0.5, 0.25, 0.25];
        let a = interpolate(&seqs, &w, &CodeRng::new(1)).unwrap();
        assert_eq!(a, interpolate(&seqs, &w, &CodeRng::new(1)).unwrap());
        let b = interpolate(&seqs, &w, &CodeRng::new(2)).unwrap();
        assert_ne!(a, b, "another rng, another mix");
        let sources: std::collections::HashSet<u32> = a.iter().map(|x| x % 3).collect();
        assert_eq!(
            sources.len(),
            3,
            "every code contributes over 196 positions"
        );
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let rng = CodeRng::new(0);
        let seqs = three(4);
        let err = |s: &[Vec<u32>], w: &[f64]| interpolate(s, w, &rng).unwrap_err().to_string();
        let mut uneven = seqs.clone();
        uneven[2].pop();
        assert!(err(&uneven, &[1.0; 3]).contains("sequence 2 has 3 indices but sequence 0 has 4"));
        assert!(err(&seqs, &[1.0, 1.0]).contains("3 sequences but 2 weights"));
        assert!(err(&seqs, &[1.0, -0.5, 1.0]).contains("weight 1 is -0.5"));
        assert!(err(&seqs, &[f64::NAN, 1.0, 1.0]).contains("weight 0 is NaN"));
        assert!(err(&seqs, &[1.0, f64::INFINITY, 1.0]).contains("weight 1 is inf"));
        assert!(err(&seqs, &[0.0; 3]).contains("sum to 0"));
        assert!(err(&seqs, &[f64::MAX; 3]).contains("sum to inf"));
        assert!(err(&[], &[]).contains("no sequences"));
        // Empty sequences of equal length are fine: nothing to mix.
        assert_eq!(
            interpolate(&[vec![], vec![]], &[1.0, 1.0], &rng).unwrap(),
            Vec::<u32>::new()
        );
    }
}
