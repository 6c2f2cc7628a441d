//! Index-sequence shards and `freq.json` (what `trainer extract` writes, `trainer ar` reads):
//! round trip over several shards, every refusal naming the file (and row) at fault.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, UInt16Builder};
use arrow_array::{ArrayRef, RecordBatch};
use data::indices::{IndexFreq, IndexSet, IndexShardWriter, FREQ_FILE};
use data::DataError;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::json;

const CODES: u32 = 16;
const TOKENS: usize = 5;

/// Row `r`'s sequence: deterministic, every index < CODES.
fn sequence(r: usize) -> Vec<u16> {
    (0..TOKENS).map(|t| ((r * 7 + t * 3) % 16) as u16).collect()
}

/// Writes `rows` rows of `split` into `dir`, `per_shard` rows per shard.
fn write_split(
    dir: &Path,
    split: &str,
    made_by: serde_json::Value,
    rows: usize,
    per_shard: usize,
) -> Vec<PathBuf> {
    let mut w = IndexShardWriter::create(dir, split, made_by, CODES, TOKENS)
        .unwrap()
        .with_rows_per_shard(per_shard);
    for r in 0..rows {
        let id = format!("train-00000-of-00001.parquet#{r}");
        w.push(&id, &format!("style{}", r % 3), &sequence(r))
            .unwrap();
    }
    w.finish().unwrap()
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn round_trip_across_several_shards() {
    let dir = tempfile::tempdir().unwrap();
    let made_by = json!({"checkpoint": "checkpoints/codebook/run/final", "step": 200});
    let files = write_split(dir.path(), "train", made_by.clone(), 10, 4);
    assert_eq!(
        names(&files),
        [
            "train-00000-of-00003.parquet",
            "train-00001-of-00003.parquet",
            "train-00002-of-00003.parquet"
        ]
    );
    // No temporary files are left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("indices"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    for opened in [dir.path().to_path_buf(), dir.path().join("indices")] {
        let set = IndexSet::open(&opened, "train").unwrap();
        assert_eq!((set.codes(), set.tokens(), set.len()), (CODES, TOKENS, 10));
        assert_eq!(set.made_by(), &made_by);
        assert_eq!(set.files(), files.as_slice());
        for r in 0..10 {
            assert_eq!(set.sequence(r), sequence(r).as_slice());
            assert_eq!(set.image_id(r), format!("train-00000-of-00001.parquet#{r}"));
            assert_eq!(set.style(r), format!("style{}", r % 3));
        }
        assert!(set
            .locate(9)
            .ends_with("train-00002-of-00003.parquet row 1"));
    }
}

#[test]
fn a_rerun_with_fewer_shards_removes_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", json!("a"), 10, 2);
    write_split(dir.path(), "test", json!("a"), 3, 2);
    let files = write_split(dir.path(), "train", json!("b"), 3, 2);
    let set = IndexSet::open(dir.path(), "train").unwrap();
    assert_eq!((set.len(), set.made_by()), (3, &json!("b")));
    assert_eq!(set.files(), files.as_slice());
    // The other split is untouched.
    assert_eq!(IndexSet::open(dir.path(), "test").unwrap().len(), 3);
}

#[test]
fn metadata_mismatch_between_shards_is_refused_naming_the_file() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_split(a.path(), "train", json!({"step": 100}), 4, 2);
    let other = write_split(b.path(), "train", json!({"step": 200}), 4, 2);
    let target = a.path().join("indices/train-00001-of-00002.parquet");
    std::fs::copy(&other[1], &target).unwrap();
    let err = IndexSet::open(a.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Metadata { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("train-00001-of-00002.parquet: metadata key `cotyle.made_by`"),
        "{msg}"
    );
    assert!(msg.contains("train-00000-of-00002.parquet"), "{msg}");

    // A different codebook size is named as such.
    let c = tempfile::tempdir().unwrap();
    let mut w = IndexShardWriter::create(c.path(), "train", json!({"step": 100}), 32, TOKENS)
        .unwrap()
        .with_rows_per_shard(2);
    for r in 0..4 {
        w.push(&r.to_string(), "s", &sequence(r)).unwrap();
    }
    let wider = w.finish().unwrap();
    std::fs::copy(&wider[1], &target).unwrap();
    let msg = IndexSet::open(a.path(), "train").unwrap_err().to_string();
    assert!(
        msg.contains(
            "train-00001-of-00002.parquet: metadata key `cotyle.codes`: `32` here but `16`"
        ),
        "{msg}"
    );
}

#[test]
fn out_of_range_index_and_wrong_length_are_refused_at_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexShardWriter::create(dir.path(), "train", json!(null), CODES, TOKENS).unwrap();
    let err = w.push("img#3", "s", &[1, 2, 16, 3, 4]).unwrap_err();
    assert!(matches!(err, DataError::BadRow { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("image `img#3`"), "{msg}");
    assert!(
        msg.contains("index 16 at position 2 is outside the codebook of 16 codes"),
        "{msg}"
    );

    let msg = w.push("img#4", "s", &[1, 2, 3]).unwrap_err().to_string();
    assert!(msg.contains("image `img#4`"), "{msg}");
    assert!(msg.contains("3 indices, expected 5"), "{msg}");

    // The refused rows left nothing behind; the writer goes on.
    w.push("img#5", "s", &sequence(5)).unwrap();
    w.finish().unwrap();
    let set = IndexSet::open(dir.path(), "train").unwrap();
    assert_eq!((set.len(), set.image_id(0)), (1, "img#5"));
}

#[test]
fn bad_writer_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let create = |split: &str, codes: u32, tokens: usize| {
        IndexShardWriter::create(dir.path(), split, json!(null), codes, tokens).err()
    };
    assert!(create("train", 0, 5).is_some());
    assert!(create("train", 65537, 5).is_some());
    assert!(create("train", 65536, 5).is_none());
    assert!(create("train", 16, 0).is_some());
    let msg = create("my-split", 16, 5).unwrap().to_string();
    assert!(msg.contains("split name `my-split`"), "{msg}");
    // Nothing pushed: no shards.
    let w = IndexShardWriter::create(dir.path(), "train", json!(null), 16, 5).unwrap();
    assert!(matches!(w.finish(), Err(DataError::Empty { .. })));
}

