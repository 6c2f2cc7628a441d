//! Style metrics (consistency, diversity, margin, image consistency, matched / mismatched):
//! hand-computed examples in the plane, the mean-over-codes / mean-over-pairs choices,
//! extreme cases, a brute-force cross-check, and refused inputs.

use eval::{
    consistency, diversity, image_consistency, matched_mismatched, style_scores, EvalError,
    StyleScores,
};

const TOL: f64 = 1e-6; // inputs are f32: cosines of exact angles are exact to ~1e-7

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < TOL
}

/// Vectors in the plane at `degrees` with lengths `scale` (cosine ignores the length).
fn plane(points: &[(f64, f64)]) -> Vec<f32> {
    points
        .iter()
        .flat_map(|&(deg, scale)| {
            let r = deg.to_radians();
            [(scale * r.cos()) as f32, (scale * r.sin()) as f32]
        })
        .collect()
}

/// `at` and `detail` of an input error.
fn input_error<T: std::fmt::Debug>(r: Result<T, EvalError>) -> (String, String) {
    match r {
        Err(EvalError::Input { at, detail }) => (at, detail),
        Ok(v) => panic!("expected an input error, got {v:?}"),
    }
}

/// Two codes x two images, rows interleaved:
///   row 0: code 7 at 0 deg       row 1: code 3 at 90 deg (length 2)
///   row 2: code 7 at 60 deg      row 3: code 3 at 90 deg (length 0.5)
/// Within code 7: cos 60 = 0.5; within code 3: cos 0 = 1.
///   consistency = (0.5 + 1) / 2 = 0.75
/// Cross-code pairs: (0,1), (0,3): cos 90 = 0; (2,1), (2,3): cos 30 = sqrt(3)/2.
///   mean cross cosine = (0 + 0 + sqrt3/2 + sqrt3/2) / 4 = sqrt(3)/4 = 0.4330127
///   diversity = 1 - sqrt(3)/4 = 0.5669873;  margin = 0.75 - sqrt(3)/4 = 0.3169873
#[test]
fn two_codes_by_hand() {
    let emb = plane(&[(0.0, 1.0), (90.0, 2.0), (60.0, 1.0), (90.0, 0.5)]);
    let codes = [7, 3, 7, 3];
    let s3 = 3f64.sqrt();
    assert!(close(consistency(&emb, 2, &codes).unwrap(), 0.75));
    assert!(close(diversity(&emb, 2, &codes).unwrap(), 1.0 - s3 / 4.0));
    let s = style_scores(&emb, 2, &codes).unwrap();
    assert_eq!((s.codes, s.images), (2, 4));
    assert!(close(s.consistency, 0.75), "{s:?}");
    assert!(close(s.diversity, 1.0 - s3 / 4.0), "{s:?}");
    assert!(close(s.margin(), 0.75 - s3 / 4.0), "{s:?}");
}

/// Consistency is a mean over codes, not over pairs: code 0 has three identical directions
/// (3 pairs, cos 1), code 1 has 0 and 90 deg (1 pair, cos 0).
///   over codes: (1 + 0) / 2 = 0.5   (over pairs it would be (3 + 0) / 4 = 0.75)
#[test]
fn consistency_is_a_mean_over_codes() {
    let emb = plane(&[
        (45.0, 1.0),
        (0.0, 1.0),
        (45.0, 2.0),
        (90.0, 3.0),
        (45.0, 0.5),
    ]);
    let c = consistency(&emb, 2, &[0, 1, 0, 1, 0]).unwrap();
    assert!(close(c, 0.5), "{c}");
}

