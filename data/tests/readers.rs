//! Dataset-layer readers: our shards round-trip, a file written by the real Python `datasets`
//! library opens, the column variants other writers produce are accepted (null bytes + path,
//! LargeBinary, BinaryView, large/view strings, string style ids, small integer types,
//! missing optional columns, zstd / uncompressed), image folders, and `inspect`.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BinaryViewArray, Int32Array, Int64Array, LargeBinaryArray,
    LargeStringArray, StringArray, StringViewArray, UInt8Array,
};
use arrow_schema::DataType;
use common::*;
use data::dataset::{decode_rgb, FOLDER_BLOCK_FILES};
use data::hf::{self, FEATURES_METADATA};
use data::inspect::inspect;
use data::parquet_read::Shard;
use data::shard_writer::{shard_file_name, Compression, WriterOptions, ZstdLevel};
use data::Dataset;
use image::ImageFormat;

#[test]
fn round_trip_shards_preserve_bytes_styles_prompts_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(12, &[10, 2, 33]);
    let opts = || WriterOptions {
        rows_per_group: 3,
        ..Default::default()
    };
    write_shard(
        dir.path(),
        &shard_file_name("train", 0, 2),
        &all[..7],
        opts(),
    );
    write_shard(
        dir.path(),
        &shard_file_name("train", 1, 2),
        &all[7..],
        opts(),
    );
    write_split(dir.path(), "test", &rows(4, &[1, 2]));

    assert_eq!(Dataset::splits(dir.path()).unwrap(), ["test", "train"]);
    let ds = Dataset::open(dir.path(), "train").unwrap();
    assert_eq!(ds.split, "train");
    // Numeric, not lexical, order: 2 < 10 < 33.
    assert_eq!(ds.styles, ["2", "10", "33"]);
    assert_eq!(ds.items.len(), 12);
    // 7 rows -> groups 3+3+1, 5 rows -> 3+2.
    assert_eq!(ds.num_blocks(), 5);
    assert_eq!(
        (0..5).map(|b| ds.block_len(b)).collect::<Vec<_>>(),
        [3, 3, 1, 3, 2]
    );

    let mut seen = 0;
    for block in 0..ds.num_blocks() as u32 {
        let images = ds.read_block(block).unwrap();
        assert_eq!(images.len(), ds.block_len(block));
        for (offset, bytes) in images.into_iter().enumerate() {
            let item = ds.block_first_item(block) + offset;
            let it = &ds.items[item];
            let (png, style, prompt, content) = &all[item];
            assert_eq!((it.block, it.offset as usize), (block, offset));
            assert_eq!(&bytes.unwrap(), png);
            assert_eq!(ds.styles[it.style as usize], style.to_string());
            assert_eq!(&it.prompt, prompt);
            assert_eq!(it.content_id, Some(*content));
            seen += 1;
        }
    }
    assert_eq!(seen, 12);
    // Item 8 is row 1 of the second shard.
    assert_eq!(
        ds.locate(8),
        format!(
            "{} row 1 column image",
            dir.path().join("train-00001-of-00002.parquet").display()
        )
    );

    // Metadata and schema read back exactly as `datasets` writes them.
    let shard = &ds.shards()[0];
    assert_eq!(shard.features_metadata(), Some(FEATURES_METADATA));
    let schema = shard.arrow_schema();
    assert_eq!(
        hf::type_name(schema.field(0).data_type()),
        "struct<bytes: binary, path: string>"
    );
    assert_eq!(schema.fields(), hf::image_dataset_schema().fields());
    assert_eq!(
        schema.metadata().get("huggingface").map(String::as_str),
        Some(FEATURES_METADATA)
    );
    // Page index written, snappy by default, no temporary files left behind.
    let image_bytes = shard.metadata().row_group(0).column(0);
    assert!(
        image_bytes.offset_index_offset().is_some(),
        "offset index missing"
    );
    assert!(
        image_bytes.column_index_offset().is_some(),
        "column index missing"
    );
    assert!(
        shard.metadata().page_index().is_some(),
        "page index not loaded"
    );
    assert_eq!(
        shard.metadata().row_group(0).column(0).compression(),
        Compression::SNAPPY
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn reads_fixture_written_by_python_datasets() {
    let path = fixture("hf_datasets_tiny.parquet");
    let ds = Dataset::open(&path, "ignored for a single file").unwrap();
    assert_eq!(ds.split, "hf_datasets_tiny");
    assert_eq!(ds.styles, ["3", "7", "11"]);
    assert_eq!(ds.items.len(), 8);
    assert_eq!(
        ds.items_of_style().iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 2]
    );
    assert_eq!(ds.items[4].prompt, "a picture of thing 1 in style 7");
    assert_eq!(ds.items[4].content_id, Some(1));
    ds.validate_pairs().unwrap();
    let mut decoded = 0;
    for row in ds.stream() {
        let (item, bytes) = row.unwrap();
        let img = decode_rgb(&bytes.unwrap(), &ds.locate(item)).unwrap();
        assert_eq!(img.dimensions(), (8, 8));
        decoded += 1;
    }
    assert_eq!(decoded, 8);

    // Our writer's metadata and schema are byte-for-byte what `datasets` wrote.
    let theirs = Shard::open(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = Shard::open(&write_split(dir.path(), "train", &rows(2, &[1]))).unwrap();
    assert_eq!(ours.features_metadata(), theirs.features_metadata());
    assert_eq!(ours.arrow_schema().fields(), theirs.arrow_schema().fields());
}

#[test]
fn null_bytes_with_relative_and_absolute_paths_are_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("imgs")).unwrap();
    std::fs::write(dir.path().join("imgs/a.png"), png(1)).unwrap();
    let absolute = dir.path().join("elsewhere.png");
    std::fs::write(&absolute, png(2)).unwrap();
    let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![None, None, Some(png(3).as_slice())]));
    let paths: ArrayRef = Arc::new(StringArray::from(vec![
        Some("imgs/a.png"),
        absolute.to_str(),
        Some("ignored.png"),
    ]));
    let file = dir.path().join("train-00000-of-00001.parquet");
    write_columns(
        &file,
        vec![
            ("image", image_struct(bytes, paths)),
            ("style_id", Arc::new(Int64Array::from(vec![5, 5, 6]))),
        ],
        Compression::SNAPPY,
    );
    let ds = Dataset::open(dir.path(), "train").unwrap();
    let images = block_bytes(&ds, 0);
    assert_eq!(images, [png(1), png(2), png(3)]);
    // Missing columns default: prompt empty, content_id None.
    assert_eq!(ds.items[0].prompt, "");
    assert_eq!(ds.items[0].content_id, None);
}

