//! Codebook index sequences: what `trainer extract` writes and `trainer ar` reads (DESIGN.md,
//! "How data flows": `RUN/indices/*.parquet + RUN/freq.json`). The autoregressive style
//! generator trains on these sequences (DESIGN.md, "The method": vocabulary = codebook size,
//! length = tokens per image), and its sampler suppresses indices by their frequency in
//! `freq.json`.
//!
//! Format of one shard, `RUN/indices/{split}-{k:05}-of-{n:05}.parquet`:
//! - `image_id` utf8: the source dataset's row identity (`train-00000-of-00002.parquet#17`,
//!   or an image folder path), so a sequence can be traced back to its image;
//! - `style` utf8: the style id as the source dataset names it;
//! - `indices` `list<uint16>`: exactly `cotyle.tokens` codebook indices, each < `cotyle.codes`;
//! - key-value metadata `cotyle.made_by` (JSON from the caller: checkpoint, step, config
//!   hash), `cotyle.codes` and `cotyle.tokens` (decimal), equal in every shard of a split, so
//!   a later stage can refuse indices made by another codebook with a clear error.
//!
//! Shards are written under hidden temporary names and renamed once the split is complete
//! ([`IndexShardWriter`]); [`IndexSet`] refuses a split whose `k-of-n` names do not form a
//! complete set, so an interrupted extract is an error rather than a silently short set.

mod files;
mod freq;
mod set;
mod writer;

pub use freq::IndexFreq;
pub use set::IndexSet;
pub use writer::IndexShardWriter;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

/// Folder of the shards inside a run folder.
pub const INDICES_DIR: &str = "indices";
/// File name of the index frequencies inside a run folder.
pub const FREQ_FILE: &str = "freq.json";

/// Column: the source dataset's row identity.
pub const IMAGE_ID_COLUMN: &str = "image_id";
/// Column: the style id as the source dataset names it.
pub const STYLE_COLUMN: &str = "style";
/// Column: the codebook index sequence, `list<uint16>`.
pub const INDICES_COLUMN: &str = "indices";

/// Metadata key: JSON naming what made the indices (checkpoint path, step, config hash...).
pub const MADE_BY_KEY: &str = "cotyle.made_by";
/// Metadata key: codebook size; every index is below it.
pub const CODES_KEY: &str = "cotyle.codes";
/// Metadata key: sequence length (tokens per image).
pub const TOKENS_KEY: &str = "cotyle.tokens";

/// Largest codebook a uint16 index can address.
pub const MAX_CODES: u32 = 1 << 16;
/// Rows per shard unless [`IndexShardWriter::with_rows_per_shard`] says otherwise:
/// 16384 sequences of 196 indices are about 6 MiB before compression.
pub const DEFAULT_ROWS_PER_SHARD: usize = 16384;

/// The arrow schema of a shard. The list items are non-nullable: a sequence has no holes.
pub(crate) fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new(IMAGE_ID_COLUMN, DataType::Utf8, false),
        Field::new(STYLE_COLUMN, DataType::Utf8, false),
        Field::new(INDICES_COLUMN, list_type(), false),
    ]))
}

/// `list<uint16>` with non-nullable items, shared by the schema and the list builder.
pub(crate) fn item_field() -> Field {
    Field::new("item", DataType::UInt16, false)
}

fn list_type() -> DataType {
    DataType::List(Arc::new(item_field()))
}
