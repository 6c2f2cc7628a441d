//! The CSD style descriptor (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion
//! Models"; github.com/learn2phoenix/CSD) on OpenAI CLIP's ViT (github.com/openai/CLIP):
//! tiny random weights written under the reference tensor names and loaded back (shapes, unit
//! norms, determinism, errors naming the tensor), gradients to every parameter checked by
//! finite differences, the golden fixture made by `scripts/convert_csd.py --golden` (OpenAI's
//! own `VisionTransformer` and CSD's forward, and PIL's resize), and the preprocessing by hand.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use eval::csd::{
    self, batch, center_crop_offset, param_shapes, preprocess, preprocess_batch, resize_and_crop,
    resized_dims, CLIP_MEAN, CLIP_STD,
};
use eval::{Csd, CsdConfig};
use image::{Rgb, RgbImage};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/csd_tiny.safetensors"
);

/// splitmix64: a seeded stream of uniforms in [-1, 1), the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], scale: f64, offset: f64, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| offset + scale * self.next()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }
}

/// Random weights under the reference names: matrices ~ U(-1, 1) * sqrt(3 / fan_in), biases
/// ~ 0.1 U, LayerNorm weights ~ 1 + 0.1 U, embeddings ~ 0.5 U (every term matters).
fn random_weights(cfg: &CsdConfig, seed: u64, dtype: DType) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed);
    param_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let t = if name.contains("ln_") && name.ends_with("weight") {
                rng.tensor(&shape, 0.1, 1.0, dtype)
            } else if name.ends_with("bias") {
                rng.tensor(&shape, 0.1, 0.0, dtype)
            } else if name.contains("embedding") {
                rng.tensor(&shape, 0.5, 0.0, dtype)
            } else {
                let fan_in = if name.starts_with("last_layer") {
                    shape[0]
                } else {
                    shape[1..].iter().product()
                };
                rng.tensor(&shape, (3.0 / fan_in as f64).sqrt(), 0.0, dtype)
            };
            (name, t)
        })
        .collect()
}