#[test]
fn large_binary_and_large_strings_and_small_integers_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let images = [png(1), png(2), png(3)];
    let bytes: ArrayRef = Arc::new(LargeBinaryArray::from(
        images
            .iter()
            .map(|b| Some(b.as_slice()))
            .collect::<Vec<_>>(),
    ));
    let paths: ArrayRef = Arc::new(LargeStringArray::from(vec![Some("a"), Some("b"), None]));
    let file = dir.path().join("large.parquet");
    write_columns(
        &file,
        vec![
            ("image", image_struct(bytes, paths)),
            ("style_id", Arc::new(Int32Array::from(vec![7, 7, 8]))),
            (
                "prompt",
                Arc::new(LargeStringArray::from(vec![Some("p0"), None, Some("p2")])),
            ),
            (
                "content_id",
                Arc::new(UInt8Array::from(vec![Some(1), Some(2), None])),
            ),
        ],
        Compression::SNAPPY,
    );
    let shard = Shard::open(&file).unwrap();
    assert!(
        matches!(shard.arrow_schema().field(0).data_type(), DataType::Struct(f) if f[0].data_type() == &DataType::LargeBinary)
    );
    let ds = Dataset::open(&file, "train").unwrap();
    assert_eq!(ds.styles, ["7", "8"]);
    assert_eq!(
        ds.items
            .iter()
            .map(|i| i.prompt.as_str())
            .collect::<Vec<_>>(),
        ["p0", "", "p2"]
    );
    assert_eq!(
        ds.items.iter().map(|i| i.content_id).collect::<Vec<_>>(),
        [Some(1), Some(2), None]
    );
    let read = block_bytes(&ds, 0);
    assert_eq!(read, images);
}

