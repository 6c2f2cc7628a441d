//! `ClipConfig`: the shape of a CLIP model (Radford et al. 2021, "Learning Transferable Visual
//! Models From Natural Language Supervision"; github.com/openai/CLIP, `clip/model.py`) in the
//! Hugging Face `CLIPModel` layout (transformers, `models/clip/modeling_clip.py`): a ViT image
//! tower, a causal text transformer, and two bias-free projections into a shared space. Field
//! names follow [`CsdConfig`] (`width`, `layers`, `heads`, `mlp_width`); HF's are in the doc
//! comments. Defaults are [`ClipConfig::vit_l14`] (`openai/clip-vit-large-patch14`, the model
//! CLIP-T is reported with); [`ClipConfig::tiny`] is a CPU test preset. [`param_shapes`] lists
//! every tensor the model reads under its HF name.

use serde::{Deserialize, Serialize};

use crate::csd::CsdConfig;

/// The image tower (HF `CLIPVisionConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipVisionConfig {
    /// Side of the square input in pixels (HF `image_size`).
    pub image_size: usize,
    /// Side of a square patch in pixels (HF `patch_size`).
    pub patch_size: usize,
    /// Transformer width (HF `hidden_size`).
    pub width: usize,
    /// Encoder layers (HF `num_hidden_layers`).
    pub layers: usize,
    /// Attention heads (HF `num_attention_heads`).
    pub heads: usize,
    /// QuickGELU MLP width (HF `intermediate_size`).
    pub mlp_width: usize,
}

/// The text tower (HF `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipTextConfig {
    /// Rows of `token_embedding` (HF `vocab_size`).
    pub vocab_size: usize,
    /// Tokens per prompt, BOS and EOS included (HF `max_position_embeddings`; CLIP's 77).
    pub context_length: usize,
    /// Transformer width (HF `hidden_size`).
    pub width: usize,
    /// Encoder layers (HF `num_hidden_layers`).
    pub layers: usize,
    /// Attention heads (HF `num_attention_heads`).
    pub heads: usize,
    /// QuickGELU MLP width (HF `intermediate_size`).
    pub mlp_width: usize,
}

/// A whole CLIP model (HF `CLIPConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipConfig {
    pub vision: ClipVisionConfig,
    pub text: ClipTextConfig,
    /// Width of the shared embedding space (HF `projection_dim`).
    pub projection_dim: usize,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        ClipConfig::vit_l14().vision
    }
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipConfig::vit_l14().text
    }
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig::vit_l14()
    }
}

impl ClipConfig {
    /// OpenAI CLIP ViT-L/14 at 224 px (`openai/clip-vit-large-patch14`): vision 16 x 16
    /// patches of 14 px, width 1024, 24 layers of 16 heads, MLP 4096; text vocabulary 49408,
    /// 77 positions, width 768, 12 layers of 12 heads, MLP 3072; projection 768.
    pub fn vit_l14() -> Self {
        ClipConfig {
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 14,
                width: 1024,
                layers: 24,
                heads: 16,
                mlp_width: 4096,
            },
            text: ClipTextConfig {
                vocab_size: 49408,
                context_length: 77,
                width: 768,
                layers: 12,
                heads: 12,
                mlp_width: 3072,
            },
            projection_dim: 768,
        }
    }

    /// Tiny CPU preset for tests: vision 32 px in 8 px patches, width 32, 2 layers of 4
    /// heads, MLP 128; text vocabulary 64, 16 positions, width 24, 2 layers of 3 heads, MLP
    /// 96; projection 16.
    pub fn tiny() -> Self {
        ClipConfig {
            vision: ClipVisionConfig {
                image_size: 32,
                patch_size: 8,
                width: 32,
                layers: 2,
                heads: 4,
                mlp_width: 128,
            },
            text: ClipTextConfig {
                vocab_size: 64,
                context_length: 16,
                width: 24,
                layers: 2,
                heads: 3,
                mlp_width: 96,
            },
            projection_dim: 16,
        }
    }

    /// The image tower as the CSD model's shape: the same ViT, with `projection_dim` as the
    /// width of its (style) head, which the HF names map onto (`names.rs`).
    pub fn csd_config(&self) -> CsdConfig {
        let v = &self.vision;
        CsdConfig {
            image_size: v.image_size,
            patch_size: v.patch_size,
            width: v.width,
            layers: v.layers,
            heads: v.heads,
            mlp_width: v.mlp_width,
            out_dim: self.projection_dim,
        }
    }

    /// Rules beyond the types, as `(key, message)` with dotted keys (`text.heads`); empty
    /// when the config is usable.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .csd_config()
            .problems()
            .into_iter()
            .map(|(k, m)| match k.as_str() {
                "out_dim" => ("projection_dim".to_string(), m),
                _ => (format!("vision.{k}"), m),
            })
            .collect();
        let t = &self.text;
        for (k, v) in [
            ("vocab_size", t.vocab_size),
            ("context_length", t.context_length),
            ("width", t.width),
            ("layers", t.layers),
            ("heads", t.heads),
            ("mlp_width", t.mlp_width),
        ] {
            if v == 0 {
                out.push((format!("text.{k}"), "must be at least 1".into()));
            }
        }
        if t.context_length == 1 {
            out.push((
                "text.context_length".into(),
                "must be at least 2 (BOS and EOS)".into(),
            ));
        }
        if t.heads > 0 && !t.width.is_multiple_of(t.heads) {
            out.push((
                "text.heads".into(),
                format!("{} does not divide width {}", t.heads, t.width),
            ));
        }
        out
    }
}

