//! `inspect`: a human-readable report on a dataset (HF parquet shards or an image folder),
//! for checking a download or our own `data synth` output before a long run.
//!
//! Per split: files with sizes and compression codecs, the arrow schema, row groups and rows,
//! the Hugging Face features from the `huggingface` metadata (or "none"), styles and images
//! per style, example prompts, and a decode check that lists every failure with its location
//! (shard, row, column, or file path).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::dataset::{decode_rgb, Dataset};
use crate::error::DataError;
use crate::hf::{describe_features, parse_features, type_name};

/// Example prompts shown per split.
const EXAMPLE_PROMPTS: usize = 3;
/// Characters of an example prompt shown before "...".
const PROMPT_CHARS: usize = 80;

/// The whole report: one entry per split.
#[derive(Debug, Clone)]
pub struct InspectReport {
    pub root: PathBuf,
    /// "parquet" or "image folder".
    pub kind: &'static str,
    pub splits: Vec<SplitReport>,
}

/// One parquet shard.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Distinct codecs of its column chunks, lower case (`snappy`, `zstd`, `uncompressed`).
    pub codecs: Vec<String>,
    pub row_groups: usize,
    pub rows: u64,
    pub created_by: Option<String>,
}

/// What decoding the first rows found.
#[derive(Debug, Clone, Default)]
pub struct DecodeCheck {
    /// Rows looked at.
    pub checked: usize,
    pub decoded: usize,
    /// (width, height) -> count.
    pub sizes: BTreeMap<(u32, u32), usize>,
    /// Image format (`png`, `jpeg`, `webp`) -> count.
    pub formats: BTreeMap<String, usize>,
    /// Every failure, as its error message (which names the location).
    pub failures: Vec<String>,
}

/// One split.
#[derive(Debug, Clone)]
pub struct SplitReport {
    pub name: String,
    /// Parquet shards (empty for image folders).
    pub files: Vec<FileReport>,
    /// Image folders: extension -> (files, bytes).
    pub image_files: BTreeMap<String, (usize, u64)>,
    /// `name: type` per column (parquet only).
    pub arrow_schema: Vec<String>,
    /// HF features, one `name: Type(dtype)` per line; Err when the metadata is unparsable;
    /// None when absent.
    pub features: Option<Result<Vec<String>, String>>,
    pub rows: usize,
    pub blocks: usize,
    pub styles: usize,
    /// Images per style: (min, mean, max).
    pub images_per_style: (usize, f64, usize),
    pub example_prompts: Vec<String>,
    pub decode: DecodeCheck,
}

/// Inspects every split under `path` (parquet dir, single file or image folder), decoding the
/// first `decode_check` rows of each (0 = all).
pub fn inspect(path: &Path, decode_check: usize) -> Result<InspectReport, DataError> {
    let mut splits = Vec::new();
    let mut kind = "parquet";
    for split in Dataset::splits(path)? {
        let ds = Dataset::open(path, &split)?;
        if ds.shards().is_empty() {
            kind = "image folder";
        }
        splits.push(inspect_split(&ds, decode_check)?);
    }
    Ok(InspectReport {
        root: path.to_path_buf(),
        kind,
        splits,
    })
}

fn inspect_split(ds: &Dataset, decode_check: usize) -> Result<SplitReport, DataError> {
    let mut files = Vec::new();
    for shard in ds.shards() {
        let bytes = std::fs::metadata(shard.path())
            .map_err(|e| DataError::io(shard.path(), e))?
            .len();
        let meta = shard.metadata();
        let mut codecs: Vec<String> = meta
            .row_groups()
            .iter()
            .flat_map(|rg| {
                rg.columns()
                    .iter()
                    .map(|c| codec_name(&c.compression().to_string()))
            })
            .collect();
        codecs.sort();
        codecs.dedup();
        files.push(FileReport {
            path: shard.path().to_path_buf(),
            bytes,
            codecs,
            row_groups: meta.num_row_groups(),
            rows: meta.file_metadata().num_rows().max(0) as u64,
            created_by: meta.file_metadata().created_by().map(str::to_string),
        });
    }
    let first = ds.shards().first();
    let arrow_schema = first.map_or_else(Vec::new, |s| {
        s.arrow_schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
            .collect()
    });
    // serde_json sorts keys; list features in column order, unknown names last.
    let column_rank = |line: &String| {
        let name = line.split(':').next().unwrap_or_default();
        first
            .and_then(|s| s.arrow_schema().index_of(name).ok())
            .unwrap_or(usize::MAX)
    };
    let features = first.and_then(|s| s.features_metadata()).map(|meta| {
        parse_features(meta).map(|f| {
            let mut lines = describe_features(&f);
            lines.sort_by_key(column_rank);
            lines
        })
    });

    let mut image_files = BTreeMap::new();
    if first.is_none() {
        for i in 0..ds.items.len() {
            let path = PathBuf::from(ds.locate(i));
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            let entry = image_files.entry(ext).or_insert((0, 0));
            *entry = (entry.0 + 1, entry.1 + size);
        }
    }

    let counts: Vec<usize> = ds.items_of_style().iter().map(Vec::len).collect();
    let images_per_style = match (counts.iter().min(), counts.iter().max()) {
        (Some(&min), Some(&max)) => (min, ds.items.len() as f64 / counts.len() as f64, max),
        _ => (0, 0.0, 0),
    };
    let mut example_prompts: Vec<String> = Vec::new();
    for it in ds.items.iter().filter(|it| !it.prompt.is_empty()) {
        if example_prompts.len() >= EXAMPLE_PROMPTS {
            break;
        }
        let short = shorten(&it.prompt);
        if !example_prompts.contains(&short) {
            example_prompts.push(short);
        }
    }
    Ok(SplitReport {
        name: ds.split.clone(),
        files,
        image_files,
        arrow_schema,
        features,
        rows: ds.items.len(),
        blocks: ds.num_blocks(),
        styles: ds.styles.len(),
        images_per_style,
        example_prompts,
        decode: decode_rows(ds, decode_check),
    })
}

