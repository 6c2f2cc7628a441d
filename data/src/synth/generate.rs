//! `trainer data synth`: renders the synthetic paired-style dataset into Hugging Face parquet
//! shards. Train and test splits hold *disjoint styles* (test = held-out styles); every style
//! renders `per_style` scenes drawn from a shared pool of `contents`, so one scene appears in
//! several styles and style is separable from content.
//!
//! Every value is a pure function of (seed, style id, image index): the same config writes the
//! same bytes, whatever the thread count (images render in parallel, rows are written in order).

use std::path::Path;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::rng::{mix, Rng};
use crate::shard_writer::{shard_file_name, ShardRow, ShardWriter, WriterOptions};
use crate::synth::{render, Scene, Style};

/// Stream tags, so that style, content and layout draws never share a generator.
const CONTENT_STREAM: u64 = 0x0C04_7E47;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Training styles (ids `first_style .. first_style + styles`).
    pub styles: u32,
    /// Held-out styles for the test split (the ids after the training ones).
    pub test_styles: u32,
    /// Images per style.
    pub per_style: u32,
    /// Image side in pixels.
    pub size: u32,
    pub seed: u64,
    /// Size of the scene pool that images draw their content from.
    pub contents: u32,
    /// First style id: a disjoint id range gives disjoint styles (e.g. for the eval descriptor).
    pub first_style: u64,
    /// Rows per shard file; the shard count follows.
    pub rows_per_shard: u32,
    /// Rows per parquet row group (the loader's unit of reading); 0 sizes groups to ~16 MiB.
    pub rows_per_group: u32,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            styles: 64,
            test_styles: 8,
            per_style: 8,
            size: 64,
            seed: 0,
            contents: 2000,
            first_style: 0,
            rows_per_shard: 4096,
            rows_per_group: 0,
        }
    }
}

impl SynthConfig {
    /// Settings that cannot make a dataset, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (field, value) in [
            ("styles", self.styles),
            ("per_style", self.per_style),
            ("size", self.size),
            ("contents", self.contents),
            ("rows_per_shard", self.rows_per_shard),
        ] {
            if value == 0 {
                out.push((field, "must be at least 1".to_string()));
            }
        }
        out
    }
}

/// What a generation run wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub train_rows: u64,
    pub test_rows: u64,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// Style and content of image `index` of style `style_id`: the single source of both, shared by
/// the generator and by tests that re-render an image.
pub fn image_spec(cfg: &SynthConfig, style_id: u64, index: u32) -> (Style, u64, Scene) {
    let style = Style::from_seed(mix(cfg.seed, style_id));
    let mut pick = Rng::new(mix(
        mix(cfg.seed, CONTENT_STREAM),
        mix(style_id, index as u64),
    ));
    let content_id = pick.below(cfg.contents.max(1) as u64);
    let scene = Scene::from_seed(mix(mix(cfg.seed, CONTENT_STREAM), content_id));
    (style, content_id, scene)
}

/// PNG bytes of one image (fast deflate: generation speed matters more than a few % of size).
pub fn encode_png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding a PNG into memory cannot fail");
    out
}

/// Row groups sized so a group's encoded images stay near 16 MiB (the loader caches whole
/// groups), capped at 256 rows as `datasets` writes small groups for images too.
fn rows_per_group(cfg: &SynthConfig) -> usize {
    if cfg.rows_per_group > 0 {
        return cfg.rows_per_group as usize;
    }
    let size = cfg.size;
    let approx_png = (size as usize * size as usize * 3 / 2).max(1);
    ((16 << 20) / approx_png).clamp(16, 256)
}

/// Parquet files directly in `dir`, sorted.
pub fn existing_shards(dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(DataError::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "parquet") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Writes `out/train-*.parquet` and `out/test-*.parquet`. `progress(done, total)` is called
/// after every chunk of rows.
pub fn generate(
    out: &Path,
    cfg: &SynthConfig,
    progress: &dyn Fn(u64, u64),
) -> Result<SynthSummary, DataError> {
    if let Some((field, message)) = cfg.problems().into_iter().next() {
        return Err(DataError::Empty {
            path: out.to_path_buf(),
            detail: format!("synth {field} {message}"),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::Io {
        path: out.to_path_buf(),
        error: e,
    })?;
    if let Some(old) = existing_shards(out)?.first() {
        return Err(DataError::Layout {
            path: out.to_path_buf(),
            detail: format!(
                "already holds parquet shards ({}); remove them first (or pass --force): new shards \
                 beside old ones would be read as one dataset",
                old.display()
            ),
        });
    }
    let total = (cfg.styles + cfg.test_styles) as u64 * cfg.per_style as u64;
    let mut done = 0u64;
    let mut summary = SynthSummary {
        train_rows: 0,
        test_rows: 0,
        files: Vec::new(),
        bytes: 0,
    };
    let splits = [
        ("train", cfg.first_style, cfg.styles),
        ("test", cfg.first_style + cfg.styles as u64, cfg.test_styles),
    ];
    for (split, first, count) in splits {
        if count == 0 {
            continue;
        }
        let rows: Vec<(u64, u32)> = (first..first + count as u64)
            .flat_map(|s| (0..cfg.per_style).map(move |j| (s, j)))
            .collect();
        let per_shard = cfg.rows_per_shard.max(1) as usize;
        let shards = rows.len().div_ceil(per_shard);
        for (k, shard_rows) in rows.chunks(per_shard).enumerate() {
            let name = shard_file_name(split, k, shards);
            let path = out.join(&name);
            let opts = WriterOptions {
                rows_per_group: rows_per_group(cfg),
                ..WriterOptions::default()
            };
            let mut writer = ShardWriter::create(&path, opts)?;
            // Render a chunk in parallel, write it in order.
            for chunk in shard_rows.chunks(256) {
                let rendered: Vec<(u64, u32, u64, String, Vec<u8>)> = chunk
                    .par_iter()
                    .map(|&(style_id, j)| {
                        let (style, content_id, scene) = image_spec(cfg, style_id, j);
                        let png = encode_png(&render(&style, &scene, cfg.size));
                        (style_id, j, content_id, scene.prompt(), png)
                    })
                    .collect();
                for (style_id, j, content_id, prompt, png) in &rendered {
                    let file = format!("{style_id:06}_{j:04}.png");
                    writer.write(ShardRow {
                        png,
                        path: &file,
                        style_id: *style_id as i64,
                        prompt,
                        content_id: *content_id as i64,
                    })?;
                }
                done += chunk.len() as u64;
                progress(done, total);
            }
            let n = writer.finish()?;
            if split == "train" {
                summary.train_rows += n;
            } else {
                summary.test_rows += n;
            }
            summary.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            summary.files.push(name);
        }
    }
    Ok(summary)
}