/// Diversity is a mean over all cross-code pairs, not over pairs of codes. Code A: two
/// images along e1; code B: one along e2; code C: one along e1.
///   pairs A-B: 2 x cos 90 = 0;  A-C: 2 x cos 0 = 1;  B-C: 1 x cos 90 = 0
///   over pairs: mean cross cosine = 2/5, diversity = 0.6
///   (over code pairs it would be (0 + 1 + 0) / 3, diversity 2/3)
/// Codes of one image are fine for diversity alone.
#[test]
fn diversity_is_a_mean_over_cross_code_pairs() {
    let emb = [1.0, 0.0, 3.0, 0.0, 0.0, 1.0, 2.0, 0.0];
    let codes = [10, 10, 20, 30];
    let v = diversity(&emb, 2, &codes).unwrap();
    assert!(close(v, 0.6), "{v}");
}

/// Codes along orthogonal axes, identical directions within a code:
/// consistency 1, diversity 1, margin 1.
#[test]
fn orthogonal_codes_have_diversity_one() {
    #[rustfmt::skip]
    let emb = [
        1.0, 0.0, 0.0,
        0.0, 5.0, 0.0,
        0.0, 0.0, 0.2,
        2.0, 0.0, 0.0,
        0.0, 1.0, 0.0,
        0.0, 0.0, 7.0,
        0.0, 3.0, 0.0,
    ];
    let codes = [0, 1, 2, 0, 1, 2, 1];
    let s = style_scores(&emb, 3, &codes).unwrap();
    assert_eq!((s.codes, s.images), (3, 7));
    assert!(close(s.consistency, 1.0), "{s:?}");
    assert!(close(s.diversity, 1.0), "{s:?}");
    assert!(close(s.margin(), 1.0), "{s:?}");
}

/// Every image the same direction: consistency 1, diversity 0, margin 0 (codes make no
/// difference to the style).
#[test]
fn identical_embeddings() {
    let row = [0.3f32, -1.2, 0.7, 2.0, 0.1];
    let emb: Vec<f32> = (0..6)
        .flat_map(|i| row.map(|v| v * (1.0 + i as f32)))
        .collect();
    let s = style_scores(&emb, 5, &[1, 1, 2, 2, 3, 3]).unwrap();
    assert!(close(s.consistency, 1.0), "{s:?}");
    assert!(close(s.diversity, 0.0), "{s:?}");
    assert!(close(s.margin(), 0.0), "{s:?}");
}

/// References r0 at 0 deg, r1 at 90 deg, r2 at 45 deg (owns no image).
/// Generated: g0 at 60 deg from r0, g1 at 45 deg from r1, g2 at 90 deg from r1.
///   matched = (cos 60 + cos 45 + cos 0) / 3 = (0.5 + sqrt2/2 + 1) / 3 = 0.7357023
///   mismatched, all 3 x 2 pairs with the other references:
///     g0: r1 cos 30 = sqrt3/2, r2 cos 15 = (sqrt6 + sqrt2)/4
///     g1: r0 cos 45 = sqrt2/2, r2 cos 0 = 1
///     g2: r0 cos 90 = 0,       r2 cos 45 = sqrt2/2
///   mismatched = (sqrt3/2 + (sqrt6 + sqrt2)/4 + sqrt2 + 1) / 6 = 0.7566704
#[test]
fn image_consistency_and_style_gap_by_hand() {
    let refs = plane(&[(0.0, 1.0), (90.0, 4.0), (45.0, 0.5)]);
    let generated = plane(&[(60.0, 2.0), (45.0, 1.0), (90.0, 0.1)]);
    let owner = [0, 1, 1];
    let (s2, s3, s6) = (2f64.sqrt(), 3f64.sqrt(), 6f64.sqrt());
    let want_matched = (0.5 + s2 / 2.0 + 1.0) / 3.0;
    let want_mismatched = (s3 / 2.0 + (s6 + s2) / 4.0 + s2 + 1.0) / 6.0;
    let ic = image_consistency(&generated, &refs, 2, &owner).unwrap();
    assert!(close(ic, want_matched), "{ic}");
    let (m, mm) = matched_mismatched(&generated, &refs, 2, &owner).unwrap();
    assert_eq!(m, ic);
    assert!(close(mm, want_mismatched), "{mm}");
}

