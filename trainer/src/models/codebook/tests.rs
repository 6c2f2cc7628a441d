//! Tests of the style codebook model: shapes, the quantised output is the codebook lookup of
//! the returned indices (bit for bit) and the cosine argmax, the straight-through estimator,
//! inference paths that agree with training, seeded init, named errors. Gradients of the
//! full loss are tested with the losses (stages/codebook_loss/tests.rs).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::{
    init_tensors, l2_normalize, param_shapes, straight_through, StyleCodebook, StyleCodebookConfig,
    EMBEDDING,
};
use crate::models::varmap_from;

/// A tiny config: E = 64 (from the caller), 4 heads, 32 codes of width 16.
pub(crate) fn tiny() -> StyleCodebookConfig {
    StyleCodebookConfig {
        codes: 32,
        code_dim: 16,
        heads: 4,
        mlp_hidden: 32,
        ..StyleCodebookConfig::default()
    }
}

pub(crate) fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = data::rng::Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn frozen(cfg: &StyleCodebookConfig, e: usize, seed: u64) -> StyleCodebook {
    let vb = VarBuilder::from_tensors(
        init_tensors(cfg, e, seed).unwrap(),
        DType::F32,
        &Device::Cpu,
    );
    StyleCodebook::new(cfg, e, vb).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn q_is_the_codebook_lookup_of_the_indices_and_the_cosine_argmax() {
    let cfg = tiny();
    let m = frozen(&cfg, 64, 1);
    let v = randn(&[4, 16, 64], 2);
    assert_eq!((m.config(), m.enc_dim()), (&cfg, 64));
    let out = m.forward(&v).unwrap();
    assert_eq!(out.z.dims(), [4, 16, 16]);
    assert_eq!(out.q.dims(), [4, 16, 16]);
    assert_eq!(out.indices.dims(), [4, 16]);
    assert_eq!(out.indices.dtype(), DType::U32);
    assert_eq!(out.style.dims(), [4, 16, 64]);

    let c = m.codebook().unwrap();
    let lookup = c
        .index_select(&out.indices.flatten_all().unwrap(), 0)
        .unwrap()
        .reshape((4, 16, 16))
        .unwrap();
    let bits = |t: &Tensor| flat(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&out.q), bits(&lookup), "q is c[indices], bit for bit");
    assert_eq!(bits(&out.q_st), bits(&out.q), "q_st has q's values exactly");

    // z and the codebook rows are unit vectors.
    for t in [&out.z.reshape((64, 16)).unwrap(), &c] {
        for n in flat(&t.sqr().unwrap().sum(1).unwrap()) {
            assert!((n - 1.0).abs() < 1e-5, "norm^2 {n}");
        }
    }
    // The indices are the argmax of the cosine (ties are measure-zero here).
    let scores = out
        .z
        .reshape((64, 16))
        .unwrap()
        .matmul(&c.t().unwrap())
        .unwrap();
    let argmax: Vec<u32> = scores.argmax(1).unwrap().to_vec1().unwrap();
    assert_eq!(flat_u32(&out.indices), argmax);
    // Several codes are in use even at init (no collapse built in).
    let mut used = argmax.clone();
    used.sort();
    used.dedup();
    assert!(used.len() > 4, "codes used at init: {used:?}");
}

