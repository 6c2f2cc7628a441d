//! Pair sampling and loading: determinism, rank sharding, labels, resume from a cursor,
//! corrupt rows, and the sequential loader.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use data::config::DataConfig;
use data::loader::{BlockCache, PairLoader, SequentialLoader};
use data::pairs::{Cursor, PairPlan};
use data::shard_writer::{ShardRow, ShardWriter, WriterOptions};
use data::synth::generate::{encode_png, generate, SynthConfig};
use data::Dataset;

fn synth(dir: &Path, styles: u32, per_style: u32) -> Arc<Dataset> {
    let cfg = SynthConfig {
        styles,
        test_styles: 1,
        per_style,
        size: 16,
        seed: 3,
        rows_per_shard: 40,
        rows_per_group: 8,
        ..Default::default()
    };
    generate(dir, &cfg, &|_, _| {}).unwrap();
    Arc::new(Dataset::open(dir, "train").unwrap())
}

fn plan(rank: usize, world: usize, batch: usize) -> PairPlan {
    PairPlan {
        seed: 11,
        rank,
        world,
        batch_size: batch,
        negative_fraction: 0.5,
        window_blocks: 2,
    }
}

fn cfg() -> DataConfig {
    DataConfig {
        image_size: 16,
        prefetch: 2,
        threads: 2,
        ..DataConfig::default()
    }
}

#[test]
fn epochs_are_deterministic_and_differ() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 12, 6);
    let by_style = ds.items_of_style();
    let p = plan(0, 1, 8);
    let batch = |epoch| p.batch(&ds, &by_style, &p.epoch(&ds, epoch), 0);
    assert_eq!(batch(0), batch(0));
    assert_ne!(batch(0), batch(1));
}

#[test]
fn ranks_take_disjoint_anchors_covering_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 12, 6); // 72 items
    let by_style = ds.items_of_style();
    let mut seen = HashSet::new();
    for rank in 0..3 {
        let p = plan(rank, 3, 4);
        let e = p.epoch(&ds, 0);
        assert_eq!(p.batches_per_epoch(&e), 6); // 72 / 3 ranks / 4 per batch
        for b in 0..6 {
            for pair in p.batch(&ds, &by_style, &e, b) {
                assert!(
                    seen.insert(pair.anchor),
                    "anchor {} on two ranks",
                    pair.anchor
                );
            }
        }
    }
    assert_eq!(seen.len(), 72);
}

#[test]
fn labels_match_styles_and_both_kinds_occur() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 10, 4);
    let by_style = ds.items_of_style();
    let p = plan(0, 1, 40);
    let pairs = p.batch(&ds, &by_style, &p.epoch(&ds, 0), 0);
    let mut same = 0;
    for pair in &pairs {
        assert_ne!(pair.anchor, pair.other);
        assert_eq!(
            ds.items[pair.anchor].style == ds.items[pair.other].style,
            pair.same_style
        );
        same += pair.same_style as usize;
    }
    assert!(
        (8..=32).contains(&same),
        "{same} of 40 positive at negative_fraction 0.5"
    );
}

#[test]
fn loader_batches_have_the_right_shapes_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 8, 4);
    let mut loader = PairLoader::new(ds.clone(), &cfg(), plan(0, 1, 6), Cursor::default()).unwrap();
    let b = loader.next_batch().unwrap();
    assert_eq!(b.anchor.dims(), &[6, 3, 16, 16]);
    assert_eq!(b.other.dims(), &[6, 3, 16, 16]);
    let labels = b.label.to_vec1::<f32>().unwrap();
    for (pair, y) in b.pairs.iter().zip(labels) {
        assert_eq!(y, if pair.same_style { 1.0 } else { 0.0 });
    }
    // Normalised with mean 0.5 / std 0.5: values within [-1, 1], not all equal.
    let v = b.anchor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    assert!(v.iter().any(|x| *x != v[0]));
    assert_eq!(b.next, Cursor { epoch: 0, batch: 1 });
}

#[test]
fn resuming_from_a_cursor_continues_with_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 6, 4); // 24 items, 4 batches of 6 per epoch
    let mut full = PairLoader::new(ds.clone(), &cfg(), plan(0, 1, 6), Cursor::default()).unwrap();
    assert_eq!(full.batches_per_epoch, 4);
    let uninterrupted: Vec<_> = (0..7).map(|_| full.next_batch().unwrap()).collect();
    // Stop after batch 3 (mid-epoch 0) and resume from its saved cursor, across the epoch end.
    let cursor = uninterrupted[2].next;
    let mut resumed = PairLoader::new(ds.clone(), &cfg(), plan(0, 1, 6), cursor).unwrap();
    for expected in &uninterrupted[3..] {
        let got = resumed.next_batch().unwrap();
        assert_eq!(got.pairs, expected.pairs);
        assert_eq!(got.next, expected.next);
        let diff = (got.anchor.clone() - expected.anchor.clone())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
    assert_eq!(uninterrupted[6].next, Cursor { epoch: 1, batch: 3 });
}

