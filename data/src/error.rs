//! Errors of the dataset layer (DESIGN.md, "Rules of the house": errors name the file, row,
//! column or key at fault; user input never panics).
//!
//! Every variant carries WHERE the problem is: a path, a shard file plus column, or an `at`
//! string such as `"DIR/train-00000-of-00002.parquet row 17 column image"` (built by
//! [`crate::Dataset::locate`] and the readers), so a message read in a training log points at
//! the exact row to fix.

use std::path::PathBuf;

/// Everything that can go wrong while finding, indexing, reading or decoding a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The path given by the user does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },

    /// Nothing to train on: no shards, no images, a missing split, or zero rows.
    #[error("{}: empty dataset: {detail}", path.display())]
    Empty { path: PathBuf, detail: String },

    /// A column is missing or has a type we cannot read.
    #[error("{}: column `{column}`: {detail}", file.display())]
    Schema {
        file: PathBuf,
        column: String,
        detail: String,
    },

    /// The parquet file itself is unreadable (truncated, corrupt footer or pages).
    #[error("{}: unreadable parquet: {detail}", file.display())]
    Parquet { file: PathBuf, detail: String },

    /// An operating-system error on a path (permissions, disk, a file that vanished). The
    /// field is not named `source`: the message already shows the cause, and an error chain
    /// printed with `{:#}` would show it twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// One row cannot be used, e.g. image bytes and path both null, or a null style.
    #[error("{at}: {detail}")]
    BadRow { at: String, detail: String },

    /// Image bytes that no codec accepts.
    #[error("{at}: cannot decode image: {detail}")]
    Decode { at: String, detail: String },

    /// A style with a single image cannot make a positive pair (paper §3.1: pairs of two
    /// different images of one style).
    #[error(
        "{}: style `{style}` has only one image; paired sampling needs at least 2 images per style",
        path.display()
    )]
    SingleImageStyle { path: PathBuf, style: String },

    /// An image folder laid out in a way we do not understand (e.g. images directly in ROOT
    /// with no style directory).
    #[error("{}: image folder layout: {detail}", path.display())]
    Layout { path: PathBuf, detail: String },

    /// A metadata key whose value we cannot parse (e.g. the `huggingface` JSON).
    #[error("{}: metadata key `{key}`: {detail}", file.display())]
    Metadata {
        file: PathBuf,
        key: String,
        detail: String,
    },

    /// A set of shards that does not fit together: a `k-of-n` shard missing, shards
    /// disagreeing on `n`, a file not named as a shard, or a split name unusable in shard
    /// names.
    #[error("{}: {detail}", path.display())]
    Shards { path: PathBuf, detail: String },

    /// A JSON file we wrote for a later stage (e.g. `freq.json`) that does not parse or whose
    /// values disagree with each other; `detail` names the key at fault.
    #[error("{}: {detail}", file.display())]
    Json { file: PathBuf, detail: String },
}

/// Clone so one cached block's per-row errors can be handed to several readers (the loader
/// shares blocks in an `Arc`). `std::io::Error` is not `Clone`: the copy keeps its kind and
/// message, not its inner source chain.
impl Clone for DataError {
    fn clone(&self) -> Self {
        match self {
            DataError::NotFound { path } => DataError::NotFound { path: path.clone() },
            DataError::Empty { path, detail } => DataError::Empty {
                path: path.clone(),
                detail: detail.clone(),
            },
            DataError::Schema {
                file,
                column,
                detail,
            } => DataError::Schema {
                file: file.clone(),
                column: column.clone(),
                detail: detail.clone(),
            },
            DataError::Parquet { file, detail } => DataError::Parquet {
                file: file.clone(),
                detail: detail.clone(),
            },
            DataError::Io { path, error } => DataError::Io {
                path: path.clone(),
                error: std::io::Error::new(error.kind(), error.to_string()),
            },
            DataError::BadRow { at, detail } => DataError::BadRow {
                at: at.clone(),
                detail: detail.clone(),
            },
            DataError::Decode { at, detail } => DataError::Decode {
                at: at.clone(),
                detail: detail.clone(),
            },
            DataError::SingleImageStyle { path, style } => DataError::SingleImageStyle {
                path: path.clone(),
                style: style.clone(),
            },
            DataError::Layout { path, detail } => DataError::Layout {
                path: path.clone(),
                detail: detail.clone(),
            },
            DataError::Metadata { file, key, detail } => DataError::Metadata {
                file: file.clone(),
                key: key.clone(),
                detail: detail.clone(),
            },
            DataError::Shards { path, detail } => DataError::Shards {
                path: path.clone(),
                detail: detail.clone(),
            },
            DataError::Json { file, detail } => DataError::Json {
                file: file.clone(),
                detail: detail.clone(),
            },
        }
    }
}

impl DataError {
    /// An [`DataError::Io`], or [`DataError::NotFound`] when the OS says the path is absent,
    /// so a typo in a path reads as such.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DataError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound { path }
        } else {
            DataError::Io {
                path,
                error: source,
            }
        }
    }

    /// A [`DataError::Parquet`] from any parquet/arrow error on `file`.
    pub fn parquet(file: impl Into<PathBuf>, err: impl std::fmt::Display) -> DataError {
        DataError::Parquet {
            file: file.into(),
            detail: err.to_string(),
        }
    }
}