#[test]
fn dropping_an_unfinished_writer_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexShardWriter::create(dir.path(), "train", json!(null), CODES, TOKENS)
        .unwrap()
        .with_rows_per_shard(2);
    for r in 0..5 {
        w.push("x", "s", &sequence(r)).unwrap();
    }
    drop(w);
    let left = std::fs::read_dir(dir.path().join("indices"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[test]
fn a_corrupt_shard_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_split(dir.path(), "train", json!(1), 6, 3);
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() / 2]).unwrap();
    let err = IndexSet::open(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Parquet { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("train-00001-of-00002.parquet: unreadable parquet"),
        "{msg}"
    );
}

#[test]
fn a_missing_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_split(dir.path(), "train", json!(1), 9, 3);
    std::fs::remove_file(&files[1]).unwrap();
    let err = IndexSet::open(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Shards { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("train-00001-of-00003.parquet: missing"),
        "{msg}"
    );
}

/// A shard written by another tool: right schema and metadata, but row 1 holds `bad`.
fn write_foreign_shard(path: &Path, bad: &[u16]) {
    let mut ids = StringBuilder::new();
    let mut styles = StringBuilder::new();
    let mut lists = ListBuilder::new(UInt16Builder::new());
    for (r, seq) in [sequence(0), bad.to_vec()].iter().enumerate() {
        ids.append_value(r.to_string());
        styles.append_value("s");
        lists.values().append_slice(seq);
        lists.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("image_id", Arc::new(ids.finish())),
        ("style", Arc::new(styles.finish())),
        ("indices", Arc::new(lists.finish())),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let kv = |k: &str, v: &str| KeyValue::new(k.to_string(), v.to_string());
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            kv("cotyle.made_by", "{}"),
            kv("cotyle.codes", &CODES.to_string()),
            kv("cotyle.tokens", &TOKENS.to_string()),
        ]))
        .build();
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn bad_rows_in_a_shard_are_refused_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("train-00000-of-00001.parquet");
    write_foreign_shard(&shard, &[0, 1, 2, 99, 4]);
    let err = IndexSet::open(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::BadRow { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("train-00000-of-00001.parquet row 1 column indices: index 99 at position 3"),
        "{msg}"
    );

    write_foreign_shard(&shard, &[0, 1]);
    let msg = IndexSet::open(dir.path(), "train").unwrap_err().to_string();
    assert!(
        msg.contains("row 1 column indices: 2 indices, expected 5"),
        "{msg}"
    );
}

#[test]
fn freq_sums_to_the_token_count_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", json!({"step": 7}), 11, 4);
    let set = IndexSet::open(dir.path(), "train").unwrap();
    let freq = IndexFreq::from_set(&set);
    assert_eq!(freq.codes, CODES);
    assert_eq!(freq.counts.len(), CODES as usize);
    assert_eq!(freq.tokens_counted, (11 * TOKENS) as u64);
    assert_eq!(freq.counts.iter().sum::<u64>(), freq.tokens_counted);
    assert_eq!(freq.made_by, json!({"step": 7}));
    let expected_zero = (0..11).flat_map(sequence).filter(|&i| i == 0).count() as u64;
    assert_eq!(freq.count(0), expected_zero);

    let path = dir.path().join(FREQ_FILE);
    freq.write(&path).unwrap();
    assert_eq!(IndexFreq::read(&path).unwrap(), freq);

    // A count edited by hand no longer sums to the total: refused, naming the file.
    let mut text: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    text["counts"][0] = json!(expected_zero + 1);
    std::fs::write(&path, text.to_string()).unwrap();
    let err = IndexFreq::read(&path).unwrap_err();
    assert!(matches!(err, DataError::Json { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("freq.json: `counts` sum to"), "{msg}");

    // Wrong number of counts, and an unknown key.
    text["counts"] = json!([55]);
    std::fs::write(&path, text.to_string()).unwrap();
    let msg = IndexFreq::read(&path).unwrap_err().to_string();
    assert!(
        msg.contains("`counts` has 1 entries but `codes` = 16"),
        "{msg}"
    );
    std::fs::write(
        &path,
        r#"{"codes": 1, "tokens_counted": 0, "counts": [0], "made_by": null, "tau": 3}"#,
    )
    .unwrap();
    let msg = IndexFreq::read(&path).unwrap_err().to_string();
    assert!(msg.contains("freq.json") && msg.contains("tau"), "{msg}");
}

#[test]
fn unknown_split_is_an_error_listing_the_splits_present() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", json!(1), 3, 2);
    let err = IndexSet::open(dir.path(), "test").unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no index shards of split `test` (splits present: train)"),
        "{msg}"
    );
    let missing = dir.path().join("nope");
    assert!(matches!(
        IndexSet::open(&missing, "train"),
        Err(DataError::NotFound { .. })
    ));
}
