//! Held-out-style retrieval: hand-computed examples, skipped singletons, refused inputs, and
//! the chance level of random embeddings.

use eval::{retrieval, EvalError, Retrieval};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Unit vectors in the plane at `degrees`.
fn angles(degrees: &[f64]) -> Vec<f32> {
    degrees
        .iter()
        .flat_map(|a| {
            let r = a.to_radians();
            [r.cos() as f32, r.sin() as f32]
        })
        .collect()
}

#[test]
fn perfect_clusters_score_one() {
    // Three tight, well-separated clusters (scale differs per row: cosine ignores it).
    let degrees = [0.0, 1.0, 2.0, 120.0, 121.0, 240.0, 241.0, 242.0];
    let mut emb = angles(&degrees);
    for (i, v) in emb.iter_mut().enumerate() {
        *v *= 1.0 + i as f32;
    }
    let labels = [5, 5, 5, 9, 9, 2, 2, 2];
    let r = retrieval(&emb, 2, &labels).unwrap();
    assert_eq!(
        r,
        Retrieval {
            top1: 1.0,
            map: 1.0,
            queries: 8
        }
    );
}

/// Points at 0, 10, 25, 45 degrees labelled A B A B. By angular distance:
/// q0 ranks 1(B) 2(A) 3(B): AP 1/2; q1 ranks 0(A) 2(A) 3(B): AP 1/3;
/// q2 ranks 1(B) 3(B) 0(A): AP 1/3; q3 ranks 2(A) 1(B) 0(A): AP 1/2. No top-1 hit.
#[test]
fn hand_computed_average_precision() {
    let emb = angles(&[0.0, 10.0, 25.0, 45.0]);
    let r = retrieval(&emb, 2, &[0, 1, 0, 1]).unwrap();
    assert_eq!(r.queries, 4);
    assert!(close(r.top1, 0.0), "{r:?}");
    assert!(
        close(r.map, (0.5 + 1.0 / 3.0 + 1.0 / 3.0 + 0.5) / 4.0),
        "{r:?}"
    );

    // Two relevant items for q0 (0 A, 10 B, 20 A, 45 A): ranks 2 and 3, AP (1/2 + 2/3)/2;
    // q2 (20): 10 B, 0 A, 45 A -> ranks 2, 3; q3 (45): 20 A, 10 B, 0 A -> ranks 1, 3.
    // Label B has a single member: query 1 is skipped.
    let emb = angles(&[0.0, 10.0, 20.0, 45.0]);
    let r = retrieval(&emb, 2, &[0, 1, 0, 0]).unwrap();
    assert_eq!(r.queries, 3);
    assert!(close(r.top1, 1.0 / 3.0), "{r:?}");
    let ap = [
        (0.5 + 2.0 / 3.0) / 2.0,
        (0.5 + 2.0 / 3.0) / 2.0,
        (1.0 + 2.0 / 3.0) / 2.0,
    ];
    assert!(close(r.map, ap.iter().sum::<f64>() / 3.0), "{r:?}");
}

#[test]
fn singleton_labels_are_skipped() {
    let emb = angles(&[0.0, 5.0, 90.0, 180.0]);
    let r = retrieval(&emb, 2, &[1, 1, 2, 3]).unwrap();
    assert_eq!(r.queries, 2);
    assert!(close(r.top1, 1.0) && close(r.map, 1.0), "{r:?}");
    // Only singletons: nothing to retrieve.
    let err = retrieval(&emb, 2, &[0, 1, 2, 3]).unwrap_err();
    assert!(err.to_string().contains("no label has 2 or more"), "{err}");
}

#[test]
fn invalid_inputs_are_refused_naming_what_is_wrong() {
    let msg = |r: Result<Retrieval, EvalError>| r.unwrap_err().to_string();
    let m = msg(retrieval(&[1.0; 6], 2, &[0, 0]));
    assert!(m.contains("6 floats, expected 2 labels x d = 2"), "{m}");
    let m = msg(retrieval(&[], 0, &[]));
    assert!(m.contains("d = 0"), "{m}");
    let m = msg(retrieval(&[], 3, &[]));
    assert!(m.contains("no embeddings"), "{m}");
    let m = msg(retrieval(&[1.0, 0.0, 0.5, f32::NAN], 2, &[0, 0]));
    assert!(m.contains("row 1 column 1: non-finite value NaN"), "{m}");
    let m = msg(retrieval(&[1.0, f32::INFINITY, 0.5, 1.0], 2, &[0, 0]));
    assert!(m.contains("row 0 column 1"), "{m}");
    let m = msg(retrieval(&[1.0, 0.0, 0.0, 0.0], 2, &[0, 0]));
    assert!(m.contains("row 1: all zeros"), "{m}");
}

#[test]
fn random_embeddings_sit_at_chance() {
    // xorshift + Box-Muller with a fixed seed: isotropic Gaussian rows.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let (styles, per_style, d) = (10u32, 60usize, 32usize);
    let n = styles as usize * per_style;
    let emb: Vec<f32> = (0..n * d)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % styles as usize) as u32).collect();
    let r = retrieval(&emb, d, &labels).unwrap();
    assert_eq!(r.queries, n);
    // Chance: top-1 = (per_style - 1) / (n - 1) ~ 0.098; mAP a little above it.
    assert!((0.05..0.16).contains(&r.top1), "{r:?}");
    assert!((0.07..0.2).contains(&r.map), "{r:?}");
    // Same inputs, same answer (thread count does not matter: fixed-order sums).
    assert_eq!(retrieval(&emb, d, &labels).unwrap(), r);
}

#[test]
fn serialises_as_json() {
    let r = Retrieval {
        top1: 0.5,
        map: 0.25,
        queries: 4,
    };
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"top1": 0.5, "map": 0.25, "queries": 4})
    );
}