#[test]
fn binary_view_and_string_view_with_string_style_names_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let images = [png(4), png(5), png(6), png(7)];
    let bytes: ArrayRef = Arc::new(BinaryViewArray::from_iter(
        images.iter().map(|b| Some(b.as_slice())),
    ));
    let paths: ArrayRef = Arc::new(StringViewArray::from_iter(
        images.iter().map(|_| None::<&str>),
    ));
    let file = dir.path().join("view.parquet");
    write_columns(
        &file,
        vec![
            ("image", image_struct(bytes, paths)),
            (
                "style_id",
                Arc::new(StringViewArray::from(vec!["oil", "ink", "oil", "ink"])),
            ),
            (
                "prompt",
                Arc::new(StringViewArray::from(vec!["a", "b", "c", "d"])),
            ),
        ],
        Compression::UNCOMPRESSED,
    );
    let ds = Dataset::open(&file, "train").unwrap();
    // String styles are named by the string, sorted lexically.
    assert_eq!(ds.styles, ["ink", "oil"]);
    assert_eq!(
        ds.items.iter().map(|i| i.style).collect::<Vec<_>>(),
        [1, 0, 1, 0]
    );
    let read = block_bytes(&ds, 0);
    assert_eq!(read, images);
}

#[test]
fn zstd_and_uncompressed_shards_read_back() {
    for compression in [
        Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
        Compression::UNCOMPRESSED,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let all = rows(5, &[1, 2]);
        let opts = WriterOptions {
            compression,
            rows_per_group: 2,
            ..Default::default()
        };
        write_shard(dir.path(), &shard_file_name("train", 0, 1), &all, opts);
        let ds = Dataset::open(dir.path(), "train").unwrap();
        // The level is not stored in the file; the codec is.
        let written = ds.shards()[0]
            .metadata()
            .row_group(0)
            .column(0)
            .compression();
        assert_eq!(
            std::mem::discriminant(&written),
            std::mem::discriminant(&compression)
        );
        let read: Vec<Vec<u8>> = ds.stream().map(|r| r.unwrap().1.unwrap()).collect();
        assert_eq!(read, all.iter().map(|r| r.0.clone()).collect::<Vec<_>>());
    }
}

#[test]
fn read_block_rows_returns_only_the_selected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let all = rows(20, &[1, 2]);
    let opts = WriterOptions {
        rows_per_group: 20,
        rows_per_page: 2,
        ..Default::default()
    };
    write_shard(dir.path(), "train.parquet", &all, opts);
    let ds = Dataset::open(dir.path(), "train").unwrap();
    // 2 rows per image page, so a selection can skip 9 of 10 pages.
    let page_index = ds.shards()[0]
        .metadata()
        .page_index()
        .expect("page index loaded");
    assert_eq!(page_index.num_data_pages(0, 0), Some(10));
    let picked = ds.read_block_rows(0, &[17, 3, 3, 0]).unwrap();
    let offsets: Vec<u32> = picked.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [0, 3, 17]);
    for (offset, bytes) in picked {
        assert_eq!(bytes.unwrap(), all[offset as usize].0);
    }
    assert!(ds
        .read_block_rows(0, &[20])
        .unwrap_err()
        .to_string()
        .contains("offset 20 out of range"));
}

#[test]
fn data_subfolder_layout_is_found() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    write_split(&dir.path().join("data"), "validation", &rows(4, &[1, 2]));
    assert_eq!(Dataset::splits(dir.path()).unwrap(), ["validation"]);
    assert_eq!(
        Dataset::open(dir.path(), "validation").unwrap().items.len(),
        4
    );
}

