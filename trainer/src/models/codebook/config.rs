//! `StyleCodebookConfig`: the shape of the style codebook (DESIGN.md, "Style codebook"; CoTyle,
//! arXiv 2511.10555, section 3.1) and its dead-code policy. The encoder width is not here: it
//! is the vision encoder's `out_hidden_size`, passed to `StyleCodebook::new` beside this.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StyleCodebookConfig {
    /// Codebook entries K (the AR generator's vocabulary). Paper: 1024.
    pub codes: usize,
    /// Width of a code vector Dc. Paper: 64.
    pub code_dim: usize,
    /// Heads of the self-attention blocks of the projection and of the mirror; must divide the
    /// encoder width. CUDA attention takes head widths up to 128, so the paper's width 3584
    /// wants at least 28 heads there (CPU takes any).
    pub heads: usize,
    /// Hidden width of the GeGLU MLPs (encoder width -> mlp_hidden -> code_dim and back).
    pub mlp_hidden: usize,
    /// Epsilon of every RMSNorm.
    pub norm_eps: f64,
    pub dead_code: DeadCodeConfig,
}

impl Default for StyleCodebookConfig {
    fn default() -> Self {
        StyleCodebookConfig {
            codes: 1024,
            code_dim: 64,
            heads: 8,
            mlp_hidden: 256,
            norm_eps: 1e-6,
            dead_code: DeadCodeConfig::default(),
        }
    }
}

/// Dead-code handling: usage is counted over a sliding window of recent steps, and every
/// `reinit_every` steps each code used fewer than `min_usage` times in that window is
/// re-initialised from a recent feature (`usage.rs`). Not in the paper; the usual
/// cure for codebook collapse in VQ training (e.g. Dhariwal et al., Jukebox, 2020).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadCodeConfig {
    /// Re-initialise dead codes at all (usage is tracked and logged either way).
    pub enabled: bool,
    /// Steps of usage the window holds. A code is judged only once it has been in the
    /// codebook (since init or its last re-initialisation) for a full window.
    pub window_steps: u64,
    /// A code used fewer times than this over the window is dead; 0 declares none dead.
    pub min_usage: u64,
    /// Steps between re-initialisations.
    pub reinit_every: u64,
}

impl Default for DeadCodeConfig {
    /// A code unused over 100 steps is dead (the tiny demo sees 512 tokens a step, so a
    /// code with a share of even 1/50,000 would likely have been hit), checked every 100 steps.
    fn default() -> Self {
        DeadCodeConfig {
            enabled: true,
            window_steps: 100,
            min_usage: 1,
            reinit_every: 100,
        }
    }
}

impl StyleCodebookConfig {
    /// Rules beyond the types, as `(key, message)`; `prefix` is this section's dotted key.
    /// The rule that `heads` divides the encoder width is checked by `StyleCodebook::new`,
    /// which knows that width.
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut rules = crate::config::rules::Rules::new(prefix);
        let mut need = |ok: bool, k: &str, msg: String| rules.need(ok, k, msg);
        for (k, v) in [
            ("codes", self.codes),
            ("code_dim", self.code_dim),
            ("heads", self.heads),
            ("mlp_hidden", self.mlp_hidden),
        ] {
            need(v > 0, k, "must be at least 1".into());
        }
        // Indices are written as list<uint16> by `trainer extract` (issue 4, item 6).
        need(
            self.codes <= 1 << 16,
            "codes",
            format!(
                "{} is more than 65536 (indices are stored as u16)",
                self.codes
            ),
        );
        need(
            self.norm_eps > 0.0 && self.norm_eps.is_finite(),
            "norm_eps",
            "must be a positive number".into(),
        );
        let d = &self.dead_code;
        // The window also feeds the logged usage and perplexity, so it is needed either way.
        need(
            d.window_steps > 0,
            "dead_code.window_steps",
            "must be at least 1".into(),
        );
        if d.enabled {
            need(
                d.reinit_every > 0,
                "dead_code.reinit_every",
                "must be at least 1 when dead_code.enabled".into(),
            );
        }
        rules.into_vec()
    }
}
