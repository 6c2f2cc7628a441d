//! Bad input never panics and always names where it is: shard, row and column, or the file.
//! Each test asserts on the message text a user would read in a training log.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int64Array, StringArray};
use common::*;
use data::dataset::decode_rgb;
use data::shard_writer::{shard_file_name, Compression, ShardRow, ShardWriter, WriterOptions};
use data::{DataError, Dataset};

#[test]
fn corrupt_image_bytes_give_a_decode_error_naming_shard_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = rows(3, &[1, 2]);
    all[1].0 = b"\x89PNG\r\n\x1a\n but then garbage".to_vec();
    write_split(dir.path(), "train", &all);
    let ds = Dataset::open(dir.path(), "train").unwrap();
    let bytes = ds.read_block(0).unwrap().remove(1).unwrap();
    let err = decode_rgb(&bytes, &ds.locate(1)).unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("train-00000-of-00001.parquet row 1 column image: cannot decode image"),
        "{msg}"
    );
}

#[test]
fn missing_image_column_is_a_schema_error_listing_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("train-00000-of-00001.parquet");
    write_columns(
        &file,
        vec![(
            "style_id",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )],
        Compression::SNAPPY,
    );
    let err = Dataset::open(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Schema { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "train-00000-of-00001.parquet: column `image`: missing (columns present: style_id)"
        ),
        "{msg}"
    );
}

#[test]
fn float_style_id_is_a_schema_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("train.parquet");
    let image: ArrayRef = Arc::new(BinaryArray::from(vec![
        png(1).as_slice(),
        png(2).as_slice(),
    ]));
    write_columns(
        &file,
        vec![
            ("image", image),
            ("style_id", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
        ],
        Compression::SNAPPY,
    );
    let msg = Dataset::open(&file, "train").unwrap_err().to_string();
    assert!(
        msg.contains("train.parquet: column `style_id`: has type float64; expected an integer (style ids) or a string"),
        "{msg}"
    );
}

#[test]
fn null_style_and_null_image_are_bad_rows_naming_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nulls.parquet");
    let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![Some(png(1).as_slice()), None]));
    let paths: ArrayRef = Arc::new(StringArray::from(vec![None::<&str>, None]));
    let image = image_struct(bytes, paths);
    write_columns(
        &file,
        vec![
            ("image", image.clone()),
            ("style_id", Arc::new(Int64Array::from(vec![Some(1), None]))),
        ],
        Compression::SNAPPY,
    );
    let msg = Dataset::open(&file, "train").unwrap_err().to_string();
    assert!(
        msg.contains("nulls.parquet row 1 column style_id: style_id is null"),
        "{msg}"
    );

    write_columns(
        &file,
        vec![
            ("image", image),
            ("style_id", Arc::new(Int64Array::from(vec![1, 1]))),
        ],
        Compression::SNAPPY,
    );
    let ds = Dataset::open(&file, "train").unwrap();
    let rows = ds.read_block(0).unwrap();
    assert!(rows[0].is_ok());
    let msg = rows[1].as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("nulls.parquet row 1 column image: image bytes and path are both null"),
        "{msg}"
    );
}

#[test]
fn missing_image_file_behind_a_path_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("paths.parquet");
    let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![None::<&[u8]>]));
    let paths: ArrayRef = Arc::new(StringArray::from(vec!["gone.png"]));
    write_columns(
        &file,
        vec![
            ("image", image_struct(bytes, paths)),
            ("style_id", Arc::new(Int64Array::from(vec![1]))),
        ],
        Compression::SNAPPY,
    );
    let ds = Dataset::open(&file, "train").unwrap();
    let msg = ds.read_block(0).unwrap()[0]
        .as_ref()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("paths.parquet row 0 column image: image bytes are null and path"),
        "{msg}"
    );
    assert!(msg.contains("gone.png cannot be read"), "{msg}");
}

#[test]
fn empty_directory_and_zero_row_split_are_empty_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::open(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("no .parquet shards"), "{err}");
    assert!(Dataset::splits(dir.path()).is_err());

    let writer = ShardWriter::create(
        &dir.path().join(shard_file_name("train", 0, 1)),
        WriterOptions::default(),
    )
    .unwrap();
    assert_eq!(writer.finish().unwrap(), 0);
    let msg = Dataset::open(dir.path(), "train").unwrap_err().to_string();
    assert!(
        msg.contains("empty dataset: split `train` has zero rows in 1 file(s)"),
        "{msg}"
    );
}