/// Naive formulas on f64 vectors, for the cross-check below.
fn brute(rows: &[Vec<f64>], codes: &[u32]) -> (f64, f64) {
    let unit: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let cos =
        |i: usize, j: usize| -> f64 { unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum() };
    let mut distinct: Vec<u32> = codes.to_vec();
    distinct.sort();
    distinct.dedup();
    let mut per_code = Vec::new();
    for &c in &distinct {
        let members: Vec<usize> = (0..codes.len()).filter(|&i| codes[i] == c).collect();
        let mut sims = Vec::new();
        for a in 0..members.len() {
            for b in a + 1..members.len() {
                sims.push(cos(members[a], members[b]));
            }
        }
        per_code.push(sims.iter().sum::<f64>() / sims.len() as f64);
    }
    let mut cross = Vec::new();
    for i in 0..codes.len() {
        for j in i + 1..codes.len() {
            if codes[i] != codes[j] {
                cross.push(cos(i, j));
            }
        }
    }
    (
        per_code.iter().sum::<f64>() / per_code.len() as f64,
        1.0 - cross.iter().sum::<f64>() / cross.len() as f64,
    )
}

/// Unequal code sizes, d = 13 (lanes and a tail), a fixed pseudo-random pattern: the
/// metrics match the naive formulas, and do not depend on the order of the rows.
#[test]
fn matches_naive_formulas_and_ignores_row_order() {
    let d = 13;
    let codes: Vec<u32> = [5, 2, 9, 2, 5, 5, 9, 2, 5, 9, 9, 2, 5, 5, 4, 4].to_vec();
    let rows: Vec<Vec<f64>> = (0..codes.len())
        .map(|r| {
            (0..d)
                .map(|i| ((r * 37 + i * 11 + codes[r] as usize * 5) % 17) as f64 / 4.0 - 1.5)
                .collect()
        })
        .collect();
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    let (want_c, want_v) = brute(&rows, &codes);
    let s = style_scores(&flat, d, &codes).unwrap();
    assert!(close(s.consistency, want_c), "{s:?} vs {want_c}");
    assert!(close(s.diversity, want_v), "{s:?} vs {want_v}");
    assert_eq!((s.codes, s.images), (4, 16));

    // Reverse the rows (and their codes).
    let rev_codes: Vec<u32> = codes.iter().rev().copied().collect();
    let rev_flat: Vec<f32> = rows.iter().rev().flatten().map(|&v| v as f32).collect();
    let r = style_scores(&rev_flat, d, &rev_codes).unwrap();
    assert!(
        (r.consistency - s.consistency).abs() < 1e-12,
        "{r:?} vs {s:?}"
    );
    assert!((r.diversity - s.diversity).abs() < 1e-12, "{r:?} vs {s:?}");
}

#[test]
fn scores_serialize() {
    let s = StyleScores {
        consistency: 0.6,
        diversity: 0.75,
        codes: 500,
        images: 2000,
    };
    assert!(close(s.margin(), 0.35));
    let v = serde_json::to_value(s).unwrap();
    assert_eq!(v["codes"], 500);
    assert_eq!(v["images"], 2000);
    assert_eq!(v["consistency"], 0.6);
    assert_eq!(v["diversity"], 0.75);
}

