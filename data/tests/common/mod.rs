//! Helpers shared by the dataset-layer tests: tiny encoded images, shards written with our
//! `ShardWriter`, and free-form parquet files written directly with arrow-rs (to produce the
//! column variants other tools write: LargeBinary, BinaryView, null bytes + path, ...).
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{Field, Fields};
use data::shard_writer::{shard_file_name, Compression, ShardRow, ShardWriter, WriterOptions};
use image::{ImageFormat, Rgb, RgbImage};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Every row's image bytes of one block, failing the test on any unreadable row.
pub fn block_bytes(ds: &data::Dataset, block: u32) -> Vec<Vec<u8>> {
    ds.read_block(block)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// The committed fixture written by the real `datasets` library.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// A `size`x`size` solid image of `shade`, encoded as `format`.
pub fn encoded(shade: u8, size: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_pixel(size, size, Rgb([shade, 255 - shade, shade / 2]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

/// An 8x8 PNG whose colour encodes `shade`.
pub fn png(shade: u8) -> Vec<u8> {
    encoded(shade, 8, ImageFormat::Png)
}

/// A test row: (png bytes, style id, prompt, content id).
pub type Row = (Vec<u8>, i64, String, i64);

/// `n` rows cycling through `styles`, row i has shade i and prompt "prompt i".
pub fn rows(n: usize, styles: &[i64]) -> Vec<Row> {
    (0..n)
        .map(|i| {
            (
                png(i as u8),
                styles[i % styles.len()],
                format!("prompt {i}"),
                i as i64,
            )
        })
        .collect()
}

/// Writes `rows` as one shard at `dir/name` with `opts`; returns its path.
pub fn write_shard(dir: &Path, name: &str, rows: &[Row], opts: WriterOptions) -> PathBuf {
    let path = dir.join(name);
    let mut writer = ShardWriter::create(&path, opts).expect("create shard");
    for (i, (bytes, style, prompt, content)) in rows.iter().enumerate() {
        let file = format!("img{i}.png");
        writer
            .write(ShardRow {
                png: bytes,
                path: &file,
                style_id: *style,
                prompt,
                content_id: *content,
            })
            .expect("write row");
    }
    assert_eq!(writer.finish().expect("finish shard"), rows.len() as u64);
    path
}

/// Writes `rows` as `split-00000-of-00001.parquet` in `dir` with default options.
pub fn write_split(dir: &Path, split: &str, rows: &[Row]) -> PathBuf {
    write_shard(
        dir,
        &shard_file_name(split, 0, 1),
        rows,
        WriterOptions::default(),
    )
}

/// An HF image struct column from any bytes and paths arrays.
pub fn image_struct(bytes: ArrayRef, paths: ArrayRef) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("bytes", bytes.data_type().clone(), true),
        Field::new("path", paths.data_type().clone(), true),
    ]);
    Arc::new(StructArray::new(fields, vec![bytes, paths], None))
}

/// Writes the named columns as one parquet file with plain arrow-rs (no HF metadata).
pub fn write_columns(path: &Path, columns: Vec<(&str, ArrayRef)>, compression: Compression) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let props = WriterProperties::builder()
        .set_compression(compression)
        .build();
    let file = File::create(path).expect("create file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close");
}