fn flat_u32(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn inference_paths_agree_with_the_training_pass() {
    let cfg = tiny();
    let m = frozen(&cfg, 64, 3);
    let v = randn(&[2, 16, 64], 4);
    let out = m.forward(&v).unwrap();
    assert_eq!(flat_u32(&m.quantize(&v).unwrap()), flat_u32(&out.indices));
    let style = m.embed_indices(&out.indices).unwrap();
    assert_eq!(
        flat(&style),
        flat(&out.style),
        "embed_indices(indices) == style"
    );
    // i64 indices are accepted too.
    let i64s = out.indices.to_dtype(DType::I64).unwrap();
    assert_eq!(flat(&m.embed_indices(&i64s).unwrap()), flat(&out.style));
}

#[test]
fn straight_through_passes_the_gradient_of_z_and_not_of_q() {
    // loss = sum(w * st(z, q)): d loss / d z = w (as if the output were z), nothing for q.
    let z = Var::from_tensor(&randn(&[2, 3, 4], 5)).unwrap();
    let q = Var::from_tensor(&randn(&[2, 3, 4], 6)).unwrap();
    let w = randn(&[2, 3, 4], 7);
    let st = straight_through(z.as_tensor(), q.as_tensor()).unwrap();
    assert_eq!(flat(&st), flat(q.as_tensor()), "the value is q's");
    let grads = (st * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(flat(grads.get(z.as_tensor()).unwrap()), flat(&w));
    let gq = grads.get(q.as_tensor());
    assert!(gq.is_none_or(|g| flat(g).iter().all(|x| *x == 0.0)));
}

#[test]
fn the_projection_learns_through_the_straight_through_path() {
    // A loss on the style embeddings alone reaches the projection only through q_st.
    let cfg = tiny();
    let varmap = varmap_from(init_tensors(&cfg, 64, 8).unwrap()).unwrap();
    let m = StyleCodebook::new(
        &cfg,
        64,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let out = m.forward(&randn(&[2, 16, 64], 9)).unwrap();
    let loss = (&out.style * randn(&[2, 16, 64], 10))
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let grad = |name: &str| grads.get(data[name].as_tensor()).map(flat);
    let g = grad("proj.mlp.wo.weight").expect("projection gets a gradient through q_st");
    assert!(g.iter().any(|x| *x != 0.0) && g.iter().all(|x| x.is_finite()));
    assert!(grad("proj.attn.qkv.weight").is_some());
    assert!(
        grad(EMBEDDING).is_none_or(|g| g.iter().all(|x| *x == 0.0)),
        "the straight-through path gives the codebook nothing"
    );
}

#[test]
fn init_is_seeded_and_complete() {
    let cfg = tiny();
    let a = init_tensors(&cfg, 64, 11).unwrap();
    let b = init_tensors(&cfg, 64, 11).unwrap();
    let c = init_tensors(&cfg, 64, 12).unwrap();
    assert_eq!(a.len(), param_shapes(&cfg, 64).len());
    for (name, shape) in param_shapes(&cfg, 64) {
        assert_eq!(a[&name].dims(), shape.as_slice(), "{name}");
        assert_eq!(flat(&a[&name]), flat(&b[&name]), "{name}: same seed");
        if !name.ends_with("norm.weight") {
            assert_ne!(flat(&a[&name]), flat(&c[&name]), "{name}: other seed");
        }
    }
    // Codebook rows are unit directions; Linear weights within torch's bound 1/sqrt(fan_in).
    let rows = l2_normalize(&a[EMBEDDING]).unwrap();
    let diff = (rows - &a[EMBEDDING]).unwrap().abs().unwrap();
    assert!(flat(&diff).iter().all(|d| *d < 1e-6));
    let bound = 1.0 / (64f32).sqrt();
    assert!(flat(&a["proj.attn.qkv.weight"])
        .iter()
        .all(|w| w.abs() <= bound));
}

#[test]
fn errors_are_named() {
    let cfg = tiny();
    let m = frozen(&cfg, 64, 0);
    let e = m.forward(&randn(&[1, 16, 32], 0)).unwrap_err().to_string();
    assert!(e.contains("[1, 16, 32]") && e.contains("(B, N, 64)"), "{e}");
    let idx = Tensor::new(&[[0u32, 32]], &Device::Cpu).unwrap();
    let e = m.embed_indices(&idx).unwrap_err().to_string();
    assert!(e.contains("index 32 at position 1"), "{e}");

    // heads must divide the encoder width; config problems are listed with their keys.
    let bad = StyleCodebookConfig {
        heads: 3,
        codes: 0,
        ..tiny()
    };
    let vb = VarBuilder::from_tensors(
        init_tensors(&tiny(), 64, 0).unwrap(),
        DType::F32,
        &Device::Cpu,
    );
    let e = StyleCodebook::new(&bad, 64, vb).unwrap_err().to_string();
    assert!(e.contains("codes: must be at least 1"), "{e}");
    assert!(
        e.contains("heads: 3 must divide the encoder width 64"),
        "{e}"
    );
    // A missing tensor is named.
    let mut t = init_tensors(&cfg, 64, 0).unwrap();
    t.remove("mirror.mlp.wo.bias");
    let vb = VarBuilder::from_tensors(t, DType::F32, &Device::Cpu);
    let e = StyleCodebook::new(&cfg, 64, vb).unwrap_err().to_string();
    assert!(e.contains("mirror.mlp.wo.bias"), "{e}");
}

#[test]
fn config_problems_name_keys() {
    assert!(StyleCodebookConfig::default().problems("model").is_empty());
    let mut cfg = StyleCodebookConfig::default();
    cfg.dead_code.reinit_every = 0;
    cfg.dead_code.window_steps = 0;
    cfg.norm_eps = 0.0;
    cfg.codes = 70_000;
    let keys: Vec<String> = cfg.problems("model").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "model.codes",
            "model.norm_eps",
            "model.dead_code.window_steps",
            "model.dead_code.reinit_every"
        ]
    );
    // Off, reinit_every does not matter (the window still feeds the logged usage).
    cfg.dead_code.enabled = false;
    assert_eq!(cfg.problems("").len(), 3);
}
