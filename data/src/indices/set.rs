//! Reads every index shard of one split into memory (format in [`crate::indices`]; a
//! sequence is `tokens` uint16, 392 bytes at 196 tokens, so 50k images fit in 20 MiB).
//!
//! Refused, with the file (and row) named: a split whose `k-of-n` shard names do not form a
//! complete set (an interrupted or mixed extract), shards that disagree on `cotyle.codes`,
//! `cotyle.tokens` or `cotyle.made_by`, a missing column or a column of another type, an
//! unreadable file, and any row with a null, a sequence of the wrong length or an index
//! outside the codebook.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::UInt16Type;
use arrow_array::{Array, ArrayRef, GenericListArray, OffsetSizeTrait, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;

use super::files::{indices_folder, split_files};
use super::{
    CODES_KEY, IMAGE_ID_COLUMN, INDICES_COLUMN, MADE_BY_KEY, MAX_CODES, STYLE_COLUMN, TOKENS_KEY,
};
use crate::error::DataError;
use crate::hf::type_name;
use crate::parquet_columns::{column_names, is_string, StringColumn};

/// Rows per arrow batch while reading.
const READ_BATCH_ROWS: usize = 4096;

/// What a shard's key-value metadata says about its sequences.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    codes: u32,
    tokens: usize,
    made_by: serde_json::Value,
}

/// The rows of one shard.
#[derive(Default)]
struct Rows {
    image_ids: Vec<String>,
    styles: Vec<String>,
    indices: Vec<u16>,
}

/// All index sequences of one split, in shard then row order.
#[derive(Debug, Clone)]
pub struct IndexSet {
    split: String,
    files: Vec<PathBuf>,
    /// Position in the set of each file's first row.
    file_starts: Vec<usize>,
    codes: u32,
    tokens: usize,
    made_by: serde_json::Value,
    image_ids: Vec<String>,
    styles: Vec<String>,
    /// `len() x tokens`, row-major.
    indices: Vec<u16>,
}

impl IndexSet {
    /// Reads the shards of `split` from `dir`: a run folder holding `indices/`, or the
    /// `indices/` folder itself.
    pub fn open(dir: &Path, split: &str) -> Result<IndexSet, DataError> {
        let folder = indices_folder(dir)?;
        let files = split_files(&folder, split)?;
        // Footers first (cheap), so a mismatch is reported before any row is decoded.
        let mut opened = Vec::with_capacity(files.len());
        for file in &files {
            opened.push(open_shard(file)?);
        }
        let first = opened[0].1.clone();
        for (file, (_, header)) in files.iter().zip(&opened).skip(1) {
            check_agrees(file, header, &files[0], &first)?;
        }
        let read: Vec<Result<Rows, DataError>> = opened
            .into_par_iter()
            .zip(files.par_iter())
            .map(|((builder, _), file)| read_rows(file, builder, first.codes, first.tokens))
            .collect();
        let mut set = IndexSet {
            split: split.to_string(),
            files: Vec::with_capacity(files.len()),
            file_starts: Vec::with_capacity(files.len()),
            codes: first.codes,
            tokens: first.tokens,
            made_by: first.made_by,
            image_ids: Vec::new(),
            styles: Vec::new(),
            indices: Vec::new(),
        };
        // In file order, so the error reported is the first one whatever the thread count.
        for (file, rows) in files.into_iter().zip(read) {
            let mut rows = rows?;
            set.file_starts.push(set.image_ids.len());
            set.files.push(file);
            set.image_ids.append(&mut rows.image_ids);
            set.styles.append(&mut rows.styles);
            set.indices.append(&mut rows.indices);
        }
        if set.image_ids.is_empty() {
            return Err(DataError::Empty {
                path: folder,
                detail: format!("split `{split}` has shards but no rows"),
            });
        }
        Ok(set)
    }

    /// The split these sequences belong to.
    pub fn split(&self) -> &str {
        &self.split
    }

    /// The shard files, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Codebook size: every index is below it.
    pub fn codes(&self) -> u32 {
        self.codes
    }

    /// Sequence length (tokens per image).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// What made the sequences (`cotyle.made_by`, as the extract step wrote it).
    pub fn made_by(&self) -> &serde_json::Value {
        &self.made_by
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.image_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }

    /// Sequence `i`: `tokens()` indices. Panics if `i >= len()`, like slice indexing.
    pub fn sequence(&self, i: usize) -> &[u16] {
        &self.indices[i * self.tokens..(i + 1) * self.tokens]
    }

