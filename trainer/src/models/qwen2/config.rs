//! `Qwen2Config`: the shape of the style generator, a Qwen2 decoder (HF `Qwen2Config`,
//! `configuration_qwen2.py`). Field names are HF's so a checkpoint's `config.json` maps one to
//! one ([`Qwen2Config::from_hf_json`], [`Qwen2Config::to_hf_json`]).
//!
//! Presets: [`Qwen2Config::tiny`] (tests, CI), [`Qwen2Config::demo`] (the 2-core demo) and
//! [`Qwen2Config::full`] (Qwen2-0.5B, as the paper: hidden 896, 24 layers, 14 heads, 2 KV
//! heads, intermediate 4864, tied embeddings). The vocabulary is the codebook size and the
//! context the tokens per image; in a stage config both may be left at 0 and are then taken
//! from the index set the stage trains on.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Qwen2Config {
    /// Token vocabulary: the codebook size (0: from the data).
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: query heads share these K/V heads.
    pub num_key_value_heads: usize,
    /// Longest sequence: the tokens per image (0: from the data).
    pub max_position_embeddings: usize,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// The output head reuses the token embedding (`lm_head` is then not a tensor).
    pub tie_word_embeddings: bool,
    /// Std of the seeded normal init of weight matrices and embeddings (HF's).
    pub initializer_range: f64,
}

impl Default for Qwen2Config {
    fn default() -> Self {
        Qwen2Config::tiny()
    }
}

impl Qwen2Config {
    /// Tests and CI: two layers of width 64, vocabulary and context from the data.
    pub fn tiny() -> Self {
        Qwen2Config {
            vocab_size: 0,
            hidden_size: 64,
            intermediate_size: 176,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 0,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            initializer_range: 0.02,
        }
    }

    /// The 2-core demo: 4 layers of width 256 (about 3.3M parameters at 1024 codes).
    pub fn demo() -> Self {
        Qwen2Config {
            hidden_size: 256,
            intermediate_size: 704,
            num_hidden_layers: 4,
            num_attention_heads: 8,
            num_key_value_heads: 2,
            ..Qwen2Config::tiny()
        }
    }

    /// Qwen2-0.5B's decoder (HF `Qwen/Qwen2-0.5B` config.json), as the paper trains it from
    /// scratch, with the codebook as vocabulary: 1024 codes, 196 tokens per image.
    pub fn full() -> Self {
        Qwen2Config {
            vocab_size: 1024,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            max_position_embeddings: 196,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            initializer_range: 0.02,
        }
    }

    /// A preset by name: `tiny`, `demo` or `full`.
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "tiny" => Qwen2Config::tiny(),
            "demo" => Qwen2Config::demo(),
            "full" => Qwen2Config::full(),
            other => bail!("unknown model preset `{other}` (tiny, demo, full)"),
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Rules beyond the types, as `(key, message)`. Zero vocabulary and context are allowed
    /// here (the stage fills them from the data); [`Qwen2Config::check_resolved`] refuses them.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut r = crate::config::rules::Rules::new(prefix);
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        r.need(self.hidden_size > 0, "hidden_size", "must be at least 1");
        r.need(
            self.intermediate_size > 0,
            "intermediate_size",
            "must be at least 1",
        );
        r.need(
            self.num_hidden_layers > 0,
            "num_hidden_layers",
            "must be at least 1",
        );
        r.need(
            h > 0 && self.hidden_size.is_multiple_of(h.max(1)),
            "num_attention_heads",
            format!("must divide hidden_size {}", self.hidden_size),
        );
        r.need(
            self.head_dim().is_multiple_of(2),
            "num_attention_heads",
            format!(
                "gives an odd head width {} (RoPE rotates pairs)",
                self.head_dim()
            ),
        );
        r.need(
            kv > 0 && h.is_multiple_of(kv.max(1)),
            "num_key_value_heads",
            format!("must divide num_attention_heads {h}"),
        );
        r.need(self.rope_theta > 0.0, "rope_theta", "must be positive");
        r.need(self.rms_norm_eps > 0.0, "rms_norm_eps", "must be positive");
        r.need(
            self.initializer_range > 0.0,
            "initializer_range",
            "must be positive",
        );
        r.into_vec()
    }

    /// Errors unless the config is valid with vocabulary and context set.
    pub fn check_resolved(&self) -> Result<()> {
        let mut p = self.problems("model");
        if self.vocab_size == 0 {
            p.push(("model.vocab_size".into(), "is not set".into()));
        }
        if self.max_position_embeddings == 0 {
            p.push(("model.max_position_embeddings".into(), "is not set".into()));
        }
        if !p.is_empty() {
            let lines: Vec<String> = p.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("invalid Qwen2 config: {}", lines.join("; "));
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json` (other keys, such as `architectures` or
    /// `torch_dtype`, are ignored; missing ones keep the tiny preset's values).
    // Used by the tests today; `trainer generate` loads HF checkpoint folders with it (real
    // weights, issue 9).
    #[allow(dead_code)]
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).context("config.json")?;
        let obj = v.as_object().context("config.json is not a JSON object")?;
        let mut known = serde_json::Map::new();
        let ours = serde_json::to_value(Qwen2Config::default())?;
        for key in ours
            .as_object()
            .expect("a struct serialises to an object")
            .keys()
        {
            if let Some(x) = obj.get(key) {
                known.insert(key.clone(), x.clone());
            }
        }
        let cfg: Qwen2Config = serde_json::from_value(serde_json::Value::Object(known))
            .context("config.json: a Qwen2 field has the wrong type")?;
        cfg.check_resolved()?;
        Ok(cfg)
    }

    /// A `config.json` that `transformers.Qwen2ForCausalLM.from_pretrained` reads.
    pub fn to_hf_json(&self) -> Result<String> {
        let mut v = serde_json::to_value(self)?;
        let obj = v.as_object_mut().expect("a struct serialises to an object");
        obj.insert(
            "architectures".into(),
            serde_json::json!(["Qwen2ForCausalLM"]),
        );
        obj.insert("model_type".into(), serde_json::json!("qwen2"));
        obj.insert("hidden_act".into(), serde_json::json!("silu"));
        obj.insert("attention_dropout".into(), serde_json::json!(0.0));
        obj.insert("use_sliding_window".into(), serde_json::json!(false));
        obj.insert("torch_dtype".into(), serde_json::json!("float32"));
        Ok(serde_json::to_string_pretty(&v)? + "\n")
    }
}
