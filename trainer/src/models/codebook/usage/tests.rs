//! Tests of codebook usage: counts, fraction used and perplexity of known histograms, the
//! dead-code rule, deterministic re-initialisation, and a serde round trip that resumes.

use super::*;

/// A usage that has seen these per-step histograms.
fn seen(codes: usize, window: u64, steps: &[&[u64]]) -> CodeUsage {
    let mut u = CodeUsage::with_window(codes, window);
    for h in steps {
        u.record_counts(h).unwrap();
        u.end_step();
    }
    u
}

#[test]
fn usage_and_perplexity_of_a_known_histogram() {
    let mut u = CodeUsage::with_window(4, 2);
    assert_eq!((u.fraction_used(), u.perplexity()), (0.0, 0.0));
    // Two codes used equally: entropy ln 2, perplexity 2; half the codes used. Two
    // records in one step add up.
    u.record_counts(&[1, 0, 2, 0]).unwrap();
    u.record_counts(&[2, 0, 1, 0]).unwrap();
    assert_eq!(
        u.fraction_used(),
        0.0,
        "nothing counts before the step closes"
    );
    u.end_step();
    assert_eq!(u.fraction_used(), 0.5);
    assert!((u.perplexity() - 2.0).abs() < 1e-12);
    // Window [3,0,3,0] + [1,2,1,2] = [4,2,4,2]: p = (1/3, 1/6, 1/3, 1/6).
    u.record_counts(&[1, 2, 1, 2]).unwrap();
    u.end_step();
    let (a, b) = (1.0f64 / 3.0, 1.0f64 / 6.0);
    let h = -2.0 * a * a.ln() - 2.0 * b * b.ln();
    assert!((u.perplexity() - h.exp()).abs() < 1e-12);
    assert_eq!(u.counts(), [4, 2, 4, 2]);
    // The first step leaves the window of 2: [1,2,1,2] + [0,0,0,8].
    u.record_counts(&[0, 0, 0, 8]).unwrap();
    u.end_step();
    assert_eq!(u.counts(), [1, 2, 1, 10]);
    assert_eq!(u.steps_in_window(), 2);
    assert_eq!(u.fraction_used(), 1.0);
    assert!(u.record_counts(&[1, 2]).is_err());
}

#[test]
fn the_window_comes_from_the_config() {
    let mut u = CodeUsage::new(&StyleCodebookConfig::default());
    for _ in 0..150 {
        u.end_step();
    }
    assert_eq!((u.counts().len(), u.steps_in_window()), (1024, 100));
}

#[test]
fn record_counts_indices_through_the_kernel() {
    let mut u = CodeUsage::with_window(5, 3);
    let idx = Tensor::new(&[[0u32, 4, 4], [2, 4, 0]], &Device::Cpu).unwrap();
    u.record(&idx).unwrap();
    u.end_step();
    assert_eq!(u.counts(), [2, 0, 1, 0, 3]);
    let bad = Tensor::new(&[5u32], &Device::Cpu).unwrap();
    assert!(u.record(&bad).is_err());
}