    /// Every sequence, concatenated: `len() x tokens()`, row-major.
    pub fn indices(&self) -> &[u16] {
        &self.indices
    }

    /// Style of sequence `i`, as the source dataset names it. Panics if `i >= len()`.
    pub fn style(&self, i: usize) -> &str {
        &self.styles[i]
    }

    /// Source-dataset row identity of sequence `i`. Panics if `i >= len()`.
    pub fn image_id(&self, i: usize) -> &str {
        &self.image_ids[i]
    }

    /// `"FILE row R"` of sequence `i`, R counted within the shard, for error messages.
    pub fn locate(&self, i: usize) -> String {
        let f = self
            .file_starts
            .partition_point(|&s| s <= i)
            .saturating_sub(1);
        match self.files.get(f) {
            Some(file) => format!("{} row {}", file.display(), i - self.file_starts[f]),
            None => format!("split `{}` row {i}", self.split),
        }
    }
}

/// Parses the footer of `file`, its metadata keys and its column types.
fn open_shard(file: &Path) -> Result<(ParquetRecordBatchReaderBuilder<File>, Header), DataError> {
    let handle = File::open(file).map_err(|e| DataError::io(file, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle)
        .map_err(|e| DataError::parquet(file, e))?;
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let value = |key: &str| {
        kv.and_then(|kv| kv.iter().find(|k| k.key == key))
            .and_then(|k| k.value.as_deref())
            .ok_or_else(|| {
                bad_key(
                    file,
                    key,
                    "missing: not an index shard written by `trainer extract`".into(),
                )
            })
    };
    let codes_text = value(CODES_KEY)?;
    let codes = codes_text
        .parse::<u32>()
        .ok()
        .filter(|c| (1..=MAX_CODES).contains(c))
        .ok_or_else(|| {
            bad_key(
                file,
                CODES_KEY,
                format!("`{codes_text}` is not a codebook size in 1..={MAX_CODES}"),
            )
        })?;
    let tokens_text = value(TOKENS_KEY)?;
    let tokens = tokens_text
        .parse::<usize>()
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| {
            bad_key(
                file,
                TOKENS_KEY,
                format!("`{tokens_text}` is not a sequence length >= 1"),
            )
        })?;
    let made_by = serde_json::from_str(value(MADE_BY_KEY)?)
        .map_err(|e| bad_key(file, MADE_BY_KEY, format!("invalid JSON: {e}")))?;
    check_schema(file, builder.schema())?;
    Ok((
        builder,
        Header {
            codes,
            tokens,
            made_by,
        },
    ))
}

fn bad_key(file: &Path, key: &str, detail: String) -> DataError {
    DataError::Metadata {
        file: file.to_path_buf(),
        key: key.to_string(),
        detail,
    }
}

/// `image_id` and `style` strings, `indices` a list (or large list) of uint16.
fn check_schema(file: &Path, schema: &SchemaRef) -> Result<(), DataError> {
    let expected = [
        (IMAGE_ID_COLUMN, "a string"),
        (STYLE_COLUMN, "a string"),
        (INDICES_COLUMN, "list<uint16>"),
    ];
    for (column, want) in expected {
        let bad = |detail: String| DataError::Schema {
            file: file.to_path_buf(),
            column: column.to_string(),
            detail,
        };
        let Ok(field) = schema.field_with_name(column) else {
            return Err(bad(format!(
                "missing (columns present: {})",
                column_names(schema)
            )));
        };
        let t = field.data_type();
        let ok = match column {
            INDICES_COLUMN => matches!(t, DataType::List(item) | DataType::LargeList(item)
                if item.data_type() == &DataType::UInt16),
            _ => is_string(t),
        };
        if !ok {
            return Err(bad(format!("has type {}; expected {want}", type_name(t))));
        }
    }
    Ok(())
}

/// Shard `file` must say what the first shard says.
fn check_agrees(
    file: &Path,
    got: &Header,
    first_file: &Path,
    first: &Header,
) -> Result<(), DataError> {
    let differs = |key: &str, here: String, there: String| {
        bad_key(
            file,
            key,
            format!(
                "`{here}` here but `{there}` in {}: shards from different extract runs",
                first_file.display()
            ),
        )
    };
    if got.codes != first.codes {
        return Err(differs(
            CODES_KEY,
            got.codes.to_string(),
            first.codes.to_string(),
        ));
    }
    if got.tokens != first.tokens {
        return Err(differs(
            TOKENS_KEY,
            got.tokens.to_string(),
            first.tokens.to_string(),
        ));
    }
    if got.made_by != first.made_by {
        return Err(differs(
            MADE_BY_KEY,
            got.made_by.to_string(),
            first.made_by.to_string(),
        ));
    }
    Ok(())
}

