//! Tests of the codebook losses: each term against a hand-computed value (and its gradient),
//! gradients of the total to every trainable variable of the codebook model, and switching a
//! term off removes exactly its gradient contribution.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::{contrastive_loss, losses, recon_loss, vq_loss, LossConfig, Losses};
use crate::models::codebook::{init_tensors, StyleCodebook, StyleCodebookConfig, EMBEDDING};
use crate::models::varmap_from;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f32 {
    x.to_scalar::<f32>().unwrap()
}

fn close(got: f32, want: f64) {
    assert!((got as f64 - want).abs() < 1e-6, "got {got}, want {want}");
}

#[test]
fn contrastive_matches_hand_computed_values() {
    // Pair 0, same style: style tokens (1,0), (0,1) pool to (.5,.5); features (2,0), (0,0)
    // pool to (1,0); s = .5 / (sqrt(.5) * 1) = 1/sqrt(2); loss (1 - s)^2.
    // Pair 1, other style: pools (1,0) and (3,4); s = 3/5; loss relu(.6 - m)^2.
    let style = t(&[1., 0., 0., 1., 1., 0., 1., 0.], &[2, 2, 2]);
    let v2 = t(&[2., 0., 0., 0., 3., 4., 3., 4.], &[2, 2, 2]);
    let y = t(&[1., 0.], &[2]);
    let pos = (1.0 - 0.5f64.sqrt()).powi(2);
    close(
        scalar(&contrastive_loss(&style, &v2, &y, 0.5).unwrap()),
        (pos + 0.01) / 2.0,
    );
    // A margin above the negative's cosine: the hinge is flat.
    close(
        scalar(&contrastive_loss(&style, &v2, &y, 0.7).unwrap()),
        pos / 2.0,
    );
    // Labels of another dtype are accepted.
    let yu = Tensor::new(&[1u8, 0], &Device::Cpu).unwrap();
    close(
        scalar(&contrastive_loss(&style, &v2, &yu, 0.5).unwrap()),
        (pos + 0.01) / 2.0,
    );
    let e = contrastive_loss(&style, &v2, &t(&[1.], &[1]), 0.5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1]") && e.contains("(B)"), "{e}");
}

#[test]
fn recon_matches_a_hand_computed_value() {
    // Token 0: (1,0) vs (0,1), cos 0; token 1: (1,1) vs (2,2), cos 1. Mean of 1 - cos = .5.
    let style = t(&[1., 0., 1., 1.], &[1, 2, 2]);
    let v = t(&[0., 1., 2., 2.], &[1, 2, 2]);
    close(scalar(&recon_loss(&style, &v).unwrap()), 0.5);
}

#[test]
fn vq_matches_hand_computed_values_and_gradients() {
    // Token 0: z (1,0), q (0,1), ||z - q||^2 = 2; token 1: equal, 0. Mean 1, so
    // L_vq = 1 + 0.25 * 1. d/dq = (q - z) over 2 tokens * 2 = q - z (codebook term only);
    // d/dz = 0.25 (z - q) (commitment only).
    let z = Var::from_tensor(&t(&[1., 0., 0.6, 0.8], &[1, 2, 2])).unwrap();
    let q = Var::from_tensor(&t(&[0., 1., 0.6, 0.8], &[1, 2, 2])).unwrap();
    let loss = vq_loss(z.as_tensor(), q.as_tensor(), 0.25).unwrap();
    close(scalar(&loss), 1.25);
    let grads = loss.backward().unwrap();
    let g = |v: &Var| -> Vec<f32> {
        grads
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(g(&q), [-1., 1., 0., 0.]);
    assert_eq!(g(&z), [0.25, -0.25, 0., 0.]);
}

#[test]
fn config_defaults_and_problems() {
    assert!(LossConfig::default().problems("loss").is_empty());
    let bad = LossConfig {
        margin: 1.5,
        recon_weight: -1.0,
        commitment: f64::NAN,
        contrastive: false,
        recon: false,
        vq: false,
        ..LossConfig::default()
    };
    let keys: Vec<String> = bad.problems("loss").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "loss.margin",
            "loss.recon_weight",
            "loss.commitment",
            "loss.contrastive"
        ]
    );
}