#[test]
fn missing_split_lists_the_splits_present() {
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &rows(2, &[1]));
    let msg = Dataset::open(dir.path(), "validation")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no shards for split `validation`; splits present: train"),
        "{msg}"
    );
}

#[test]
fn a_style_with_one_image_fails_validate_pairs_naming_the_style() {
    let dir = tempfile::tempdir().unwrap();
    // Style 9 has a single image (row 4).
    let all: Vec<Row> = [1, 1, 2, 2, 9]
        .iter()
        .enumerate()
        .map(|(i, &s)| (png(i as u8), s, String::new(), 0))
        .collect();
    write_split(dir.path(), "train", &all);
    let ds = Dataset::open(dir.path(), "train").unwrap();
    let err = ds.validate_pairs().unwrap_err();
    assert!(
        matches!(err, DataError::SingleImageStyle { ref style, .. } if style == "9"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("train-00000-of-00001.parquet: style `9` has only one image"),
        "{err}"
    );

    let one_style = tempfile::tempdir().unwrap();
    write_split(one_style.path(), "train", &rows(3, &[5]));
    let msg = Dataset::open(one_style.path(), "train")
        .unwrap()
        .validate_pairs()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("has 1 style(s); paired sampling needs at least 2"),
        "{msg}"
    );
}

#[test]
fn a_path_that_does_not_exist_is_not_found() {
    let msg = Dataset::open(std::path::Path::new("/no/such/dataset"), "train")
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "/no/such/dataset: no such file or directory");
    assert!(Dataset::splits(std::path::Path::new("/no/such/dataset")).is_err());
}

#[test]
fn a_truncated_parquet_file_is_a_parquet_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_split(dir.path(), "train", &rows(4, &[1, 2]));
    let full = std::fs::read(&path).unwrap();
    for keep in [full.len() - 10, full.len() / 2, 3] {
        std::fs::write(&path, &full[..keep]).unwrap();
        let err = Dataset::open(dir.path(), "train").unwrap_err();
        assert!(matches!(err, DataError::Parquet { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("train-00000-of-00001.parquet: unreadable parquet"),
            "{err}"
        );
    }
}

#[test]
fn corrupt_pages_in_a_row_group_are_a_block_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_split(dir.path(), "train", &rows(4, &[1, 2]));
    let ds = Dataset::open(dir.path(), "train").unwrap();
    // Overwrite the first image page headers (footer intact, so the cached index stays valid).
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[8..200] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    let msg = ds.read_block(0).unwrap_err().to_string();
    assert!(
        msg.contains("train-00000-of-00001.parquet: unreadable parquet: row group 0"),
        "{msg}"
    );
}

#[test]
fn mixing_integer_and_string_style_ids_across_shards_is_a_schema_error() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(
        dir.path(),
        &shard_file_name("train", 0, 2),
        &rows(2, &[1]),
        WriterOptions::default(),
    );
    let image: ArrayRef = Arc::new(BinaryArray::from(vec![png(1).as_slice()]));
    write_columns(
        &dir.path().join(shard_file_name("train", 1, 2)),
        vec![
            ("image", image),
            ("style_id", Arc::new(StringArray::from(vec!["ink"]))),
        ],
        Compression::SNAPPY,
    );
    let msg = Dataset::open(dir.path(), "train").unwrap_err().to_string();
    assert!(
        msg.contains(
            "train-00001-of-00002.parquet: column `style_id`: is a string here but an integer in"
        ),
        "{msg}"
    );
}

#[test]
fn images_directly_in_a_folder_root_are_a_layout_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stray.png"), png(1)).unwrap();
    let msg = Dataset::open(dir.path(), "train").unwrap_err().to_string();
    assert!(
        msg.contains("stray.png: image folder layout: image directly in the dataset root"),
        "{msg}"
    );
}

#[test]
fn a_dropped_writer_leaves_neither_the_shard_nor_its_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(shard_file_name("train", 0, 1));
    {
        let mut writer = ShardWriter::create(&path, WriterOptions::default()).unwrap();
        let png = png(1);
        writer
            .write(ShardRow {
                png: &png,
                path: "",
                style_id: 1,
                prompt: "",
                content_id: 0,
            })
            .unwrap();
        assert!(dir.path().join("train-00000-of-00001.parquet.tmp").exists());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