/// Decodes the first `limit` rows (0 = all), one block in memory at a time.
fn decode_rows(ds: &Dataset, limit: usize) -> DecodeCheck {
    let limit = if limit == 0 {
        ds.items.len()
    } else {
        limit.min(ds.items.len())
    };
    let mut check = DecodeCheck::default();
    for row in ds.stream() {
        if check.checked >= limit {
            break;
        }
        let (item, bytes) = match row {
            Ok(row) => row,
            Err(block_error) => {
                check.failures.push(block_error.to_string());
                continue;
            }
        };
        check.checked += 1;
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) => {
                check.failures.push(e.to_string());
                continue;
            }
        };
        let at = ds.locate(item);
        match decode_rgb(&bytes, &at) {
            Ok(img) => {
                check.decoded += 1;
                *check.sizes.entry(img.dimensions()).or_default() += 1;
                let format = image::ImageReader::new(Cursor::new(&bytes))
                    .with_guessed_format()
                    .ok()
                    .and_then(|r| r.format())
                    .map_or("unknown".to_string(), |f| format!("{f:?}").to_lowercase());
                *check.formats.entry(format).or_default() += 1;
            }
            Err(e) => check.failures.push(e.to_string()),
        }
    }
    check
}

/// `ZSTD(ZstdLevel(3))` -> `zstd`, `SNAPPY` -> `snappy`.
fn codec_name(debug: &str) -> String {
    debug.split('(').next().unwrap_or(debug).to_lowercase()
}

fn shorten(prompt: &str) -> String {
    let line = prompt.lines().next().unwrap_or_default();
    if line.chars().count() > PROMPT_CHARS || line.len() < prompt.len() {
        format!("{}...", line.chars().take(PROMPT_CHARS).collect::<String>())
    } else {
        line.to_string()
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Writes `label` padded to the label column, then `value`.
fn line(f: &mut fmt::Formatter<'_>, label: &str, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "  {label:<18} {value}")
}

/// Continuation line aligned under the value column.
fn more(f: &mut fmt::Formatter<'_>, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "  {:<18} {value}", "")
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "split {}", self.name)?;
        for (i, file) in self.files.iter().enumerate() {
            let name = file.path.file_name().map_or_else(
                || file.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let value = format!(
                "{name}  {:>10}  {}  {} row groups  {} rows",
                human_bytes(file.bytes),
                file.codecs.join("+"),
                file.row_groups,
                file.rows
            );
            if i == 0 {
                line(f, "files", value)?
            } else {
                more(f, value)?
            }
        }
        if let Some(created_by) = self.files.first().and_then(|file| file.created_by.as_ref()) {
            line(f, "written by", created_by)?;
        }
        for (i, (ext, (n, bytes))) in self.image_files.iter().enumerate() {
            let value = format!("{n} .{ext} files, {}", human_bytes(*bytes));
            if i == 0 {
                line(f, "image files", value)?
            } else {
                more(f, value)?
            }
        }
        for (i, column) in self.arrow_schema.iter().enumerate() {
            if i == 0 {
                line(f, "arrow schema", column)?
            } else {
                more(f, column)?
            }
        }
        match &self.features {
            Some(Ok(features)) => {
                for (i, feature) in features.iter().enumerate() {
                    if i == 0 {
                        line(f, "HF features", feature)?
                    } else {
                        more(f, feature)?
                    }
                }
            }
            Some(Err(detail)) => line(f, "HF features", format!("unparsable: {detail}"))?,
            None => line(f, "HF features", "none")?,
        }
        line(
            f,
            "rows",
            format!("{} in {} blocks", self.rows, self.blocks),
        )?;
        let (min, mean, max) = self.images_per_style;
        line(f, "styles", self.styles)?;
        line(
            f,
            "images per style",
            format!("min {min}  mean {mean:.1}  max {max}"),
        )?;
        if self.example_prompts.is_empty() {
            line(f, "prompts", "none")?;
        }
        for (i, prompt) in self.example_prompts.iter().enumerate() {
            if i == 0 {
                line(f, "prompts", prompt)?
            } else {
                more(f, prompt)?
            }
        }
        let d = &self.decode;
        line(
            f,
            "decode check",
            format!(
                "{} of {} decoded, {} failed",
                d.decoded,
                d.checked,
                d.failures.len()
            ),
        )?;
        if !d.sizes.is_empty() {
            let sizes: Vec<String> = d
                .sizes
                .iter()
                .map(|((w, h), n)| format!("{w}x{h} ({n})"))
                .collect();
            more(f, format!("sizes: {}", sizes.join(", ")))?;
            let formats: Vec<String> = d
                .formats
                .iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            more(f, format!("formats: {}", formats.join(", ")))?;
        }
        for failure in &d.failures {
            more(f, format!("FAILED {failure}"))?;
        }
        Ok(())
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}, {} split(s))",
            self.root.display(),
            self.kind,
            self.splits.len()
        )?;
        for split in &self.splits {
            writeln!(f)?;
            write!(f, "{split}")?;
        }
        Ok(())
    }
}