#[test]
fn refuses_bad_style_inputs() {
    // No images.
    let (at, detail) = input_error(consistency(&[], 2, &[]));
    assert_eq!(at, "style embeddings");
    assert!(detail.contains("no embeddings"), "{detail}");
    // Width 0.
    let (_, detail) = input_error(diversity(&[], 0, &[0, 1]));
    assert!(detail.contains("d = 0"), "{detail}");
    // Ragged: 7 floats for 4 rows of 2.
    let (at, detail) = input_error(style_scores(&[1.0; 7], 2, &[0, 0, 1, 1]));
    assert_eq!(at, "style embeddings");
    assert!(
        detail.contains("7 floats") && detail.contains("4 rows"),
        "{detail}"
    );
    // Code 2 has a single image, at row 2.
    let emb = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
    let (at, detail) = input_error(consistency(&emb, 2, &[1, 1, 2]));
    assert_eq!(at, "style codes, code 2 (row 2)");
    assert!(detail.contains("single image"), "{detail}");
    let (at, _) = input_error(style_scores(&emb, 2, &[1, 1, 2]));
    assert_eq!(at, "style codes, code 2 (row 2)");
    // ... which diversity alone accepts.
    assert!(diversity(&emb, 2, &[1, 1, 2]).is_ok());
    // A zero vector.
    let emb = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.5];
    let (at, detail) = input_error(consistency(&emb, 2, &[0, 0, 1, 1]));
    assert_eq!(at, "style embeddings row 1");
    assert!(detail.contains("all zeros"), "{detail}");
    // A NaN.
    let emb = [1.0, 0.0, 0.0, 1.0, 1.0, f32::NAN];
    let (at, detail) = input_error(diversity(&emb, 2, &[0, 1, 1]));
    assert_eq!(at, "style embeddings row 2 column 1");
    assert!(detail.contains("non-finite"), "{detail}");
    // One code only: no cross-code pair.
    let (at, detail) = input_error(diversity(&[1.0, 0.0, 0.0, 1.0], 2, &[4, 4]));
    assert_eq!(at, "style codes");
    assert!(detail.contains("code 4"), "{detail}");
}

#[test]
fn refuses_bad_reference_inputs() {
    let refs = [1.0, 0.0, 0.0, 1.0];
    let generated = [1.0, 1.0, 2.0, 0.5];
    // No generated images.
    let (at, _) = input_error(image_consistency(&[], &refs, 2, &[]));
    assert_eq!(at, "generated embeddings");
    // Width 0.
    let (_, detail) = input_error(matched_mismatched(&generated, &refs, 0, &[0, 1]));
    assert!(detail.contains("d = 0"), "{detail}");
    // Generated rows disagree with owner.
    let (at, detail) = input_error(image_consistency(&generated, &refs, 2, &[0, 1, 1]));
    assert_eq!(at, "generated embeddings");
    assert!(detail.contains("4 floats"), "{detail}");
    // References not a whole number of rows; no references.
    let (at, detail) = input_error(image_consistency(&generated, &refs[..3], 2, &[0, 0]));
    assert_eq!(at, "reference embeddings");
    assert!(detail.contains("3 floats"), "{detail}");
    let (at, _) = input_error(image_consistency(&generated, &[], 2, &[0, 0]));
    assert_eq!(at, "reference embeddings");
    // Owner past the last reference.
    let (at, detail) = input_error(matched_mismatched(&generated, &refs, 2, &[0, 2]));
    assert_eq!(at, "owner of generated row 1");
    assert!(detail.contains("reference 2"), "{detail}");
    // A zero reference; a NaN in a generated row.
    let (at, _) = input_error(image_consistency(
        &generated,
        &[0.0, 0.0, 1.0, 0.0],
        2,
        &[1, 1],
    ));
    assert_eq!(at, "reference embeddings row 0");
    let (at, _) = input_error(image_consistency(
        &[1.0, f32::INFINITY, 1.0, 0.0],
        &refs,
        2,
        &[0, 1],
    ));
    assert_eq!(at, "generated embeddings row 0 column 1");
    // A single reference: image consistency is defined, the mismatched mean is not.
    let ic = image_consistency(&generated, &refs[..2], 2, &[0, 0]).unwrap();
    assert!(
        close(ic, (0.5f64.sqrt() + 2.0 / 4.25f64.sqrt()) / 2.0),
        "{ic}"
    );
    let (at, detail) = input_error(matched_mismatched(&generated, &refs[..2], 2, &[0, 0]));
    assert_eq!(at, "reference embeddings");
    assert!(detail.contains("single reference"), "{detail}");
}
