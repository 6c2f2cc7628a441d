//! Reads one Hugging Face-style parquet shard (convention in [`crate::hf`]) one row group
//! at a time, reading only the columns asked for.
//!
//! The footer is parsed once per shard ([`ArrowReaderMetadata::load`], offset index included
//! when present so row selections skip pages) and reused for every read through
//! `ParquetRecordBatchReaderBuilder::new_with_metadata`. Accepted column types, as
//! `datasets`/pyarrow/arrow-rs may write them:
//! - `image`: struct<bytes, path> (either child may be absent), or a plain binary column
//!   (bytes) or string column (paths); bytes as Binary/LargeBinary/BinaryView, paths as
//!   Utf8/LargeUtf8/Utf8View, relative to the shard's directory or absolute;
//! - `style_id`: any integer type (styles named by the decimal id) or a string type (styles
//!   named by the string); floats and anything else are a Schema error;
//! - `prompt` (string) and `content_id` (integer): optional.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use crate::error::DataError;
use crate::hf::{self, type_name};
use crate::parquet_columns::{
    column, column_names, integers, is_binary, is_integer, is_string, BinaryColumn, StringColumn,
};

/// Rows per arrow batch while reading; image batches stay small so one batch never nears
/// the 2 GiB limit of 32-bit binary offsets.
const READ_BATCH_ROWS: usize = 64;

/// A style as stored in the shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StyleValue {
    /// Integer `style_id`.
    Id(i64),
    /// String `style_id`: the style's name.
    Name(String),
}

/// The small columns of one row: everything the item index needs.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub style: StyleValue,
    /// Empty when the column is missing or the value null.
    pub prompt: String,
    /// None when the column is missing or the value null.
    pub content_id: Option<i64>,
}

/// Where the encoded image of a row lives inside the `image` column.
#[derive(Debug, Clone, Copy)]
enum ImageLayout {
    /// HF struct; child indices of `bytes` and `path` when present.
    Struct {
        bytes: Option<usize>,
        path: Option<usize>,
    },
    /// Plain binary column of encoded bytes.
    Bytes,
    /// Plain string column of paths.
    Path,
}

/// One opened shard: cached footer plus the resolved column layout.
#[derive(Debug, Clone)]
pub struct Shard {
    path: PathBuf,
    dir: PathBuf,
    meta: ArrowReaderMetadata,
    image_root: usize,
    image_layout: ImageLayout,
    style_root: usize,
    prompt_root: Option<usize>,
    content_root: Option<usize>,
    /// Row number (within the shard) of the first row of each row group.
    row_group_starts: Vec<u64>,
}

impl Shard {
    /// Opens `path`, parses its footer once and checks the column types (see module docs).
    pub fn open(path: &Path) -> Result<Shard, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let meta =
            ArrowReaderMetadata::load(&file, options).map_err(|e| DataError::parquet(path, e))?;
        let schema = meta.schema().clone();
        let schema_error = |column: &str, detail: String| DataError::Schema {
            file: path.to_path_buf(),
            column: column.to_string(),
            detail,
        };
        let root = |name: &str| schema.index_of(name).ok();
        let found = |name: &str| {
            format!(
                "has type {}",
                type_name(schema.field(root(name).unwrap_or(0)).data_type())
            )
        };

        let image_root = root(hf::IMAGE_COLUMN).ok_or_else(|| {
            schema_error(
                hf::IMAGE_COLUMN,
                format!("missing (columns present: {})", column_names(&schema)),
            )
        })?;
        let image_layout = match schema.field(image_root).data_type() {
            DataType::Struct(fields) => {
                let child = |name: &str| fields.iter().position(|f| f.name() == name);
                let (bytes, path_child) = (child("bytes"), child("path"));
                let bytes_ok = bytes.is_none_or(|i| is_binary(fields[i].data_type()));
                let path_ok = path_child.is_none_or(|i| is_string(fields[i].data_type()));
                if (bytes.is_none() && path_child.is_none()) || !bytes_ok || !path_ok {
                    return Err(schema_error(
                        hf::IMAGE_COLUMN,
                        format!(
                            "{}; expected struct<bytes: binary, path: string>",
                            found(hf::IMAGE_COLUMN)
                        ),
                    ));
                }
                ImageLayout::Struct {
                    bytes,
                    path: path_child,
                }
            }
            t if is_binary(t) => ImageLayout::Bytes,
            t if is_string(t) => ImageLayout::Path,
            _ => {
                return Err(schema_error(
                    hf::IMAGE_COLUMN,
                    format!(
                        "{}; expected struct<bytes: binary, path: string>",
                        found(hf::IMAGE_COLUMN)
                    ),
                ))
            }
        };