/// The model of the acceptance tests: E = 64, N = 16, B = 4 pairs; 32 codes of width 16.
struct Setup {
    varmap: VarMap,
    model: StyleCodebook,
    v1: Tensor,
    v2: Tensor,
    y: Tensor,
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = data::rng::Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn setup() -> Setup {
    let cfg = StyleCodebookConfig {
        codes: 32,
        code_dim: 16,
        heads: 4,
        mlp_hidden: 32,
        ..StyleCodebookConfig::default()
    };
    let varmap = varmap_from(init_tensors(&cfg, 64, 21).unwrap()).unwrap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = StyleCodebook::new(&cfg, 64, vb).unwrap();
    Setup {
        varmap,
        model,
        v1: randn(&[4, 16, 64], 22),
        v2: randn(&[4, 16, 64], 23),
        y: t(&[1., 0., 1., 0.], &[4]),
    }
}

impl Setup {
    fn losses(&self, cfg: &LossConfig) -> Losses {
        let x1 = self.model.forward(&self.v1).unwrap();
        losses(cfg, &x1, &self.v1, &self.v2, &self.y).unwrap()
    }

    /// The gradient of `cfg`'s total for every variable, zeros where it has none.
    fn grads(&self, cfg: &LossConfig) -> HashMap<String, Vec<f32>> {
        let grads = self.losses(cfg).total.backward().unwrap();
        let data = self.varmap.data().lock().unwrap();
        data.iter()
            .map(|(name, var)| {
                let g = match grads.get(var.as_tensor()) {
                    Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
                    None => vec![0.0; var.elem_count()],
                };
                (name.clone(), g)
            })
            .collect()
    }
}

fn only(contrastive: bool, recon: bool, vq: bool) -> LossConfig {
    LossConfig {
        contrastive,
        recon,
        vq,
        recon_weight: 0.5,
        vq_weight: 2.0,
        ..LossConfig::default()
    }
}

#[test]
fn every_trainable_variable_gets_a_finite_nonzero_gradient_from_the_total() {
    let s = setup();
    let grads = s.grads(&LossConfig::default());
    assert_eq!(grads.len(), s.varmap.all_vars().len());
    for (name, g) in &grads {
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|x| *x != 0.0), "{name}: zero gradient");
    }
}

#[test]
fn total_is_the_weighted_sum_and_disabled_terms_are_zero() {
    let s = setup();
    let all = s.losses(&only(true, true, true));
    let (c, r, v) = (scalar(&all.contrast), scalar(&all.recon), scalar(&all.vq));
    assert!(c > 0.0 && r > 0.0 && v > 0.0, "{c} {r} {v}");
    close(scalar(&all.total), (c + 0.5 * r + 2.0 * v) as f64);
    let named = all.values().unwrap();
    assert_eq!(named.map(|(n, _)| n), ["total", "contrast", "recon", "vq"]);
    assert_eq!(named[2].1, r as f64);
    let none_but_recon = s.losses(&only(false, true, false));
    assert_eq!(scalar(&none_but_recon.contrast), 0.0);
    assert_eq!(scalar(&none_but_recon.vq), 0.0);
    assert_eq!(scalar(&none_but_recon.recon), r);
    close(scalar(&none_but_recon.total), 0.5 * r as f64);
}

#[test]
fn switching_a_term_off_removes_exactly_its_gradient() {
    let s = setup();
    let all = s.grads(&only(true, true, true));
    let terms = [
        (
            "contrastive",
            only(false, true, true),
            only(true, false, false),
        ),
        ("recon", only(true, false, true), only(false, true, false)),
        ("vq", only(true, true, false), only(false, false, true)),
    ];
    for (term, without, alone) in terms {
        let (without, alone) = (s.grads(&without), s.grads(&alone));
        for (name, g) in &all {
            let scale = g.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
            for ((a, w), o) in g.iter().zip(&without[name]).zip(&alone[name]) {
                assert!(
                    (a - w - o).abs() <= 1e-4 * scale,
                    "{term}, {name}: all {a} - without {w} != alone {o}"
                );
            }
        }
    }
    // Which parts each term reaches: only L_vq trains the codebook; L_vq alone leaves the
    // mirror untouched; the other two reach the projection through the straight-through path.
    let zero = |g: &HashMap<String, Vec<f32>>, name: &str| g[name].iter().all(|x| *x == 0.0);
    let vq_only = s.grads(&only(false, false, true));
    let no_vq = s.grads(&only(true, true, false));
    assert!(zero(&no_vq, EMBEDDING) && !zero(&vq_only, EMBEDDING));
    assert!(zero(&vq_only, "mirror.mlp.wo.weight") && zero(&vq_only, "mirror.attn.out.weight"));
    for cfg in [only(true, false, false), only(false, true, false)] {
        let g = s.grads(&cfg);
        assert!(!zero(&g, "proj.mlp.wo.weight") && !zero(&g, "proj.attn.qkv.weight"));
        assert!(zero(&g, EMBEDDING));
    }
}