#[test]
fn codes_are_judged_only_after_a_full_window() {
    let u = seen(3, 2, &[&[1, 0, 0]]);
    assert!(u.dead_codes(1).is_empty(), "half a window is no evidence");
    let u = seen(3, 2, &[&[1, 0, 0], &[1, 1, 0]]);
    assert_eq!(u.dead_codes(1), [2]);
    assert_eq!(u.dead_codes(2), [1, 2]);
    assert!(u.dead_codes(0).is_empty(), "min_usage 0 disables");
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

/// A usage with codes 1 and 3 of 4 dead, an identity codebook, 6 features to reinit from.
fn dead_setup() -> (CodeUsage, Var, Tensor) {
    let u = seen(4, 1, &[&[5, 0, 2, 0]]);
    let cb = Var::from_tensor(&Tensor::eye(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let mut rng = Rng::new(9);
    let f: Vec<f32> = (0..6 * 4).map(|_| rng.normal()).collect();
    let feats = Tensor::from_vec(f, (6, 4), &Device::Cpu).unwrap();
    (u, cb, feats)
}

#[test]
fn reinit_writes_normalised_recent_features_deterministically() {
    let (mut u, cb, feats) = dead_setup();
    assert_eq!(u.reinit_dead(&cb, &feats, 1, 7, 100).unwrap(), 2);
    let got = rows(cb.as_tensor());
    // Live codes keep their rows.
    assert_eq!(got[0], [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(got[2], [0.0, 0.0, 1.0, 0.0]);
    // Dead ones become distinct normalised features.
    let normed = rows(&crate::models::codebook::l2_normalize(&feats).unwrap());
    let which = |r: &Vec<f32>| {
        normed
            .iter()
            .position(|f| f.iter().zip(r).all(|(a, b)| (a - b).abs() < 1e-6))
            .expect("a reinitialised row is a normalised feature")
    };
    assert_ne!(which(&got[1]), which(&got[3]));
    for r in [&got[1], &got[3]] {
        let n: f32 = r.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-6);
    }
    // They start a fresh window: not dead again at once.
    assert!(u.dead_codes(1).is_empty());
    // The same (seed, step) gives the same rows; another step, other rows.
    let (mut u2, cb2, _) = dead_setup();
    u2.reinit_dead(&cb2, &feats, 1, 7, 100).unwrap();
    assert_eq!(rows(cb2.as_tensor()), got);
    let (mut u3, cb3, _) = dead_setup();
    u3.reinit_dead(&cb3, &feats, 1, 7, 101).unwrap();
    assert_ne!(rows(cb3.as_tensor()), got);
    // Fewer features than dead codes: drawn with replacement, still works.
    let (mut u4, cb4, _) = dead_setup();
    let one = feats.narrow(0, 0, 1).unwrap();
    assert_eq!(u4.reinit_dead(&cb4, &one, 1, 7, 100).unwrap(), 2);
    let r4 = rows(cb4.as_tensor());
    assert_eq!((&r4[1], &r4[3]), (&normed[0], &normed[0]));
}

#[test]
fn maybe_reinit_follows_the_config() {
    let cfg = DeadCodeConfig {
        enabled: true,
        window_steps: 1,
        min_usage: 1,
        reinit_every: 10,
    };
    let (mut u, cb, feats) = dead_setup();
    assert_eq!(u.maybe_reinit(&cfg, &cb, &feats, 0, 9).unwrap(), 0);
    let off = DeadCodeConfig {
        enabled: false,
        ..cfg.clone()
    };
    assert_eq!(u.maybe_reinit(&off, &cb, &feats, 0, 10).unwrap(), 0);
    assert_eq!(u.maybe_reinit(&cfg, &cb, &feats, 0, 10).unwrap(), 2);
}

#[test]
fn serde_round_trips_and_resumes_identically() {
    let mut u = seen(
        4,
        3,
        &[&[1, 0, 2, 0], &[0, 0, 1, 1], &[2, 2, 0, 0], &[0, 1, 0, 0]],
    );
    u.record_counts(&[0, 3, 0, 0]).unwrap(); // a step under way
    let json = serde_json::to_string(&u).unwrap();
    let mut back: CodeUsage = serde_json::from_str(&json).unwrap();
    assert_eq!(back, u);
    // Both continue the same way.
    for x in [&mut u, &mut back] {
        x.record_counts(&[0, 0, 0, 9]).unwrap();
        x.end_step();
    }
    assert_eq!(back, u);
    assert_eq!(back.perplexity().to_bits(), u.perplexity().to_bits());
    // Inconsistent states are refused with the reason; so are unknown fields.
    let mut bad = serde_json::to_value(&u).unwrap();
    bad["age"] = serde_json::json!([0, 0]);
    let e = serde_json::from_value::<CodeUsage>(bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 ages and 4 pending counts for 4 codes"), "{e}");
    let mut bad = serde_json::to_value(&u).unwrap();
    bad["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<CodeUsage>(bad).is_err());
    // The placeholder default round-trips too.
    let d: CodeUsage =
        serde_json::from_value(serde_json::to_value(CodeUsage::default()).unwrap()).unwrap();
    assert_eq!(d, CodeUsage::default());
}