        let style_root = root(hf::STYLE_COLUMN).ok_or_else(|| {
            schema_error(
                hf::STYLE_COLUMN,
                format!("missing (columns present: {})", column_names(&schema)),
            )
        })?;
        let style_type = schema.field(style_root).data_type();
        if !is_integer(style_type) && !is_string(style_type) {
            return Err(schema_error(
                hf::STYLE_COLUMN,
                format!(
                    "{}; expected an integer (style ids) or a string (style names)",
                    found(hf::STYLE_COLUMN)
                ),
            ));
        }
        let prompt_root = root(hf::PROMPT_COLUMN);
        if prompt_root.is_some_and(|i| !is_string(schema.field(i).data_type())) {
            return Err(schema_error(
                hf::PROMPT_COLUMN,
                format!("{}; expected a string", found(hf::PROMPT_COLUMN)),
            ));
        }
        let content_root = root(hf::CONTENT_COLUMN);
        if content_root.is_some_and(|i| !is_integer(schema.field(i).data_type())) {
            return Err(schema_error(
                hf::CONTENT_COLUMN,
                format!("{}; expected an integer", found(hf::CONTENT_COLUMN)),
            ));
        }

        let mut row_group_starts = Vec::with_capacity(meta.metadata().num_row_groups());
        let mut next = 0u64;
        for rg in meta.metadata().row_groups() {
            row_group_starts.push(next);
            next += rg.num_rows().max(0) as u64;
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Shard {
            path: path.to_path_buf(),
            dir,
            meta,
            image_root,
            image_layout,
            style_root,
            prompt_root,
            content_root,
            row_group_starts,
        })
    }

    /// The shard's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The arrow schema (from the embedded `ARROW:schema` when present).
    pub fn arrow_schema(&self) -> &SchemaRef {
        self.meta.schema()
    }

    /// The parsed footer.
    pub fn metadata(&self) -> &ParquetMetaData {
        self.meta.metadata()
    }

    /// The raw `huggingface` key-value metadata, if any.
    pub fn features_metadata(&self) -> Option<&str> {
        let kv = self.meta.metadata().file_metadata().key_value_metadata()?;
        kv.iter()
            .find(|k| k.key == hf::FEATURES_KEY)
            .and_then(|k| k.value.as_deref())
    }

    /// Whether `style_id` holds strings (names) rather than integers.
    pub fn styles_are_names(&self) -> bool {
        is_string(self.arrow_schema().field(self.style_root).data_type())
    }

    pub fn num_row_groups(&self) -> usize {
        self.row_group_starts.len()
    }

    /// Rows in row group `rg` (0 when out of range).
    pub fn row_group_rows(&self, rg: usize) -> usize {
        self.meta
            .metadata()
            .row_groups()
            .get(rg)
            .map_or(0, |g| g.num_rows().max(0) as usize)
    }

    /// Row number within the shard of the first row of `rg`.
    pub fn row_group_start(&self, rg: usize) -> u64 {
        self.row_group_starts.get(rg).copied().unwrap_or(0)
    }

    /// `"FILE row N column C"`, N counted within the shard.
    pub fn location(&self, row: u64, column: &str) -> String {
        format!("{} row {row} column {column}", self.path.display())
    }

    /// Reads `style_id`, `prompt`, `content_id` of row group `rg` (no image bytes).
    pub fn read_index(&self, rg: usize) -> Result<Vec<IndexRow>, DataError> {
        let roots: Vec<usize> = [Some(self.style_root), self.prompt_root, self.content_root]
            .into_iter()
            .flatten()
            .collect();
        let mut out = Vec::with_capacity(self.row_group_rows(rg));
        let mut row = self.row_group_start(rg);
        for batch in self.batches(rg, &roots, None)? {
            let batch = batch?;
            let styles = column(&batch, hf::STYLE_COLUMN);
            let style_ids = styles
                .filter(|c| is_integer(c.data_type()))
                .map(integers)
                .transpose();
            let style_ids = style_ids.map_err(|detail| DataError::BadRow {
                at: self.location(row, hf::STYLE_COLUMN),
                detail,
            })?;
            let style_names = styles.and_then(StringColumn::new);
            let prompts = column(&batch, hf::PROMPT_COLUMN).and_then(StringColumn::new);
            let contents = column(&batch, hf::CONTENT_COLUMN).map(integers).transpose();
            let contents = contents.map_err(|detail| DataError::BadRow {
                at: self.location(row, hf::CONTENT_COLUMN),
                detail,
            })?;
            for i in 0..batch.num_rows() {
                let style = match (&style_ids, &style_names) {
                    (Some(ids), _) => ids[i].map(StyleValue::Id),
                    (None, Some(names)) => names.get(i).map(|s| StyleValue::Name(s.to_string())),
                    (None, None) => None,
                };
                let Some(style) = style else {
                    return Err(DataError::BadRow {
                        at: self.location(row, hf::STYLE_COLUMN),
                        detail: "style_id is null".into(),
                    });
                };
                let prompt = prompts
                    .as_ref()
                    .and_then(|p| p.get(i))
                    .unwrap_or_default()
                    .to_string();
                let content_id = contents.as_ref().and_then(|c| c[i]);
                out.push(IndexRow {
                    style,
                    prompt,
                    content_id,
                });
                row += 1;
            }
        }
        Ok(out)
    }

    /// Encoded image bytes of row group `rg`: every row, or only `rows` (offsets within the
    /// row group, sorted ascending, no duplicates). Reads only the `image` column. The outer
    /// error is for the row group as a whole; the inner per row (null bytes and unreadable
    /// path). Results are in row order.
    pub fn read_images(
        &self,
        rg: usize,
        rows: Option<&[usize]>,
    ) -> Result<Vec<Result<Vec<u8>, DataError>>, DataError> {
        let group_rows = self.row_group_rows(rg);
        let selection = match rows {
            Some(rows) => {
                if let Some(&bad) = rows.iter().find(|&&r| r >= group_rows) {
                    return Err(DataError::BadRow {
                        at: format!("{} row group {rg}", self.path.display()),
                        detail: format!("row {bad} out of range (row group has {group_rows} rows)"),
                    });
                }
                Some(RowSelection::from_consecutive_ranges(
                    rows.iter().map(|&r| r..r + 1),
                    group_rows,
                ))
            }
            None => None,
        };
        let shard_rows: Vec<u64> = match rows {
            Some(rows) => rows
                .iter()
                .map(|&r| self.row_group_start(rg) + r as u64)
                .collect(),
            None => (0..group_rows as u64)
                .map(|r| self.row_group_start(rg) + r)
                .collect(),
        };
        let mut out = Vec::with_capacity(shard_rows.len());
        for batch in self.batches(rg, &[self.image_root], selection)? {
            let batch = batch?;
            let Some(image) = column(&batch, hf::IMAGE_COLUMN) else {
                return Err(DataError::parquet(
                    &self.path,
                    "image column missing from the read batch",
                ));
            };
            let (bytes, paths) = match self.image_layout {
                ImageLayout::Struct { bytes, path } => {
                    let image = image.as_struct();
                    (
                        bytes.and_then(|i| BinaryColumn::new(image.column(i))),
                        path.and_then(|i| StringColumn::new(image.column(i))),
                    )
                }
                ImageLayout::Bytes => (BinaryColumn::new(image), None),
                ImageLayout::Path => (None, StringColumn::new(image)),
            };
            for i in 0..batch.num_rows() {
                let row = shard_rows.get(out.len()).copied().unwrap_or_default();
                // Null struct => both children null.
                let valid = image.is_valid(i);
                let embedded = bytes.as_ref().filter(|_| valid).and_then(|b| b.get(i));
                let path = paths.as_ref().filter(|_| valid).and_then(|p| p.get(i));
                out.push(match (embedded, path) {
                    (Some(b), _) => Ok(b.to_vec()),
                    (None, Some(p)) => {
                        let resolved = self.dir.join(p);
                        std::fs::read(&resolved).map_err(|e| DataError::BadRow {
                            at: self.location(row, hf::IMAGE_COLUMN),
                            detail: format!(
                                "image bytes are null and path {} cannot be read: {e}",
                                resolved.display()
                            ),
                        })
                    }
                    (None, None) => Err(DataError::BadRow {
                        at: self.location(row, hf::IMAGE_COLUMN),
                        detail: "image bytes and path are both null".into(),
                    }),
                });
            }
        }
        Ok(out)
    }

    /// Batches of row group `rg`, projected to the root columns `roots`.
    fn batches(
        &self,
        rg: usize,
        roots: &[usize],
        selection: Option<RowSelection>,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, DataError>> + '_, DataError> {
        if rg >= self.num_row_groups() {
            return Err(DataError::parquet(
                &self.path,
                format!(
                    "row group {rg} out of range (file has {})",
                    self.num_row_groups()
                ),
            ));
        }
        let file = File::open(&self.path).map_err(|e| DataError::io(&self.path, e))?;
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), roots.iter().copied());
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                .with_row_groups(vec![rg])
                .with_projection(mask)
                .with_batch_size(READ_BATCH_ROWS);
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let reader = builder
            .build()
            .map_err(|e| DataError::parquet(&self.path, format!("row group {rg}: {e}")))?;
        Ok(reader.map(move |batch| {
            batch.map_err(|e| DataError::parquet(&self.path, format!("row group {rg}: {e}")))
        }))
    }
}