#[test]
fn image_folder_with_prompts_nested_styles_and_mixed_formats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let put = |rel: &str, bytes: Vec<u8>| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    put("watercolor/b.jpg", encoded(10, 8, ImageFormat::Jpeg));
    put("watercolor/a.png", png(11));
    put("watercolor/a.txt", b"a quiet lake\n".to_vec());
    put("ink/wash/c.webp", encoded(12, 8, ImageFormat::WebP));
    put("ink/wash/d.PNG", png(13));
    put("ink/notes.md", b"not an image".to_vec());
    put(".cache/x.png", png(14)); // hidden: skipped
    let ds = Dataset::open(root, "whatever").unwrap();
    assert_eq!(ds.split, "train");
    assert_eq!(ds.styles, ["ink/wash", "watercolor"]);
    assert_eq!(ds.items.len(), 4);
    assert_eq!(ds.items[2].prompt, "a quiet lake");
    assert_eq!(ds.items[3].prompt, "");
    assert_eq!(
        ds.locate(2),
        root.join("watercolor/a.png").display().to_string()
    );
    assert_eq!(ds.num_blocks(), 2);
    for row in ds.stream() {
        let (item, bytes) = row.unwrap();
        assert_eq!(
            decode_rgb(&bytes.unwrap(), &ds.locate(item))
                .unwrap()
                .dimensions(),
            (8, 8)
        );
    }
    ds.validate_pairs().unwrap();
}

#[test]
fn image_folder_blocks_hold_at_most_64_files_of_one_style() {
    let dir = tempfile::tempdir().unwrap();
    for (style, n) in [("a", FOLDER_BLOCK_FILES + 6), ("b", 3)] {
        std::fs::create_dir(dir.path().join(style)).unwrap();
        for i in 0..n {
            std::fs::write(
                dir.path().join(style).join(format!("{i:03}.png")),
                encoded(i as u8, 1, ImageFormat::Png),
            )
            .unwrap();
        }
    }
    let ds = Dataset::open(dir.path(), "train").unwrap();
    assert_eq!(
        (0..3).map(|b| ds.block_len(b)).collect::<Vec<_>>(),
        [FOLDER_BLOCK_FILES, 6, 3]
    );
    assert_eq!(ds.items[FOLDER_BLOCK_FILES].offset, 0);
    assert_eq!(ds.items[FOLDER_BLOCK_FILES].block, 1);
}

#[test]
fn inspect_reports_files_schema_features_styles_and_decode_check() {
    let report = inspect(&fixture("hf_datasets_tiny.parquet"), 0).unwrap();
    let text = report.to_string();
    for expected in [
        "hf_datasets_tiny.parquet",
        "image: struct<bytes: binary, path: string>",
        "image: Image",
        "style_id: Value(int64)",
        "images per style   min 2  mean 2.7  max 3",
        "a picture of thing 0 in style 3",
        "8 of 8 decoded, 0 failed",
        "8x8 (8)",
        "jpeg (1)",
        "webp (1)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    write_split(dir.path(), "train", &rows(3, &[1]));
    let report = inspect(dir.path(), 2).unwrap();
    assert!(report.to_string().contains("2 of 2 decoded"), "{report}");
    assert!(report.to_string().contains("snappy"), "{report}");
}

#[test]
fn inspect_works_on_image_folders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("s")).unwrap();
    std::fs::write(dir.path().join("s/x.png"), png(1)).unwrap();
    std::fs::write(dir.path().join("s/y.png"), b"garbage").unwrap();
    let text = inspect(dir.path(), 0).unwrap().to_string();
    assert!(text.contains("image folder"), "{text}");
    assert!(text.contains("HF features        none"), "{text}");
    assert!(text.contains("1 of 2 decoded, 1 failed"), "{text}");
    assert!(
        text.contains(&format!(
            "FAILED {}: cannot decode image",
            Path::new(dir.path()).join("s/y.png").display()
        )),
        "{text}"
    );
}

#[test]
fn dataset_and_errors_can_be_shared_across_loader_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Dataset>();
    send_sync::<data::DataError>();
    // One writer per thread (e.g. one shard per rayon task): Send, not Sync.
    send::<data::shard_writer::ShardWriter>();
}
