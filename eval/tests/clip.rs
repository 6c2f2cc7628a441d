//! CLIP for CLIP-T and quality (eval::clip): tiny random weights written under the Hugging Face
//! `CLIPModel` names and loaded back (shapes, unit norms, determinism, errors naming the
//! tensor), both towers against a plain-ops reference written here from the HF layout, EOS
//! pooling at argmax, the causal mask, the tokenizer's framing, and the two scores against
//! hand computations from the model's own embeddings. Real weights (`COTYLE_CLIP_DIR` with
//! `model.safetensors` and `tokenizer.json` of `openai/clip-vit-large-patch14`) are used when
//! present; the test says it skipped otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor, D};
use eval::clip::{
    self, antonym_probability, eos_positions, mean, pair_cosines, param_shapes, QUALITY_PROMPTS,
};
use eval::{Clip, ClipConfig, ClipModel, ClipTokenizer};
use image::{Rgb, RgbImage};

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

    fn tensor(&mut self, shape: &[usize], scale: f64, offset: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (offset + scale * self.next()) as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// ln(10): a temperature that keeps the tiny model's probabilities away from 0 and 1.
const LOGIT_SCALE: f64 = std::f64::consts::LN_10;

/// Random weights under the HF names: matrices ~ U(-1, 1) * sqrt(3 / fan_in), biases ~ 0.1 U,
/// LayerNorm weights ~ 1 + 0.1 U, embeddings ~ 0.5 U.
fn random_weights(cfg: &ClipConfig, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed);
    param_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let is_ln = ["layer_norm", "layrnorm", "layernorm"]
                .iter()
                .any(|s| name.contains(s));
            let t = if name == "logit_scale" {
                Tensor::new(LOGIT_SCALE as f32, &Device::Cpu).unwrap()
            } else if is_ln && name.ends_with("weight") {
                rng.tensor(&shape, 0.1, 1.0)
            } else if name.ends_with("bias") {
                rng.tensor(&shape, 0.1, 0.0)
            } else if name.contains("embedding") {
                rng.tensor(&shape, 0.5, 0.0)
            } else {
                let fan_in: usize = shape[1..].iter().product();
                rng.tensor(&shape, (3.0 / fan_in as f64).sqrt(), 0.0)
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

/// A word-level CLIP-like tokenizer.json: lowercase, whitespace split, the words, then
/// `<|startoftext|>` and `<|endoftext|>` as the two highest ids (so EOS = argmax holds).
fn tokenizer_json(words: &[&str], specials_last: bool) -> String {
    let mut vocab = serde_json::Map::new();
    let mut next = 0usize;
    let mut add = |vocab: &mut serde_json::Map<String, serde_json::Value>, t: &str| {
        vocab.insert(t.to_string(), next.into());
        next += 1;
    };
    if !specials_last {
        add(&mut vocab, clip::EOS);
    }
    for w in ["[UNK]"].iter().chain(words) {
        add(&mut vocab, w);
    }
    add(&mut vocab, clip::BOS);
    if specials_last {
        add(&mut vocab, clip::EOS);
    }
    let added: Vec<_> = [clip::BOS, clip::EOS]
        .iter()
        .map(|t| {
            serde_json::json!({"id": vocab[*t], "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

const WORDS: [&str; 10] = [
    "a", "photo", "of", "good", "bad", ".", "cat", "dog", "red", "painting",
];

fn tokenizer(cfg: &ClipConfig) -> ClipTokenizer {
    let json = tokenizer_json(&WORDS, true);
    ClipTokenizer::from_bytes(json.as_bytes(), cfg.text.context_length, "test tokenizer").unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    weights: HashMap<String, Tensor>,
    clip: Clip,
}

fn fixture(seed: u64) -> Fixture {
    let cfg = ClipConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let weights = random_weights(&cfg, seed);
    let path = save(dir.path(), "model.safetensors", &weights);
    let model = ClipModel::from_safetensors(&cfg, &[&path], DType::F32, &Device::Cpu).unwrap();
    let clip = Clip::new(model, tokenizer(&cfg)).unwrap();
    Fixture {
        _dir: dir,
        path,
        weights,
        clip,
    }
}

fn image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Rng(seed);
    RgbImage::from_fn(w, h, |_, _| {
        let mut c = || ((rng.next() + 1.0) * 127.5) as u8;
        Rgb([c(), c(), c()])
    })
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

// ----- A plain-ops reference of HF's CLIPModel, from modeling_clip.py -----

fn w<'a>(m: &'a HashMap<String, Tensor>, n: &str) -> &'a Tensor {
    m.get(n).unwrap_or_else(|| panic!("no {n}"))
}

fn ln(x: &Tensor, g: &Tensor, b: &Tensor) -> Tensor {
    let mu = x.mean_keepdim(D::Minus1).unwrap();
    let xc = x.broadcast_sub(&mu).unwrap();
    let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    xc.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(g)
        .unwrap()
        .broadcast_add(b)
        .unwrap()
}

fn lin(x: &Tensor, m: &HashMap<String, Tensor>, n: &str) -> Tensor {
    let y = x
        .broadcast_matmul(&w(m, &format!("{n}.weight")).t().unwrap())
        .unwrap();
    y.broadcast_add(w(m, &format!("{n}.bias"))).unwrap()
}

/// HF `CLIPEncoder`: x (B, T, C) -> (B, T, C).
fn encoder(
    x: &Tensor,
    m: &HashMap<String, Tensor>,
    tower: &str,
    n: usize,
    heads: usize,
    causal: bool,
) -> Tensor {
    let (b, t, c) = x.dims3().unwrap();
    let d = c / heads;
    let mut x = x.clone();
    for i in 0..n {
        let p = |s: &str| format!("{tower}.encoder.layers.{i}.{s}");
        let h = ln(
            &x,
            w(m, &p("layer_norm1.weight")),
            w(m, &p("layer_norm1.bias")),
        );
        let split = |s: &str| {
            lin(&h, m, &p(&format!("self_attn.{s}")))
                .reshape((b, t, heads, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split("q_proj"), split("k_proj"), split("v_proj"));
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        if causal {
            let mask: Vec<f32> = (0..t * t)
                .map(|ij| {
                    if ij % t > ij / t {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            s = s
                .broadcast_add(&Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap())
                .unwrap();
        }
        let e = s
            .broadcast_sub(&s.max_keepdim(D::Minus1).unwrap())
            .unwrap()
            .exp()
            .unwrap();
        let a = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        let o = a
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, c))
            .unwrap();
        x = (x + lin(&o, m, &p("self_attn.out_proj"))).unwrap();
        let h = ln(
            &x,
            w(m, &p("layer_norm2.weight")),
            w(m, &p("layer_norm2.bias")),
        );
        let h = lin(&h, m, &p("mlp.fc1"));
        let h = (&h * candle_nn::ops::sigmoid(&(&h * 1.702).unwrap()).unwrap()).unwrap();
        x = (x + lin(&h, m, &p("mlp.fc2"))).unwrap();
    }
    x
}

/// HF `CLIPModel.get_image_features`, unnormalised. pixels (B, 3, S, S) -> (B, P).
fn ref_image(pixels: &Tensor, m: &HashMap<String, Tensor>, cfg: &ClipConfig) -> Tensor {
    let v = &cfg.vision;
    let b = pixels.dim(0).unwrap();
    let conv = pixels
        .conv2d(
            w(m, "vision_model.embeddings.patch_embedding.weight"),
            0,
            v.patch_size,
            1,
            1,
        )
        .unwrap(); // (B, C, g, g)
    let patches = conv.flatten_from(2).unwrap().transpose(1, 2).unwrap();
    let cls = w(m, "vision_model.embeddings.class_embedding")
        .reshape((1, 1, v.width))
        .unwrap()
        .broadcast_as((b, 1, v.width))
        .unwrap();
    let x = Tensor::cat(&[&cls, &patches], 1)
        .unwrap()
        .broadcast_add(w(m, "vision_model.embeddings.position_embedding.weight"))
        .unwrap();
    let x = ln(
        &x,
        w(m, "vision_model.pre_layrnorm.weight"),
        w(m, "vision_model.pre_layrnorm.bias"),
    );
    let x = encoder(&x, m, "vision_model", v.layers, v.heads, false);
    let pooled = ln(
        &x.i((.., 0)).unwrap(),
        w(m, "vision_model.post_layernorm.weight"),
        w(m, "vision_model.post_layernorm.bias"),
    );
    pooled
        .matmul(&w(m, "visual_projection.weight").t().unwrap())
        .unwrap()
}

/// HF `CLIPTextTransformer.last_hidden_state`. ids (B, T) -> (B, T, W).
fn ref_text_hidden(ids: &Tensor, m: &HashMap<String, Tensor>, cfg: &ClipConfig) -> Tensor {
    let t = &cfg.text;
    let (b, l) = ids.dims2().unwrap();
    let x = w(m, "text_model.embeddings.token_embedding.weight")
        .index_select(&ids.flatten_all().unwrap(), 0)
        .unwrap()
        .reshape((b, l, t.width))
        .unwrap()
        .broadcast_add(
            &w(m, "text_model.embeddings.position_embedding.weight")
                .narrow(0, 0, l)
                .unwrap(),
        )
        .unwrap();
    let x = encoder(&x, m, "text_model", t.layers, t.heads, true);
    ln(
        &x,
        w(m, "text_model.final_layer_norm.weight"),
        w(m, "text_model.final_layer_norm.bias"),
    )
}

fn unit(x: &Tensor) -> Tensor {
    x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap())
        .unwrap()
}

// ----- Tests -----

#[test]
fn presets_and_param_names_follow_hf() {
    let cfg = ClipConfig::vit_l14();
    assert_eq!(
        (
            cfg.vision.image_size,
            cfg.vision.patch_size,
            cfg.vision.width
        ),
        (224, 14, 1024)
    );
    assert_eq!(
        (cfg.vision.layers, cfg.vision.heads, cfg.vision.mlp_width),
        (24, 16, 4096)
    );
    assert_eq!(
        (cfg.text.vocab_size, cfg.text.context_length, cfg.text.width),
        (49408, 77, 768)
    );
    assert_eq!(
        (cfg.text.layers, cfg.text.heads, cfg.text.mlp_width),
        (12, 12, 3072)
    );
    assert_eq!(cfg.projection_dim, 768);
    assert!(cfg.problems().is_empty() && ClipConfig::tiny().problems().is_empty());
    let shapes: HashMap<_, _> = param_shapes(&cfg).into_iter().collect();
    assert_eq!(shapes.len(), param_shapes(&cfg).len(), "names are unique");
    // 5 + 16 per layer + 3 vision, 2 + 16 per layer + 3 text, logit_scale.
    assert_eq!(shapes.len(), 5 + 16 * 24 + 3 + 2 + 16 * 12 + 3 + 1);
    assert_eq!(
        shapes["vision_model.embeddings.position_embedding.weight"],
        [257, 1024]
    );
    assert_eq!(
        shapes["vision_model.encoder.layers.23.self_attn.q_proj.weight"],
        [1024, 1024]
    );
    assert_eq!(shapes["visual_projection.weight"], [768, 1024]);
    assert_eq!(
        shapes["text_model.encoder.layers.11.mlp.fc1.weight"],
        [3072, 768]
    );
    assert_eq!(shapes["text_projection.weight"], [768, 768]);
    assert_eq!(shapes["logit_scale"], Vec::<usize>::new());
    // Serde: defaults fill in, typos are refused naming the key.
    let c: ClipConfig = serde_json::from_str(r#"{"text": {"layers": 3}}"#).unwrap();
    assert_eq!((c.text.layers, c.vision.layers), (3, 24));
    let err = serde_json::from_str::<ClipConfig>(r#"{"text": {"layer": 3}}"#).unwrap_err();
    assert!(err.to_string().contains("layer"), "{err}");
    let mut bad = ClipConfig::tiny();
    bad.text.heads = 5;
    assert!(bad.problems().iter().any(|(k, _)| k == "text.heads"));
}

#[test]
fn towers_match_a_plain_ops_reference_of_the_hf_layout() {
    let f = fixture(1);
    let cfg = ClipConfig::tiny();
    let model = f.clip.model();
    let imgs = [image(40, 36, 2), image(32, 32, 3)];
    let pixels = eval::csd::preprocess_batch(&imgs, cfg.vision.image_size, &Device::Cpu).unwrap();
    let got = model.image_embeds(&pixels).unwrap();
    let want = unit(&ref_image(&pixels, &f.weights, &cfg));
    assert_eq!(got.dims(), [2, cfg.projection_dim]);
    assert!(
        max_abs_diff(&got, &want) < 1e-4,
        "image: {}",
        max_abs_diff(&got, &want)
    );

    let ids = f
        .clip
        .tokenizer()
        .encode_tensor(&["a photo of a cat", "bad dog ."], &Device::Cpu)
        .unwrap();
    let hidden = model.text().hidden(&ids).unwrap();
    let want_h = ref_text_hidden(&ids, &f.weights, &cfg);
    assert_eq!(hidden.dims(), [2, cfg.text.context_length, cfg.text.width]);
    assert!(
        max_abs_diff(&hidden, &want_h) < 1e-4,
        "text: {}",
        max_abs_diff(&hidden, &want_h)
    );
    // EOS rows of the reference, projected, normalised: the text embeddings.
    let pooled = Tensor::stack(&[want_h.i((0, 6)).unwrap(), want_h.i((1, 4)).unwrap()], 0).unwrap();
    let want_t = unit(
        &pooled
            .matmul(&w(&f.weights, "text_projection.weight").t().unwrap())
            .unwrap(),
    );
    let got_t = model.text_embeds(&ids).unwrap();
    assert!(
        max_abs_diff(&got_t, &want_t) < 1e-4,
        "text embeds: {}",
        max_abs_diff(&got_t, &want_t)
    );
    assert!((model.logit_scale().unwrap() - 10.0).abs() < 1e-5);
}

#[test]
fn embeddings_are_unit_rows_and_deterministic() {
    let (a, b) = (fixture(4), fixture(4));
    let imgs = [image(33, 47, 5), image(64, 32, 6), image(32, 32, 7)];
    let ea = a.clip.embed_images(&imgs).unwrap();
    assert_eq!(ea.dims(), [3, 16]);
    let norms: Vec<f32> = ea.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    let eb = b.clip.embed_images(&imgs).unwrap();
    assert_eq!(ea.to_vec2::<f32>().unwrap(), eb.to_vec2::<f32>().unwrap());
    let prompts = ["a red cat", "a painting of a dog", "good photo ."];
    let ta = a.clip.embed_prompts(&prompts).unwrap();
    assert_eq!(ta.dims(), [3, 16]);
    assert_eq!(
        ta.to_vec2::<f32>().unwrap(),
        b.clip
            .embed_prompts(&prompts)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    );
    // Batching does not change the result beyond rounding.
    let one = a.clip.clone().with_batch_size(1);
    assert!(max_abs_diff(&one.embed_images(&imgs).unwrap(), &ea) < 1e-5);
    assert!(max_abs_diff(&one.embed_prompts(&prompts).unwrap(), &ta) < 1e-5);
}

#[test]
fn clip_t_is_the_cosine_of_the_pair_embeddings() {
    let f = fixture(8);
    let (x, y) = (image(40, 40, 9), image(50, 34, 10));
    let imgs = [x.clone(), y.clone(), x.clone()];
    let prompts = ["a photo of a cat", "a red dog", "a photo of a cat"];
    let s = f.clip.clip_t(&imgs, &prompts).unwrap();
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|v| (-1.0..=1.0).contains(v)), "{s:?}");
    assert!((s[0] - s[2]).abs() < 1e-6, "same image, same prompt: {s:?}");
    // By hand from the model's embeddings.
    let ei = f
        .clip
        .embed_images(&[x, y])
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let et = f
        .clip
        .embed_prompts(&prompts[..2])
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for i in 0..2 {
        let dot: f64 = ei[i]
            .iter()
            .zip(&et[i])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!((dot - s[i]).abs() < 1e-5, "pair {i}: {dot} vs {}", s[i]);
    }
    let m = f.clip.clip_t_mean(&imgs, &prompts).unwrap();
    assert!((m - (s[0] + s[1] + s[2]) / 3.0).abs() < 1e-12);
    // Counts must agree.
    let err = f.clip.clip_t(&imgs[..2], &prompts).unwrap_err().to_string();
    assert!(err.contains("2 images but 3 prompts"), "{err}");
}

#[test]
fn score_functions_on_hand_made_embeddings() {
    let dev = Device::Cpu;
    let a = Tensor::new(&[[3f32, 4.0], [1.0, 0.0]], &dev).unwrap();
    let b = Tensor::new(&[[4f32, 3.0], [-2.0, 0.0]], &dev).unwrap();
    let s = pair_cosines(&a, &b).unwrap();
    assert!(
        (s[0] - 24.0 / 25.0).abs() < 1e-7 && (s[1] + 1.0).abs() < 1e-12,
        "{s:?}"
    );
    assert_eq!(mean(&s), Some((s[0] + s[1]) / 2.0));
    assert_eq!(mean(&[]), None);
    // cos+ = 1, cos- = 0 at scale 2: sigmoid(2).
    let img = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
    let pos = Tensor::new(&[5f32, 0.0], &dev).unwrap();
    let neg = Tensor::new(&[0f32, 1.0], &dev).unwrap();
    let p = antonym_probability(&img, &pos, &neg, 2.0).unwrap();
    assert!((p[0] - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-12, "{p:?}");
    assert!(pair_cosines(&a, &b.narrow(0, 0, 1).unwrap()).is_err());
}

#[test]
fn quality_is_the_softmax_of_the_antonym_pair() {
    let f = fixture(11);
    let imgs = [image(40, 40, 12), image(32, 48, 13), image(32, 32, 14)];
    let q = f.clip.quality(&imgs).unwrap();
    assert_eq!(q.len(), 3);
    assert!(q.iter().all(|v| (0.0..=1.0).contains(v)), "{q:?}");
    assert_eq!(QUALITY_PROMPTS, ["Good photo.", "Bad photo."]);
    // By hand: scale = exp(logit_scale) read back from the file, embeddings from the model.
    let scale = f64::from(f.weights["logit_scale"].to_scalar::<f32>().unwrap()).exp();
    let ei = f
        .clip
        .embed_images(&imgs)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let ids = f
        .clip
        .tokenizer()
        .encode_tensor(&QUALITY_PROMPTS, &Device::Cpu)
        .unwrap();
    let et = f
        .clip
        .model()
        .text_embeds(&ids)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, e) in ei.iter().enumerate() {
        let cos = |t: &[f32]| {
            e.iter()
                .zip(t)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        let (g, b) = ((scale * cos(&et[0])).exp(), (scale * cos(&et[1])).exp());
        assert!(
            (q[i] - g / (g + b)).abs() < 1e-5,
            "image {i}: {} vs {}",
            q[i],
            g / (g + b)
        );
    }
    // Not degenerate at this temperature: the images disagree.
    assert!(q.iter().any(|v| (v - q[0]).abs() > 1e-4), "{q:?}");
}

#[test]
fn eos_pooling_is_at_the_argmax_id() {
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[5u32, 9, 3, 0], [9, 9, 1, 2], [1, 2, 3, 4]], &dev).unwrap();
    assert_eq!(eos_positions(&ids).unwrap(), [1, 0, 3]);
    let f = fixture(15);
    let tok = f.clip.tokenizer();
    let framed = tok.encode(&["a cat", "good photo ."]).unwrap();
    let (bos, eos) = (tok.bos_id(), tok.eos_id());
    assert_eq!(framed[0][..4], [bos, 1, 7, eos], "[BOS, a, cat, EOS]");
    assert!(framed.iter().all(|r| r.len() == 16));
    assert!(framed[0][4..].iter().all(|&i| i == clip::PAD_ID));
    let ids = tok.encode_tensor(&["a cat", "good photo ."], &dev).unwrap();
    assert_eq!(eos_positions(&ids).unwrap(), [3, 4]);
    // The embedding is the projection of the hidden state at exactly that position.
    let model = f.clip.model();
    let h = model.text().hidden(&ids).unwrap();
    let proj = model.text().projection();
    for (b, p) in [(0usize, 3usize), (1, 4)] {
        let want = unit(
            &h.i((b, p))
                .unwrap()
                .unsqueeze(0)
                .unwrap()
                .matmul(&proj.t().unwrap())
                .unwrap(),
        );
        let got = model.text_embeds(&ids.narrow(0, b, 1).unwrap()).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        let other = unit(
            &h.i((b, p + 1))
                .unwrap()
                .unsqueeze(0)
                .unwrap()
                .matmul(&proj.t().unwrap())
                .unwrap(),
        );
        assert!(
            max_abs_diff(&got, &other) > 1e-3,
            "a neighbouring row differs"
        );
    }
    // A long prompt is truncated to context_length - 2 words, then EOS.
    let long = ["a"; 40].join(" ");
    let r = &tok.encode(&[long.as_str()]).unwrap()[0];
    assert_eq!((r.len(), r[0], r[15]), (16, bos, eos));
    assert!(r[1..15].iter().all(|&i| i == 1));
}

#[test]
fn the_text_tower_is_causal() {
    let f = fixture(16);
    let dev = Device::Cpu;
    let a: Vec<u32> = vec![11, 2, 3, 8, 4, 5, 6, 12, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut b = a.clone();
    b[5] = 9;
    let ids = Tensor::from_vec([a.clone(), b].concat(), (2, 16), &dev).unwrap();
    let h = f.clip.model().text().hidden(&ids).unwrap();
    let (ha, hb) = (h.i(0).unwrap(), h.i(1).unwrap());
    let before = max_abs_diff(&ha.narrow(0, 0, 5).unwrap(), &hb.narrow(0, 0, 5).unwrap());
    assert!(before < 1e-6, "positions 0..5 changed by {before}");
    for p in [5, 6, 7] {
        assert!(
            max_abs_diff(&ha.i(p).unwrap(), &hb.i(p).unwrap()) > 1e-3,
            "position {p}"
        );
    }
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let cfg = ClipConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let load = |m: &HashMap<String, Tensor>, file: &str| {
        let path = save(dir.path(), file, m);
        ClipModel::from_safetensors(&cfg, &[&path], DType::F32, &Device::Cpu)
            .unwrap_err()
            .to_string()
    };
    for name in [
        "vision_model.encoder.layers.1.self_attn.k_proj.weight",
        "vision_model.pre_layrnorm.bias",
        "visual_projection.weight",
        "text_model.encoder.layers.1.mlp.fc2.bias",
        "text_model.final_layer_norm.weight",
        "logit_scale",
    ] {
        let mut m = random_weights(&cfg, 17);
        m.remove(name);
        let err = load(&m, "missing.safetensors");
        assert!(
            err.contains(name) && err.contains("missing.safetensors"),
            "{name}: {err}"
        );
    }
    let mut m = random_weights(&cfg, 17);
    m.insert(
        "text_projection.weight".into(),
        Tensor::zeros((16, 25), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load(&m, "shape.safetensors");
    assert!(err.contains("text_projection.weight"), "{err}");
    let mut m = random_weights(&cfg, 17);
    m.insert(
        "vision_model.encoder.layers.0.self_attn.v_proj.bias".into(),
        Tensor::zeros(31, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load(&m, "shape2.safetensors");
    assert!(
        err.contains("vision_model.encoder.layers.0.self_attn.v_proj.bias"),
        "{err}"
    );
    // Extra tensors (e.g. HF's position_ids buffers) are ignored.
    let mut m = random_weights(&cfg, 17);
    m.insert(
        "text_model.embeddings.position_ids".into(),
        Tensor::zeros((1, 16), DType::I64, &Device::Cpu).unwrap(),
    );
    let path = save(dir.path(), "extra.safetensors", &m);
    ClipModel::from_safetensors(&cfg, &[&path], DType::F32, &Device::Cpu).unwrap();
}

#[test]
fn tokenizers_and_inputs_that_cannot_work_are_refused() {
    let cfg = ClipConfig::tiny();
    let json = tokenizer_json(&WORDS, false);
    let err = ClipTokenizer::from_bytes(json.as_bytes(), 16, "eos-first")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eos-first") && err.contains("highest"),
        "{err}"
    );
    let err = ClipTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"), 16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    let f = fixture(18);
    let short = ClipTokenizer::from_bytes(tokenizer_json(&WORDS, true).as_bytes(), 8, "t").unwrap();
    let err = Clip::new(f.clip.model().clone(), short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("context_length"), "{err}");
    // Ids beyond the vocabulary name the row and column.
    let ids = Tensor::new(&[[1u32, 2], [3, 64]], &Device::Cpu).unwrap();
    let err = f.clip.model().text().hidden(&ids).unwrap_err().to_string();
    assert!(err.contains("row 1 column 1"), "{err}");
    assert!(f.clip.quality(&[]).is_err());
    assert!(f.clip.clip_t(&[], &[]).is_err());
    let mut bad = cfg.clone();
    bad.vision.patch_size = 5;
    let err = ClipModel::from_safetensors(&bad, &[&f.path], DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vision.image_size"), "{err}");
}

/// Real `openai/clip-vit-large-patch14` weights when `COTYLE_CLIP_DIR` holds them.
#[test]
fn real_weights_when_present() {
    let Some(dir) = std::env::var_os("COTYLE_CLIP_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set COTYLE_CLIP_DIR to a folder with model.safetensors and tokenizer.json of openai/clip-vit-large-patch14");
        return;
    };
    let (weights, tok) = (dir.join("model.safetensors"), dir.join("tokenizer.json"));
    if !weights.exists() || !tok.exists() {
        eprintln!(
            "skipped: {} lacks model.safetensors or tokenizer.json",
            dir.display()
        );
        return;
    }
    let clip = Clip::load(
        &ClipConfig::vit_l14(),
        &weights,
        &tok,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert!((clip.model().logit_scale().unwrap() - 100.0).abs() < 1e-3);
    let ids = clip.tokenizer().encode(&["a photo of a cat"]).unwrap();
    assert_eq!(ids[0][..7], [49406, 320, 1125, 539, 320, 2368, 49407]);
    let red = RgbImage::from_pixel(224, 224, Rgb([220, 20, 20]));
    let s = clip
        .clip_t(
            &[red.clone(), red.clone()],
            &["a red square", "a photo of a dog"],
        )
        .unwrap();
    eprintln!(
        "clip-t red image: {s:?}, quality {:?}",
        clip.quality(&[red]).unwrap()
    );
    assert!(s[0] > s[1], "{s:?}");
}
