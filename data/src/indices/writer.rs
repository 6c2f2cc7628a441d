//! Writes the index-sequence shards of one split (format in [`crate::indices`]): rows are
//! checked as they arrive (length = `tokens`, every index < `codes`), streamed into shards of
//! `rows_per_shard` rows under hidden temporary names, and published on
//! [`IndexShardWriter::finish`] as `{split}-{k:05}-of-{n:05}.parquet`, once `n` is known.
//! Publication is atomic per file (see [`crate::atomic`]); shards of the same split left by
//! an earlier run are removed afterwards, so a re-run never mixes with old output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, UInt16Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::Schema;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::files::{check_split, parse_shard_name};
use super::{
    item_field, schema, CODES_KEY, DEFAULT_ROWS_PER_SHARD, INDICES_DIR, MADE_BY_KEY, MAX_CODES,
    TOKENS_KEY,
};
use crate::atomic;
use crate::error::DataError;
use crate::shard_writer::shard_file_name;

/// Rows buffered before they are handed to the parquet writer as one arrow batch.
const ROWS_PER_BATCH: usize = 1024;

/// The shard being filled: its temporary file and the rows not yet handed to the writer.
struct OpenShard {
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    image_ids: StringBuilder,
    styles: StringBuilder,
    indices: ListBuilder<UInt16Builder>,
    buffered: usize,
    rows: usize,
}

/// Writes one split's index shards into `DIR/indices/`; see the module docs. Dropping it
/// without [`IndexShardWriter::finish`] removes every temporary file, so a crash or an error
/// never leaves a partial split under the final names.
pub struct IndexShardWriter {
    dir: PathBuf,
    split: String,
    made_by: String,
    codes: u32,
    tokens: usize,
    rows_per_shard: usize,
    schema: Arc<Schema>,
    open: Option<OpenShard>,
    /// Complete, synced temporary shards, in shard order.
    closed: Vec<PathBuf>,
}

impl IndexShardWriter {
    /// Starts the `split` of the run folder `dir` (creates `dir/indices/`). `made_by` is
    /// stored as JSON in every shard (checkpoint path, step, config hash...); `codes` is the
    /// codebook size (1..=65536, indices are uint16) and `tokens` the sequence length.
    pub fn create(
        dir: &Path,
        split: &str,
        made_by: serde_json::Value,
        codes: u32,
        tokens: usize,
    ) -> Result<Self, DataError> {
        let out = dir.join(INDICES_DIR);
        check_split(&out, split)?;
        let bad_key = |key: &str, detail: String| DataError::Metadata {
            file: out.clone(),
            key: key.to_string(),
            detail,
        };
        if codes == 0 || codes > MAX_CODES {
            return Err(bad_key(
                CODES_KEY,
                format!("codebook size {codes}: must be 1..={MAX_CODES} (indices are uint16)"),
            ));
        }
        if tokens == 0 {
            return Err(bad_key(
                TOKENS_KEY,
                "sequence length 0: must be >= 1".into(),
            ));
        }
        let made_by = serde_json::to_string(&made_by)
            .map_err(|e| bad_key(MADE_BY_KEY, format!("cannot serialise: {e}")))?;
        std::fs::create_dir_all(&out).map_err(|e| DataError::io(&out, e))?;
        Ok(IndexShardWriter {
            dir: out,
            split: split.to_string(),
            made_by,
            codes,
            tokens,
            rows_per_shard: DEFAULT_ROWS_PER_SHARD,
            schema: schema(),
            open: None,
            closed: Vec::new(),
        })
    }

    /// Rows per shard file (at least 1; default [`DEFAULT_ROWS_PER_SHARD`]).
    pub fn with_rows_per_shard(mut self, rows: usize) -> Self {
        self.rows_per_shard = rows.max(1);
        self
    }

    /// Appends one image's sequence. Refused, with nothing written, when its length is not
    /// `tokens` or an index is `>= codes`; the writer stays usable.
    pub fn push(&mut self, image_id: &str, style: &str, indices: &[u16]) -> Result<(), DataError> {
        let bad = |detail: String| DataError::BadRow {
            at: format!(
                "{}: split `{}` image `{image_id}`",
                self.dir.display(),
                self.split
            ),
            detail,
        };
        if indices.len() != self.tokens {
            return Err(bad(format!(
                "{} indices, expected {} ({TOKENS_KEY})",
                indices.len(),
                self.tokens
            )));
        }
        if let Some((pos, &index)) = indices
            .iter()
            .enumerate()
            .find(|&(_, &v)| u32::from(v) >= self.codes)
        {
            return Err(bad(format!(
                "index {index} at position {pos} is outside the codebook of {} codes",
                self.codes
            )));
        }
        let shard = match self.open.take() {
            Some(shard) => shard,
            None => self.start_shard()?,
        };
        let shard = self.open.insert(shard);
        shard.image_ids.append_value(image_id);
        shard.styles.append_value(style);
        shard.indices.values().append_slice(indices);
        shard.indices.append(true);
        shard.buffered += 1;
        shard.rows += 1;
        if shard.buffered >= ROWS_PER_BATCH {
            write_buffered(shard, &self.schema)?;
        }
        if shard.rows >= self.rows_per_shard {
            self.close_shard()?;
        }
        Ok(())
    }