fn save(dir: &Path, file: &str, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join(file);
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

fn images(cfg: &CsdConfig, b: usize, seed: u64, dtype: DType) -> Tensor {
    let s = cfg.image_size;
    Rng(seed).tensor(&[b, 3, s, s], 1.0, 0.0, dtype)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let d: Vec<f64> = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    d.into_iter().fold(0.0, f64::max)
}

fn row_norms(x: &Tensor) -> Vec<f32> {
    x.sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn load_err(cfg: &CsdConfig, path: &Path) -> String {
    let err = Csd::from_safetensors(cfg, path, DType::F32, &Device::Cpu).unwrap_err();
    format!("{err:#}")
}

#[test]
fn loads_reference_names_and_gives_unit_descriptors() {
    let cfg = CsdConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let mut w = random_weights(&cfg, 1, DType::F32);
    // CLIP's projection, which CSD drops: present in the file, ignored.
    w.insert(
        "backbone.proj".into(),
        Tensor::zeros((32, 24), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = save(dir.path(), "csd.safetensors", &w);
    let model = Csd::from_safetensors(&cfg, &path, DType::F32, &Device::Cpu).unwrap();
    let (style, content) = model.embed(&images(&cfg, 3, 7, DType::F32)).unwrap();
    assert_eq!(style.dims(), &[3, cfg.out_dim]);
    assert_eq!(content.dims(), &[3, cfg.out_dim]);
    for n in row_norms(&style).into_iter().chain(row_norms(&content)) {
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    assert!(
        max_abs_diff(&style, &content) > 0.1,
        "the heads must differ"
    );
    let features = model.features(&images(&cfg, 3, 7, DType::F32)).unwrap();
    assert_eq!(features.dims(), &[3, cfg.width]);
    let only_style = model.style(&images(&cfg, 3, 7, DType::F32)).unwrap();
    assert_eq!(max_abs_diff(&style, &only_style), 0.0);
}

#[test]
fn descriptors_are_deterministic_and_per_image() {
    let cfg = CsdConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = save(
        dir.path(),
        "csd.safetensors",
        &random_weights(&cfg, 2, DType::F32),
    );
    let model = Csd::from_safetensors(&cfg, &path, DType::F32, &Device::Cpu).unwrap();
    let x = images(&cfg, 4, 11, DType::F32);
    let (a, _) = model.embed(&x).unwrap();
    let (b, _) = model.embed(&x).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0, "same input, same bits");
    // Each image is embedded on its own: a batch equals its images one by one.
    for i in 0..4 {
        let (one, _) = model.embed(&x.narrow(0, i, 1).unwrap()).unwrap();
        let d = max_abs_diff(&one, &a.narrow(0, i, 1).unwrap());
        assert!(d < 1e-5, "image {i}: {d}");
    }
    // Distinct images give distinct descriptors.
    assert!(max_abs_diff(&a.narrow(0, 0, 1).unwrap(), &a.narrow(0, 1, 1).unwrap()) > 1e-3);
}

#[test]
fn data_parallel_prefix_is_accepted() {
    let cfg = CsdConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let w = random_weights(&cfg, 3, DType::F32);
    let prefixed: HashMap<String, Tensor> = w
        .iter()
        .map(|(k, v)| (format!("module.{k}"), v.clone()))
        .collect();
    let plain = save(dir.path(), "plain.safetensors", &w);
    let module = save(dir.path(), "module.safetensors", &prefixed);
    let x = images(&cfg, 2, 5, DType::F32);
    let a = Csd::from_safetensors(&cfg, &plain, DType::F32, &Device::Cpu).unwrap();
    let b = Csd::from_safetensors(&cfg, &module, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(&a.style(&x).unwrap(), &b.style(&x).unwrap()),
        0.0
    );
}

#[test]
fn wrong_width_is_an_error_naming_the_tensor_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(
        dir.path(),
        "narrow.safetensors",
        &random_weights(&CsdConfig::tiny(), 4, DType::F32),
    );
    let wide = CsdConfig {
        width: 64,
        mlp_width: 256,
        ..CsdConfig::tiny()
    };
    let err = load_err(&wide, &path);
    assert!(err.contains("narrow.safetensors"), "{err}");
    assert!(
        err.contains("backbone.transformer.resblocks.0.ln_1.weight"),
        "{err}"
    );
    assert!(err.contains("shape"), "{err}");
    // Only the heads disagree: the error names a head.
    let err = load_err(
        &CsdConfig {
            out_dim: 25,
            ..CsdConfig::tiny()
        },
        &path,
    );
    assert!(err.contains("last_layer_style"), "{err}");
}

#[test]
fn missing_tensor_is_an_error_naming_it() {
    let cfg = CsdConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "last_layer_content",
        "backbone.transformer.resblocks.1.mlp.c_proj.bias",
        "backbone.positional_embedding",
    ] {
        let mut w = random_weights(&cfg, 5, DType::F32);
        w.remove(name).unwrap();
        let path = save(dir.path(), "missing.safetensors", &w);
        let err = load_err(&cfg, &path);
        assert!(err.contains(name), "{name}: {err}");
    }
    let err = load_err(&cfg, &dir.path().join("absent.safetensors"));
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[test]
fn bad_images_and_configs_are_errors() {
    let cfg = CsdConfig::tiny();
    let vb = VarBuilder::from_tensors(
        random_weights(&cfg, 6, DType::F32),
        DType::F32,
        &Device::Cpu,
    );
    let model = Csd::new(&cfg, vb).unwrap();
    for shape in [
        &[2, 3, 16, 16][..],
        &[2, 1, 32, 32],
        &[3, 32, 32],
        &[0, 3, 32, 32],
    ] {
        let x = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let err = model.embed(&x).unwrap_err().to_string();
        assert!(err.contains(&format!("{shape:?}")), "{err}");
    }
    let bad = CsdConfig {
        heads: 5,
        image_size: 30,
        ..CsdConfig::tiny()
    };
    let keys: Vec<String> = bad.problems().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["image_size", "heads"]);
    let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
    let err = Csd::new(&bad, vb).unwrap_err().to_string();
    assert!(err.contains("heads: 5 does not divide width 32"), "{err}");
}

#[test]
fn config_presets_and_serde() {
    let l14 = CsdConfig::vit_l14();
    assert!(l14.problems().is_empty() && CsdConfig::tiny().problems().is_empty());
    assert_eq!((l14.grid(), l14.tokens(), l14.head_dim()), (16, 257, 64));
    assert_eq!(CsdConfig::default(), l14);
    // Checked against OpenAI's VisionTransformer(224, 14, 1024, 24, 16) state_dict with proj
    // dropped and CSD's two heads added: 297 tensors, 304,752,640 parameters.
    let shapes = param_shapes(&l14);
    let params: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!((shapes.len(), params), (297, 304_752_640));
    let json = serde_json::to_string(&CsdConfig::tiny()).unwrap();
    assert_eq!(
        serde_json::from_str::<CsdConfig>(&json).unwrap(),
        CsdConfig::tiny()
    );
    let partial: CsdConfig = serde_json::from_str(r#"{"layers": 12}"#).unwrap();
    assert_eq!(partial, CsdConfig { layers: 12, ..l14 });
    let err = serde_json::from_str::<CsdConfig>(r#"{"widht": 12}"#).unwrap_err();
    assert!(err.to_string().contains("widht"), "{err}");
}

/// sum(style * a) + sum(content * b) for fixed random a, b: every parameter moves it.
fn loss(model: &Csd, x: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let (s, c) = model.embed(x).unwrap();
    ((s * a).unwrap().sum_all().unwrap() + (c * b).unwrap().sum_all().unwrap()).unwrap()
}

#[test]
fn gradients_reach_every_parameter_and_match_finite_differences() {
    let cfg = CsdConfig::tiny();
    let dt = DType::F64;
    let weights = random_weights(&cfg, 8, dt);
    let mut varmap = VarMap::new();
    let model = Csd::new(&cfg, VarBuilder::from_varmap(&varmap, dt, &Device::Cpu)).unwrap();
    for (name, t) in &weights {
        varmap.set_one(name, t).unwrap();
    }
    let x = images(&cfg, 2, 9, dt);
    let a = Rng(10).tensor(&[2, cfg.out_dim], 1.0, 0.0, dt);
    let b = Rng(12).tensor(&[2, cfg.out_dim], 1.0, 0.0, dt);
    let grads = loss(&model, &x, &a, &b).backward().unwrap();
    let vars: Vec<(String, Var)> = {
        let data = varmap.data().lock().unwrap();
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    assert_eq!(vars.len(), param_shapes(&cfg).len());
    // Directional derivative along a random direction d of every parameter together:
    // (L(θ + εd) - L(θ - εd)) / 2ε against Σ grad·d.
    let mut rng = Rng(13);
    let mut analytic = 0.0;
    let mut dirs = Vec::new();
    for (name, var) in &vars {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
        let d = rng.tensor(var.dims(), 1.0, 0.0, dt);
        let dv: Vec<f64> = d.flatten_all().unwrap().to_vec1().unwrap();
        analytic += g.iter().zip(&dv).map(|(g, d)| g * d).sum::<f64>();
        dirs.push(d);
    }
    let eps = 1e-5;
    let at = |sign: f64| -> f64 {
        for ((name, var), d) in vars.iter().zip(&dirs) {
            let moved = (&weights[name] + (d * (sign * eps)).unwrap()).unwrap();
            var.set(&moved).unwrap();
        }
        loss(&model, &x, &a, &b).to_scalar::<f64>().unwrap()
    };
    let numeric = (at(1.0) - at(-1.0)) / (2.0 * eps);
    let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
    assert!(
        rel < 1e-5,
        "finite difference {numeric} vs backward {analytic}"
    );
}

#[test]
fn style_loss_gives_the_content_head_no_gradient() {
    let cfg = CsdConfig::tiny();
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = Csd::new(&cfg, vb).unwrap();
    for (name, t) in random_weights(&cfg, 14, DType::F32) {
        varmap.set_one(&name, &t).unwrap();
    }
    let style = model.style(&images(&cfg, 2, 15, DType::F32)).unwrap();
    let w = Rng(16).tensor(&[2, cfg.out_dim], 1.0, 0.0, DType::F32);
    let grads = (style * w).unwrap().sum_all().unwrap().backward().unwrap();
    let data = varmap.data().lock().unwrap();
    for (name, var) in data.iter() {
        let g = grads.get(var);
        if name == csd::CONTENT_HEAD {
            assert!(g.is_none(), "{name} got a gradient from the style alone");
        } else {
            let g: Vec<f32> = g.unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0),
                "{name}"
            );
        }
    }
}

/// The fixture of `scripts/convert_csd.py --golden`: a tiny CSD pickle in the published
/// format, converted by the script, and the outputs of OpenAI's `VisionTransformer` + CSD.
#[test]
fn matches_openai_clip_and_csd_forward() {
    let cfg = CsdConfig::tiny();
    let model = Csd::from_safetensors(&cfg, Path::new(FIXTURE), DType::F32, &Device::Cpu).unwrap();
    let golden = candle_core::safetensors::load(FIXTURE, &Device::Cpu).unwrap();
    let x = &golden["golden.input"];
    let feature = model.features(x).unwrap();
    let (style, content) = model.embed(x).unwrap();
    for (name, ours) in [
        ("feature", &feature),
        ("style", &style),
        ("content", &content),
    ] {
        let d = max_abs_diff(ours, &golden[&format!("golden.{name}")]);
        assert!(d < 2e-5, "{name}: max |ours - torch| = {d}");
    }
}

/// The fixture's two noise images, preprocessed by PIL as torchvision does: 45 x 37 is
/// downscaled to 38 x 32 and cropped at x = 3; 20 x 13 is upscaled to 49 x 32 and cropped at
/// x = round(8.5) = 8. Our resize is PIL's bicubic bit for bit, so the tensors are equal.
#[test]
fn preprocessing_matches_pil_exactly() {
    let golden = candle_core::safetensors::load(FIXTURE, &Device::Cpu).unwrap();
    for (k, w, h, dims) in [("a", 45, 37, (38, 32)), ("b", 20, 13, (49, 32))] {
        let raw = &golden[&format!("golden.image.{k}")];
        assert_eq!(raw.dims(), &[h as usize, w as usize, 3]);
        let bytes: Vec<u8> = raw.flatten_all().unwrap().to_vec1().unwrap();
        let img = RgbImage::from_raw(w, h, bytes).unwrap();
        assert_eq!(resized_dims(w, h, 32), dims);
        let ours = preprocess(&img, 32).unwrap();
        let ours = Tensor::from_vec(ours, (3, 32, 32), &Device::Cpu).unwrap();
        let d = max_abs_diff(&ours, &golden[&format!("golden.pixels.{k}")]);
        assert!(
            d < 1e-6,
            "image {k}: max |ours - PIL| = {d} (normalised units)"
        );
    }
}

fn normalised(level: u8, c: usize) -> f32 {
    (level as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
}

#[test]
fn preprocessing_crops_the_centre_by_hand() {
    // 64 wide x 32 high at size 32: the short side is already 32, so no resampling; the crop
    // starts at x = (64 - 32) / 2 = 16. R = column, G = row, B = 200.
    let img = RgbImage::from_fn(64, 32, |x, y| Rgb([x as u8, y as u8, 200]));
    let crop = resize_and_crop(&img, 32).unwrap();
    assert_eq!(crop.dimensions(), (32, 32));
    assert_eq!(crop.get_pixel(0, 0).0, [16, 0, 200]);
    assert_eq!(crop.get_pixel(31, 31).0, [47, 31, 200]);
    let v = preprocess(&img, 32).unwrap();
    assert_eq!(v.len(), 3 * 32 * 32);
    // Red of crop pixel (0, 0): (16 / 255 - 0.48145466) / 0.26862954 = -1.558688.
    assert!((v[0] - -1.558_688).abs() < 1e-5, "{}", v[0]);
    // Green at crop row 5, column 7 (original x = 23, y = 5): (5 / 255 - 0.4578275) / 0.26130258
    // = -1.677058.
    assert!((v[32 * 32 + 5 * 32 + 7] - -1.677_058).abs() < 1e-5);
    assert_eq!(v[2 * 32 * 32 + 100], normalised(200, 2));
    // Tall image: the crop is vertical. 32 wide x 35 high -> round(1.5) = 2 rows skipped.
    let tall = RgbImage::from_fn(32, 35, |x, y| Rgb([x as u8, y as u8, 0]));
    assert_eq!(
        resize_and_crop(&tall, 32).unwrap().get_pixel(0, 0).0,
        [0, 2, 0]
    );
    // Python's round is half to even: offsets for len - size = 0..=5.
    let offsets: Vec<u32> = (0..6).map(|d| center_crop_offset(32 + d, 32)).collect();
    assert_eq!(offsets, [0, 0, 1, 2, 2, 2]);
}

#[test]
fn preprocessing_resizes_the_short_side() {
    // 90 x 60 -> 48 x 32 -> crop at x = 8. A solid colour stays solid through the cubic.
    assert_eq!(resized_dims(90, 60, 32), (48, 32));
    assert_eq!(resized_dims(60, 91, 32), (32, 48)); // floor(32 * 91 / 60) = floor(48.53)
    let img = RgbImage::from_pixel(90, 60, Rgb([10, 128, 250]));
    let v = preprocess(&img, 32).unwrap();
    for c in 0..3 {
        let want = normalised([10, 128, 250][c], c);
        assert!(v[c * 1024..(c + 1) * 1024]
            .iter()
            .all(|x| (x - want).abs() < 1e-6));
    }
    let t = preprocess_batch(&[img.clone(), img], 32, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[2, 3, 32, 32]);
}

#[test]
fn preprocessing_refuses_empty_inputs() {
    let err = preprocess(&RgbImage::new(0, 5), 32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0x5"), "{err}");
    assert!(preprocess(&RgbImage::new(4, 4), 0).is_err());
    let err = preprocess_batch(&[RgbImage::new(4, 4), RgbImage::new(3, 0)], 8, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("image 1"), "{err}");
    let err = batch(&[vec![0.0; 12], vec![0.0; 11]], 2, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("image 1 has 11 values"), "{err}");
    assert!(batch(&[], 2, &Device::Cpu).is_err());
}