/// A parquet split with one corrupt image at row `bad` of 12 (3 styles x 4).
fn with_corrupt_row(dir: &Path, bad: usize) -> Arc<Dataset> {
    let mut w = ShardWriter::create(
        &dir.join("train-00000-of-00001.parquet"),
        WriterOptions::default(),
    )
    .unwrap();
    let png = encode_png(&image::RgbImage::from_pixel(
        8,
        8,
        image::Rgb([10, 200, 30]),
    ));
    for i in 0..12 {
        let bytes: &[u8] = if i == bad {
            b"definitely not a png"
        } else {
            &png
        };
        w.write(ShardRow {
            png: bytes,
            path: "x.png",
            style_id: (i / 4) as i64,
            prompt: "a circle",
            content_id: i as i64,
        })
        .unwrap();
    }
    w.finish().unwrap();
    Arc::new(Dataset::open(dir, "train").unwrap())
}

#[test]
fn corrupt_image_stops_with_its_location_or_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ds = with_corrupt_row(dir.path(), 5);
    let c = DataConfig {
        image_size: 8,
        ..cfg()
    };
    // One batch covering the whole epoch, so the corrupt row is certainly in it.
    let mut strict = PairLoader::new(ds.clone(), &c, plan(0, 1, 12), Cursor::default()).unwrap();
    let err = strict
        .next_batch()
        .err()
        .expect("corrupt row must fail")
        .to_string();
    assert!(
        err.contains("train-00000-of-00001.parquet row 5 column image"),
        "{err}"
    );

    let skip = DataConfig {
        skip_corrupt: true,
        ..c
    };
    let mut lenient = PairLoader::new(ds, &skip, plan(0, 1, 12), Cursor::default()).unwrap();
    let b = lenient.next_batch().unwrap();
    assert!(b.pairs.len() < 12 && b.anchor.dims()[0] == b.pairs.len());
    let skipped = lenient.skipped();
    assert!(
        !skipped.is_empty() && skipped.iter().all(|s| s.contains("row 5 column image")),
        "{skipped:?}"
    );
}

#[test]
fn too_small_for_one_batch_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 3, 2);
    let err = PairLoader::new(ds, &cfg(), plan(0, 2, 8), Cursor::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("too few for one batch of 8 on each of 2 ranks"),
        "{err}"
    );
}

#[test]
fn sequential_loader_visits_every_item_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ds = synth(dir.path(), 7, 5); // 35 items over several row groups and shards
    let mut seen = Vec::new();
    for batch in SequentialLoader::new(ds.clone(), &cfg(), 8).unwrap() {
        let batch = batch.unwrap();
        assert_eq!(batch.images.dims()[0], batch.items.len());
        seen.extend(batch.items);
    }
    assert_eq!(seen, (0..35).collect::<Vec<_>>());
}

#[test]
fn block_cache_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        styles: 8,
        test_styles: 0,
        per_style: 8,
        size: 16,
        seed: 1,
        rows_per_group: 8,
        ..Default::default()
    };
    generate(dir.path(), &cfg, &|_, _| {}).unwrap();
    let ds = Dataset::open(dir.path(), "train").unwrap();
    let block_bytes = |b: u32| -> usize {
        ds.read_block(b)
            .unwrap()
            .iter()
            .map(|r| r.as_ref().unwrap().len())
            .sum()
    };
    let sizes: Vec<usize> = (0..ds.num_blocks() as u32).map(block_bytes).collect();
    assert!(sizes.len() >= 4, "need several blocks, got {}", sizes.len());
    // Room for about two blocks: reading all of them must evict, and never exceed the budget.
    let budget = 2 * sizes.iter().max().unwrap();
    let cache = BlockCache::new(budget);
    for b in 0..ds.num_blocks() as u32 {
        let rows = cache.get(&ds, b).unwrap();
        assert_eq!(rows.len(), ds.block_len(b));
        assert!(
            cache.bytes() <= budget,
            "cache holds {} bytes over its budget of {budget}",
            cache.bytes()
        );
    }
    assert!(
        cache.bytes() < sizes.iter().sum::<usize>(),
        "nothing was evicted"
    );
}
