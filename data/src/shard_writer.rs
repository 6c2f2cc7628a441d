//! Writes one Hugging Face-style parquet shard of encoded images (the convention in
//! [`crate::hf`]): `image` struct<bytes, path>, `style_id`, `prompt`, `content_id`, plus the
//! `huggingface` features metadata, so `datasets.load_dataset("parquet", ...)` reads our
//! output as an `Image()` dataset (checked by `scripts/check_hf_compat.py`).
//!
//! Rows are buffered into row groups of `rows_per_group` (one row group = one loader block),
//! pages are kept small and the page index is written so a reader's row selection can skip
//! pages of image bytes. Writes are atomic: `<name>.tmp`, synced, renamed on `finish`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

pub use parquet::basic::{Compression, ZstdLevel};

use crate::atomic;
use crate::error::DataError;
use crate::hf;

/// One row of a shard. `png` holds encoded image bytes (PNG, JPEG or WebP); `path` is the
/// informational file name `datasets` keeps next to the bytes (may be empty).
#[derive(Debug, Clone, Copy)]
pub struct ShardRow<'a> {
    pub png: &'a [u8],
    pub path: &'a str,
    pub style_id: i64,
    pub prompt: &'a str,
    pub content_id: i64,
}

/// How a shard is written.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Rows per parquet row group (= per loader block). Default 256.
    pub rows_per_group: usize,
    /// Page compression. Default snappy (what pyarrow uses; images are already compressed,
    /// so a heavier codec mostly helps the prompt column).
    pub compression: Compression,
    /// Rows per data page of the image column; small pages let row selections skip images.
    pub rows_per_page: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            rows_per_group: 256,
            compression: Compression::SNAPPY,
            rows_per_page: 8,
        }
    }
}

/// `shard_file_name("train", 3, 8)` = `"train-00003-of-00008.parquet"` (HF naming).
pub fn shard_file_name(split: &str, index: usize, count: usize) -> String {
    format!("{split}-{index:05}-of-{count:05}.parquet")
}

/// The rows of the row group being filled, as arrow builders.
struct PendingGroup {
    bytes: BinaryBuilder,
    paths: StringBuilder,
    styles: Int64Builder,
    prompts: StringBuilder,
    contents: Int64Builder,
    rows: usize,
}

impl PendingGroup {
    fn new() -> Self {
        PendingGroup {
            bytes: BinaryBuilder::new(),
            paths: StringBuilder::new(),
            styles: Int64Builder::new(),
            prompts: StringBuilder::new(),
            contents: Int64Builder::new(),
            rows: 0,
        }
    }

    /// Drains the builders into one batch with `schema`.
    fn take_batch(
        &mut self,
        schema: &Arc<Schema>,
    ) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let DataType::Struct(image_fields) = schema.field(0).data_type().clone() else {
            return Err(arrow_schema::ArrowError::SchemaError(
                "image is not a struct".into(),
            ));
        };
        let image = StructArray::try_new(
            image_fields,
            vec![
                Arc::new(self.bytes.finish()) as ArrayRef,
                Arc::new(self.paths.finish()),
            ],
            None,
        )?;
        self.rows = 0;
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(image),
                Arc::new(self.styles.finish()),
                Arc::new(self.prompts.finish()),
                Arc::new(self.contents.finish()),
            ],
        )
    }
}

/// Writes one shard; see the module docs. Dropping it without [`ShardWriter::finish`]
/// removes the temporary file, so a crash never leaves a half shard under the final name.
pub struct ShardWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    schema: Arc<Schema>,
    writer: Option<ArrowWriter<File>>,
    pending: PendingGroup,
    rows_per_group: usize,
    rows_written: u64,
}

impl ShardWriter {
    /// Starts writing the shard that will appear at `path` (its directory must exist).
    pub fn create(path: &Path, opts: WriterOptions) -> Result<Self, DataError> {
        let rows_per_group = opts.rows_per_group.max(1);
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp_path = path.with_file_name(tmp_name);
        let file = File::create(&tmp_path).map_err(|e| DataError::io(&tmp_path, e))?;
        let image_bytes = ColumnPath::new(vec![hf::IMAGE_COLUMN.into(), "bytes".into()]);
        let props = WriterProperties::builder()
            .set_compression(opts.compression)
            .set_max_row_group_row_count(Some(rows_per_group))
            // Page-level statistics => column index + offset index (the page index).
            .set_statistics_enabled(EnabledStatistics::Page)
            // Page size limits are checked once per write batch: keep batches small so an
            // image page holds a handful of images, not the whole row group.
            .set_write_batch_size(opts.rows_per_page.max(1))
            .set_data_page_row_count_limit(opts.rows_per_page.max(1))
            // A dictionary of unique encoded images only costs time and memory.
            .set_column_dictionary_enabled(image_bytes, false)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                hf::FEATURES_KEY.to_string(),
                hf::FEATURES_METADATA.to_string(),
            )]))
            .build();
        let schema = hf::image_dataset_schema();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| DataError::parquet(&tmp_path, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp_path,
            schema,
            writer: Some(writer),
            pending: PendingGroup::new(),
            rows_per_group,
            rows_written: 0,
        })
    }

    /// Appends one row; a full row group is encoded and written out.
    pub fn write(&mut self, row: ShardRow) -> Result<(), DataError> {
        let p = &mut self.pending;
        p.bytes.append_value(row.png);
        p.paths.append_value(row.path);
        p.styles.append_value(row.style_id);
        p.prompts.append_value(row.prompt);
        p.contents.append_value(row.content_id);
        p.rows += 1;
        if p.rows >= self.rows_per_group {
            self.flush_group()?;
        }
        Ok(())
    }

    /// Writes the buffered rows as one row group.
    fn flush_group(&mut self) -> Result<(), DataError> {
        if self.pending.rows == 0 {
            return Ok(());
        }
        let rows = self.pending.rows as u64;
        let batch = self
            .pending
            .take_batch(&self.schema)
            .map_err(|e| DataError::parquet(&self.tmp_path, e))?;
        let Some(writer) = self.writer.as_mut() else {
            return Err(DataError::parquet(&self.tmp_path, "writer already closed"));
        };
        writer
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.tmp_path, e))?;
        // Close the row group here so groups are exactly `rows_per_group` rows.
        writer
            .flush()
            .map_err(|e| DataError::parquet(&self.tmp_path, e))?;
        self.rows_written += rows;
        Ok(())
    }

    /// Writes the last row group and the footer, syncs, and renames `<name>.tmp` to the
    /// final name. Returns the number of rows written.
    pub fn finish(mut self) -> Result<u64, DataError> {
        self.flush_group()?;
        let Some(writer) = self.writer.take() else {
            return Err(DataError::parquet(&self.tmp_path, "writer already closed"));
        };
        let closed = writer
            .into_inner()
            .map_err(|e| DataError::parquet(&self.tmp_path, e))
            .and_then(|file| atomic::sync_file(&file, &self.tmp_path));
        if let Err(e) = closed {
            let _ = std::fs::remove_file(&self.tmp_path);
            return Err(e);
        }
        atomic::publish(&self.tmp_path, &self.path)?;
        Ok(self.rows_written)
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // Still holding the writer means `finish` did not complete: remove the partial file.
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