/// Every tensor the model reads, `(name, shape)`, under the HF `CLIPModel` names: the vision
/// tower, `visual_projection`, the text tower, `text_projection`, `logit_scale` (a scalar).
pub fn param_shapes(cfg: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let (v, t, p) = (&cfg.vision, &cfg.text, cfg.projection_dim);
    let grid = v.image_size / v.patch_size.max(1);
    let mut out = vec![
        (
            "vision_model.embeddings.class_embedding".into(),
            vec![v.width],
        ),
        (
            "vision_model.embeddings.patch_embedding.weight".into(),
            vec![v.width, 3, v.patch_size, v.patch_size],
        ),
        (
            "vision_model.embeddings.position_embedding.weight".into(),
            vec![grid * grid + 1, v.width],
        ),
        ("vision_model.pre_layrnorm.weight".into(), vec![v.width]),
        ("vision_model.pre_layrnorm.bias".into(), vec![v.width]),
    ];
    encoder_shapes(&mut out, "vision_model", v.layers, v.width, v.mlp_width);
    out.extend([
        ("vision_model.post_layernorm.weight".into(), vec![v.width]),
        ("vision_model.post_layernorm.bias".into(), vec![v.width]),
        ("visual_projection.weight".into(), vec![p, v.width]),
        (
            "text_model.embeddings.token_embedding.weight".into(),
            vec![t.vocab_size, t.width],
        ),
        (
            "text_model.embeddings.position_embedding.weight".into(),
            vec![t.context_length, t.width],
        ),
    ]);
    encoder_shapes(&mut out, "text_model", t.layers, t.width, t.mlp_width);
    out.extend([
        ("text_model.final_layer_norm.weight".into(), vec![t.width]),
        ("text_model.final_layer_norm.bias".into(), vec![t.width]),
        ("text_projection.weight".into(), vec![p, t.width]),
        ("logit_scale".into(), vec![]),
    ]);
    out
}

/// `{tower}.encoder.layers.N.*` of an HF `CLIPEncoder` of `layers` layers.
fn encoder_shapes(
    out: &mut Vec<(String, Vec<usize>)>,
    tower: &str,
    layers: usize,
    c: usize,
    m: usize,
) {
    for i in 0..layers {
        let n = |s: &str| format!("{tower}.encoder.layers.{i}.{s}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push((n(&format!("self_attn.{proj}.weight")), vec![c, c]));
            out.push((n(&format!("self_attn.{proj}.bias")), vec![c]));
        }
        for ln in ["layer_norm1", "layer_norm2"] {
            out.push((n(&format!("{ln}.weight")), vec![c]));
            out.push((n(&format!("{ln}.bias")), vec![c]));
        }
        out.extend([
            (n("mlp.fc1.weight"), vec![m, c]),
            (n("mlp.fc1.bias"), vec![m]),
            (n("mlp.fc2.weight"), vec![c, m]),
            (n("mlp.fc2.bias"), vec![c]),
        ]);
    }
}