    /// Closes the last shard, renames every shard to `{split}-{k:05}-of-{n:05}.parquet`,
    /// removes shards of this split left by an earlier run, and returns the new files in
    /// order. A split with no rows is an error (the next stage could not train on it).
    pub fn finish(mut self) -> Result<Vec<PathBuf>, DataError> {
        self.close_shard()?;
        if self.closed.is_empty() {
            return Err(DataError::Empty {
                path: self.dir.clone(),
                detail: format!("no index sequences were pushed for split `{}`", self.split),
            });
        }
        // Taken out of `self`, so Drop no longer removes them: published files stay.
        let tmps = std::mem::take(&mut self.closed);
        let count = tmps.len();
        let mut files = Vec::with_capacity(count);
        for (k, tmp) in tmps.iter().enumerate() {
            let file = self.dir.join(shard_file_name(&self.split, k, count));
            if let Err(e) = atomic::publish(tmp, &file) {
                for rest in &tmps[k + 1..] {
                    let _ = std::fs::remove_file(rest);
                }
                return Err(e);
            }
            files.push(file);
        }
        self.remove_stale(&files)?;
        Ok(files)
    }

    /// Opens the temporary file of the next shard.
    fn start_shard(&self) -> Result<OpenShard, DataError> {
        let k = self.closed.len();
        let tmp = atomic::tmp_sibling(&self.dir.join(format!("{}-{k:05}.parquet", self.split)));
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(MADE_BY_KEY.to_string(), self.made_by.clone()),
                KeyValue::new(CODES_KEY.to_string(), self.codes.to_string()),
                KeyValue::new(TOKENS_KEY.to_string(), self.tokens.to_string()),
            ]))
            .build();
        let writer = match ArrowWriter::try_new(file, self.schema.clone(), Some(props)) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(DataError::parquet(&tmp, e));
            }
        };
        Ok(OpenShard {
            tmp,
            writer,
            image_ids: StringBuilder::new(),
            styles: StringBuilder::new(),
            indices: ListBuilder::new(UInt16Builder::new()).with_field(item_field()),
            buffered: 0,
            rows: 0,
        })
    }

    /// Writes the open shard's footer and syncs it; it joins `closed` until `finish`.
    fn close_shard(&mut self) -> Result<(), DataError> {
        let Some(mut shard) = self.open.take() else {
            return Ok(());
        };
        let closed = write_buffered(&mut shard, &self.schema).and_then(|()| {
            let file = shard
                .writer
                .into_inner()
                .map_err(|e| DataError::parquet(&shard.tmp, e))?;
            atomic::sync_file(&file, &shard.tmp)
        });
        match closed {
            Ok(()) => {
                self.closed.push(shard.tmp);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&shard.tmp);
                Err(e)
            }
        }
    }

    /// Removes `{split}-*-of-*.parquet` files in the folder that are not among `keep`.
    fn remove_stale(&self, keep: &[PathBuf]) -> Result<(), DataError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| DataError::io(&self.dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| DataError::io(&self.dir, e))?.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_shard_name)
                .is_some_and(|(split, _, _)| split == self.split);
            if ours && !keep.contains(&path) {
                std::fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
            }
        }
        Ok(())
    }
}

/// Hands the buffered rows to the parquet writer as one batch.
fn write_buffered(shard: &mut OpenShard, schema: &Arc<Schema>) -> Result<(), DataError> {
    if shard.buffered == 0 {
        return Ok(());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(shard.image_ids.finish()),
        Arc::new(shard.styles.finish()),
        Arc::new(shard.indices.finish()),
    ];
    shard.buffered = 0;
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| DataError::parquet(&shard.tmp, e))?;
    shard
        .writer
        .write(&batch)
        .map_err(|e| DataError::parquet(&shard.tmp, e))
}

impl Drop for IndexShardWriter {
    fn drop(&mut self) {
        // Anything still here was never published: remove the temporary files.
        if let Some(shard) = self.open.take() {
            drop(shard.writer);
            let _ = std::fs::remove_file(&shard.tmp);
        }
        for tmp in self.closed.drain(..) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
