//! The Hugging Face `datasets` parquet convention for cotyle's image datasets.
//!
//! Follows what `datasets` (5.x, checked with `scripts/make_hf_fixture.py`) writes for
//! `Features({"image": Image(), "style_id": Value("int64"), "prompt": Value("string"),
//! "content_id": Value("int64")})`:
//! - columns `image` = struct<bytes: binary, path: string> (encoded PNG/JPEG/WebP, or null
//!   bytes and a path relative to the shard), `style_id` int64, `prompt` string,
//!   `content_id` int64, all nullable;
//! - file key-value metadata `huggingface` = `{"info": {"features": {...}}}`, serialised by
//!   Python's `json.dumps` (", " and ": " separators, keys in column order);
//! - shards named `SPLIT-00003-of-00008.parquet` in `DIR/` or `DIR/data/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema};

use crate::error::DataError;

/// Column holding the encoded image struct.
pub const IMAGE_COLUMN: &str = "image";
/// Column holding the style: integer id or string name.
pub const STYLE_COLUMN: &str = "style_id";
/// Optional column holding the text prompt.
pub const PROMPT_COLUMN: &str = "prompt";
/// Optional column holding the content id (which subject the image shows).
pub const CONTENT_COLUMN: &str = "content_id";
/// Parquet key-value metadata key under which `datasets` stores its features.
pub const FEATURES_KEY: &str = "huggingface";

/// The `huggingface` metadata value, byte for byte as `datasets` writes it for our four
/// columns (Python `json.dumps` formatting, keys in column order). A literal rather than
/// `serde_json` output because serde_json (without `preserve_order`) sorts keys.
pub const FEATURES_METADATA: &str = concat!(
    r#"{"info": {"features": {"image": {"_type": "Image"}, "#,
    r#""style_id": {"dtype": "int64", "_type": "Value"}, "#,
    r#""prompt": {"dtype": "string", "_type": "Value"}, "#,
    r#""content_id": {"dtype": "int64", "_type": "Value"}}}}"#
);

/// The `huggingface` metadata value for our 4 columns, as JSON.
pub fn image_dataset_features_json() -> serde_json::Value {
    // FEATURES_METADATA is a constant checked by the unit test below; parsing cannot fail.
    serde_json::from_str(FEATURES_METADATA).unwrap_or(serde_json::Value::Null)
}

/// The arrow schema `datasets` uses for our columns (all fields nullable, as pyarrow makes
/// them), with the `huggingface` metadata attached.
pub fn image_dataset_schema() -> Arc<Schema> {
    let image_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let fields = vec![
        Field::new(IMAGE_COLUMN, DataType::Struct(image_fields), true),
        Field::new(STYLE_COLUMN, DataType::Int64, true),
        Field::new(PROMPT_COLUMN, DataType::Utf8, true),
        Field::new(CONTENT_COLUMN, DataType::Int64, true),
    ];
    let metadata = HashMap::from([(FEATURES_KEY.to_string(), FEATURES_METADATA.to_string())]);
    Arc::new(Schema::new(fields).with_metadata(metadata))
}

/// Parses a `huggingface` metadata value and returns its `info.features` object.
/// Expects the JSON `datasets` writes; errors say what is wrong (the caller adds the file).
pub fn parse_features(meta: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(meta).map_err(|e| format!("invalid JSON: {e}"))?;
    match value.get("info").and_then(|info| info.get("features")) {
        Some(features) if features.is_object() => Ok(features.clone()),
        Some(_) => Err("`info.features` is not an object".into()),
        None => Err("no `info.features` entry".into()),
    }
}

/// One line per feature, `name: Image` / `name: Value(int64)` / `name: ClassLabel(3 names)`,
/// for `inspect`. Expects the object returned by [`parse_features`].
pub fn describe_features(features: &serde_json::Value) -> Vec<String> {
    let Some(map) = features.as_object() else {
        return vec![features.to_string()];
    };
    map.iter()
        .map(|(name, feature)| {
            let kind = feature.get("_type").and_then(|t| t.as_str()).unwrap_or("?");
            let detail = match (feature.get("dtype"), feature.get("names")) {
                (Some(dtype), _) => format!("({})", dtype.as_str().unwrap_or("?")),
                (None, Some(names)) => {
                    format!("({} names)", names.as_array().map_or(0, |n| n.len()))
                }
                _ => String::new(),
            };
            format!("{name}: {kind}{detail}")
        })
        .collect()
}

/// `"train-00003-of-00008.parquet"` -> `"train"`: the split is the file-name prefix before
/// the first `-` (HF split names cannot contain `-`), or the stem when there is none.
pub fn split_of_file_name(file_name: &str) -> &str {
    let stem = file_name.strip_suffix(".parquet").unwrap_or(file_name);
    stem.split('-').next().unwrap_or(stem)
}

/// The parquet shards of a dataset, by split (sorted by file name within a split).
pub type ShardsBySplit = BTreeMap<String, Vec<PathBuf>>;

/// Finds the parquet shards under `path`: a single `.parquet` file (its own split), or a
/// directory holding `*.parquet` files directly, else in `data/`. Returns an empty map for a
/// directory without shards (the caller may treat it as an image folder). Files still being
/// written (`*.parquet.tmp`) and hidden files are ignored.
pub fn find_shards(path: &Path) -> Result<ShardsBySplit, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    let mut by_split = ShardsBySplit::new();
    if meta.is_file() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        by_split.insert(
            split_of_file_name(name).to_string(),
            vec![path.to_path_buf()],
        );
        return Ok(by_split);
    }
    for dir in [path.to_path_buf(), path.join("data")] {
        if !dir.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::io(&dir, e))?;
            let file = entry.path();
            let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".parquet") || !file.is_file() {
                continue;
            }
            by_split
                .entry(split_of_file_name(name).to_string())
                .or_default()
                .push(file);
        }
        if !by_split.is_empty() {
            break;
        }
    }
    for files in by_split.values_mut() {
        files.sort();
    }
    Ok(by_split)
}

/// pyarrow-style name of an arrow type (`int64`, `string`, `large_binary`,
/// `struct<bytes: binary, path: string>`), for schema dumps and error messages.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 => "string".into(),
        DataType::LargeUtf8 => "large_string".into(),
        DataType::Utf8View => "string_view".into(),
        DataType::Binary => "binary".into(),
        DataType::LargeBinary => "large_binary".into(),
        DataType::BinaryView => "binary_view".into(),
        DataType::Boolean => "bool".into(),
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect();
            format!("struct<{}>", inner.join(", "))
        }
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Dictionary(key, value) => {
            format!(
                "dictionary<values={}, indices={}>",
                type_name(value),
                type_name(key)
            )
        }
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_metadata_is_valid_json_with_our_columns() {
        let features = parse_features(FEATURES_METADATA).expect("valid");
        assert_eq!(features["image"]["_type"], "Image");
        assert_eq!(features["style_id"]["dtype"], "int64");
        assert_eq!(image_dataset_features_json()["info"]["features"], features);
    }

    #[test]
    fn split_names_come_from_file_prefixes() {
        assert_eq!(split_of_file_name("train-00003-of-00008.parquet"), "train");
        assert_eq!(split_of_file_name("test.parquet"), "test");
    }

    #[test]
    fn type_names_follow_pyarrow() {
        let schema = image_dataset_schema();
        assert_eq!(
            type_name(schema.field(0).data_type()),
            "struct<bytes: binary, path: string>"
        );
        assert_eq!(type_name(&DataType::Int64), "int64");
    }
}