/// Decodes and checks every row of one shard.
fn read_rows(
    file: &Path,
    builder: ParquetRecordBatchReaderBuilder<File>,
    codes: u32,
    tokens: usize,
) -> Result<Rows, DataError> {
    let total = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let reader = builder
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(|e| DataError::parquet(file, e))?;
    let mut rows = Rows {
        image_ids: Vec::with_capacity(total),
        styles: Vec::with_capacity(total),
        indices: Vec::with_capacity(total * tokens),
    };
    let mut first_row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::parquet(file, e))?;
        let at = |row: usize, column: &str| {
            format!(
                "{} row {} column {column}",
                file.display(),
                first_row + row as u64
            )
        };
        for (column, out) in [
            (IMAGE_ID_COLUMN, &mut rows.image_ids),
            (STYLE_COLUMN, &mut rows.styles),
        ] {
            let strings = batch_column(file, &batch, column).and_then(|a| {
                StringColumn::new(a).ok_or_else(|| {
                    DataError::parquet(
                        file,
                        format!("column `{column}` read as {}", type_name(a.data_type())),
                    )
                })
            })?;
            for row in 0..batch.num_rows() {
                let Some(value) = strings.get(row) else {
                    return Err(DataError::BadRow {
                        at: at(row, column),
                        detail: "null".into(),
                    });
                };
                out.push(value.to_string());
            }
        }
        let list = batch_column(file, &batch, INDICES_COLUMN)?;
        let check = Sequences {
            codes,
            tokens,
            at: &|row| at(row, INDICES_COLUMN),
        };
        match list.data_type() {
            DataType::List(_) => check.append(list.as_list::<i32>(), &mut rows.indices)?,
            DataType::LargeList(_) => check.append(list.as_list::<i64>(), &mut rows.indices)?,
            other => {
                return Err(DataError::parquet(
                    file,
                    format!("column `{INDICES_COLUMN}` read as {}", type_name(other)),
                ))
            }
        }
        first_row += batch.num_rows() as u64;
    }
    Ok(rows)
}

fn batch_column<'a>(
    file: &Path,
    batch: &'a RecordBatch,
    column: &str,
) -> Result<&'a ArrayRef, DataError> {
    batch.column_by_name(column).ok_or_else(|| {
        DataError::parquet(file, format!("column `{column}` missing from a read batch"))
    })
}

/// The per-row checks of the `indices` column.
struct Sequences<'a> {
    codes: u32,
    tokens: usize,
    /// `"FILE row R column indices"` of a row of the current batch.
    at: &'a dyn Fn(usize) -> String,
}

impl Sequences<'_> {
    /// Appends every sequence of `list` to `out`, refusing nulls, wrong lengths and indices
    /// outside the codebook.
    fn append<O: OffsetSizeTrait>(
        &self,
        list: &GenericListArray<O>,
        out: &mut Vec<u16>,
    ) -> Result<(), DataError> {
        let bad = |row: usize, detail: String| DataError::BadRow {
            at: (self.at)(row),
            detail,
        };
        let Some(values) = list.values().as_primitive_opt::<UInt16Type>() else {
            return Err(bad(
                0,
                format!(
                    "items read as {}; expected uint16",
                    type_name(list.values().data_type())
                ),
            ));
        };
        let offsets = list.value_offsets();
        for row in 0..list.len() {
            if list.is_null(row) {
                return Err(bad(row, "null sequence".into()));
            }
            let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
            if end - start != self.tokens {
                return Err(bad(
                    row,
                    format!(
                        "{} indices, expected {} ({TOKENS_KEY})",
                        end - start,
                        self.tokens
                    ),
                ));
            }
            let null = (values.null_count() > 0)
                .then(|| (start..end).find(|&j| values.is_null(j)))
                .flatten();
            if let Some(pos) = null {
                return Err(bad(row, format!("null index at position {}", pos - start)));
            }
            let seq = &values.values()[start..end];
            if let Some(pos) = seq.iter().position(|&v| u32::from(v) >= self.codes) {
                return Err(bad(row, format!("index {} at position {pos} is outside the codebook of {} codes ({CODES_KEY})", seq[pos], self.codes)));
            }
            out.extend_from_slice(seq);
        }
        Ok(())
    }
}
