//! Batches of decoded, transformed images as candle tensors.
//!
//! [`PairLoader`] serves training: a producer thread follows the [`PairPlan`], fetches the
//! blocks (parquet row groups) each batch needs through a byte-bounded [`BlockCache`], decodes
//! and transforms the images in parallel on its own rayon pool, and keeps at most `prefetch`
//! batches ready in a bounded channel. [`SequentialLoader`] serves evaluation and benchmarks:
//! every item once, in dataset order, one block in memory at a time.
//!
//! Memory is bounded by the cache budget plus `prefetch` batches, whatever the dataset size.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver};
use rayon::prelude::*;

use crate::config::DataConfig;
use crate::dataset::{decode_rgb_lazy, Dataset};
use crate::error::DataError;
use crate::pairs::{Cursor, Pair, PairPlan};
use crate::transform::Transform;

type Block = Arc<Vec<Result<Vec<u8>, DataError>>>;

/// Least-recently-used cache of blocks' encoded image bytes, bounded in bytes.
pub struct BlockCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    blocks: HashMap<u32, (Block, usize)>,
    /// Recency order, oldest first.
    order: VecDeque<u32>,
    bytes: usize,
}

impl BlockCache {
    pub fn new(budget_bytes: usize) -> BlockCache {
        BlockCache {
            budget: budget_bytes,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// Encoded bytes currently held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("cache lock").bytes
    }

    /// The block, read from the dataset on a miss. Reads happen outside the lock.
    pub fn get(&self, ds: &Dataset, block: u32) -> Result<Block, DataError> {
        {
            let mut c = self.inner.lock().expect("cache lock");
            if let Some((b, _)) = c.blocks.get(&block) {
                let b = b.clone();
                c.order.retain(|&k| k != block);
                c.order.push_back(block);
                return Ok(b);
            }
        }
        let rows = Arc::new(ds.read_block(block)?);
        let size: usize = rows.iter().map(|r| r.as_ref().map_or(0, Vec::len)).sum();
        let mut c = self.inner.lock().expect("cache lock");
        if let std::collections::hash_map::Entry::Vacant(slot) = c.blocks.entry(block) {
            slot.insert((rows.clone(), size));
            c.order.push_back(block);
            c.bytes += size;
            // Evict the oldest, but never the block just read (a block larger than the budget
            // still has to be served once).
            while c.bytes > self.budget && c.order.len() > 1 {
                let Some(old) = c.order.pop_front() else {
                    break;
                };
                if let Some((_, n)) = c.blocks.remove(&old) {
                    c.bytes -= n;
                }
            }
        }
        Ok(rows)
    }
}

/// Decodes and transforms `items` in parallel into one (N, 3, S, S) buffer. Returns the buffer
/// and, per item, whether it decoded; with `skip_corrupt` off the first failure is the error.
fn decode_batch(
    ds: &Dataset,
    cache: &BlockCache,
    transform: &Transform,
    items: &[(usize, u64)],
    skip_corrupt: bool,
) -> Result<(Vec<f32>, Vec<Option<String>>), DataError> {
    // Fetch each distinct block once (in parallel across blocks), then decode per item.
    let mut wanted: Vec<u32> = items.iter().map(|&(i, _)| ds.items[i].block).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let fetched: Vec<(u32, Block)> = wanted
        .par_iter()
        .map(|&b| cache.get(ds, b).map(|rows| (b, rows)))
        .collect::<Result<_, _>>()?;
    let blocks: HashMap<u32, Block> = fetched.into_iter().collect();
    let len = transform.output_len();
    let mut buf = vec![0f32; items.len() * len];
    let failures: Vec<Result<Option<String>, DataError>> = buf
        .par_chunks_mut(len)
        .zip(items.par_iter())
        .map(|(out, &(item, crop_seed))| {
            let it = &ds.items[item];
            let decoded = match &blocks[&it.block][it.offset as usize] {
                Ok(bytes) => decode_rgb_lazy(bytes, || ds.locate(item)),
                Err(e) => Err(e.clone()),
            };
            match decoded {
                Ok(img) => {
                    transform.apply_into(&img, crop_seed, out);
                    Ok(None)
                }
                Err(e) if skip_corrupt => Ok(Some(e.to_string())),
                Err(e) => Err(e),
            }
        })
        .collect();
    let failures = failures.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((buf, failures))
}

/// A batch of style pairs. Pairs whose image failed to decode under `skip_corrupt` are
/// dropped, so `pairs.len()` may be below the batch size.
pub struct PairBatch {
    /// (B, 3, S, S)
    pub anchor: Tensor,
    /// (B, 3, S, S)
    pub other: Tensor,
    /// (B,) f32: 1 where both images share a style, else 0.
    pub label: Tensor,
    pub pairs: Vec<Pair>,
    /// The cursor *after* this batch: store it in a checkpoint to resume with the next one.
    pub next: Cursor,
}

/// Prefetching loader of style pairs. Dropping it stops the producer thread.
pub struct PairLoader {
    rx: Option<Receiver<Result<PairBatch, DataError>>>,
    worker: Option<JoinHandle<()>>,
    skipped: Arc<Mutex<Vec<String>>>,
    pub batches_per_epoch: u64,
}

impl PairLoader {
    /// Starts producing from `start` (a fresh run passes `Cursor::default()`).
    pub fn new(
        ds: Arc<Dataset>,
        cfg: &DataConfig,
        plan: PairPlan,
        start: Cursor,
    ) -> Result<PairLoader, DataError> {
        ds.validate_pairs()?;
        let first = plan.epoch(&ds, start.epoch);
        let batches_per_epoch = plan.batches_per_epoch(&first);
        if batches_per_epoch == 0 {
            return Err(DataError::Empty {
                path: ds.root.clone(),
                detail: format!(
                    "split `{}` has {} images: too few for one batch of {} on each of {} ranks",
                    ds.split,
                    ds.items.len(),
                    plan.batch_size,
                    plan.world
                ),
            });
        }
        let pool = build_pool(cfg.threads)?;
        let transform = Transform::from_config(cfg, true);
        let cache = BlockCache::new(cfg.cache_mb << 20);
        let skip = cfg.skip_corrupt;
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = bounded(cfg.prefetch);
        let log = skipped.clone();
        let worker = std::thread::Builder::new()
            .name("pair-loader".into())
            .spawn(move || {
                let by_style = ds.items_of_style();
                let (mut epoch_plan, mut cursor) = (first, start);
                loop {
                    if cursor.batch >= batches_per_epoch {
                        cursor = Cursor {
                            epoch: cursor.epoch + 1,
                            batch: 0,
                        };
                        epoch_plan = plan.epoch(&ds, cursor.epoch);
                    }
                    let pairs = plan.batch(&ds, &by_style, &epoch_plan, cursor.batch);
                    cursor.batch += 1;
                    let made = pool
                        .install(|| pair_batch(&ds, &cache, &transform, pairs, skip, cursor, &log));
                    let failed = made.is_err();
                    if tx.send(made).is_err() || failed {
                        return; // receiver gone, or the error is delivered: stop
                    }
                }
            })
            .map_err(|e| DataError::Io {
                path: "pair-loader thread".into(),
                error: e,
            })?;
        Ok(PairLoader {
            rx: Some(rx),
            worker: Some(worker),
            skipped,
            batches_per_epoch,
        })
    }

    /// The next batch, waiting for the producer if it is behind.
    pub fn next_batch(&mut self) -> Result<PairBatch, DataError> {
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        rx.recv().unwrap_or_else(|_| {
            Err(DataError::BadRow {
                at: "pair loader".into(),
                detail: "the loader thread stopped".into(),
            })
        })
    }

    /// Locations and reasons of every row skipped so far under `skip_corrupt`.
    pub fn skipped(&self) -> Vec<String> {
        self.skipped.lock().expect("skip log").clone()
    }
}

impl Drop for PairLoader {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, so it returns.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn pair_batch(
    ds: &Dataset,
    cache: &BlockCache,
    transform: &Transform,
    pairs: Vec<Pair>,
    skip: bool,
    next: Cursor,
    log: &Mutex<Vec<String>>,
) -> Result<PairBatch, DataError> {
    // Anchors first, then partners; crops of the two differ through the seed.
    let items: Vec<(usize, u64)> = pairs
        .iter()
        .map(|p| (p.anchor, p.seed))
        .chain(pairs.iter().map(|p| (p.other, p.seed ^ 0x07e4)))
        .collect();
    let (buf, failures) = decode_batch(ds, cache, transform, &items, skip)?;
    let n = pairs.len();
    let len = transform.output_len();
    let keep: Vec<usize> = (0..n)
        .filter(|&i| failures[i].is_none() && failures[n + i].is_none())
        .collect();
    {
        let mut log = log.lock().expect("skip log");
        log.extend(failures.into_iter().flatten());
    }
    let gather = |half: usize| -> Vec<f32> {
        let mut v = Vec::with_capacity(keep.len() * len);
        for &i in &keep {
            v.extend_from_slice(&buf[(half * n + i) * len..(half * n + i + 1) * len]);
        }
        v
    };
    let s = transform.size as usize;
    let shape = (keep.len(), 3, s, s);
    let tensor =
        |v: Vec<f32>| Tensor::from_vec(v, shape, &Device::Cpu).expect("buffer matches its shape");
    let labels: Vec<f32> = keep
        .iter()
        .map(|&i| if pairs[i].same_style { 1.0 } else { 0.0 })
        .collect();
    let pairs: Vec<Pair> = keep.iter().map(|&i| pairs[i]).collect();
    Ok(PairBatch {
        anchor: tensor(gather(0)),
        other: tensor(gather(1)),
        label: Tensor::from_vec(labels, pairs.len(), &Device::Cpu).expect("label shape"),
        pairs,
        next,
    })
}

fn build_pool(threads: usize) -> Result<rayon::ThreadPool, DataError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("decode-{i}"))
        .build()
        .map_err(|e| DataError::BadRow {
            at: "decode thread pool".into(),
            detail: e.to_string(),
        })
}

/// A batch of single images in dataset order.
pub struct ImageBatch {
    /// (B, 3, S, S)
    pub images: Tensor,
    /// Item indices into the dataset, one per image.
    pub items: Vec<usize>,
}

/// Every item once, in order, centre-cropped; for evaluation, extraction and benchmarks.
pub struct SequentialLoader {
    ds: Arc<Dataset>,
    transform: Transform,
    cache: BlockCache,
    pool: rayon::ThreadPool,
    batch_size: usize,
    next_item: usize,
    skip_corrupt: bool,
    pub skipped: Vec<String>,
}

impl SequentialLoader {
    pub fn new(
        ds: Arc<Dataset>,
        cfg: &DataConfig,
        batch_size: usize,
    ) -> Result<SequentialLoader, DataError> {
        Ok(SequentialLoader {
            ds,
            transform: Transform::from_config(cfg, false),
            // Items are visited block by block, so one or two blocks is all it needs.
            cache: BlockCache::new(0),
            pool: build_pool(cfg.threads)?,
            batch_size: batch_size.max(1),
            next_item: 0,
            skip_corrupt: cfg.skip_corrupt,
            skipped: Vec::new(),
        })
    }

    /// Like [`SequentialLoader::new`] with an explicit transform (benchmarks).
    pub fn with_transform(mut self, transform: Transform) -> SequentialLoader {
        self.transform = transform;
        self
    }
}

impl Iterator for SequentialLoader {
    type Item = Result<ImageBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_item >= self.ds.items.len() {
            return None;
        }
        // Dataset items are in block order, so a contiguous range touches few blocks.
        let end = (self.next_item + self.batch_size).min(self.ds.items.len());
        let items: Vec<(usize, u64)> = (self.next_item..end).map(|i| (i, 0)).collect();
        self.next_item = end;
        let (ds, cache, tf) = (&self.ds, &self.cache, &self.transform);
        let skip = self.skip_corrupt;
        let made = self
            .pool
            .install(|| decode_batch(ds, cache, tf, &items, skip));
        let (buf, failures) = match made {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let len = tf.output_len();
        let mut kept = Vec::with_capacity(items.len());
        let mut data = Vec::with_capacity(buf.len());
        for (k, failure) in failures.into_iter().enumerate() {
            match failure {
                None => {
                    kept.push(items[k].0);
                    data.extend_from_slice(&buf[k * len..(k + 1) * len]);
                }
                Some(why) => self.skipped.push(why),
            }
        }
        let s = tf.size as usize;
        let images = Tensor::from_vec(data, (kept.len(), 3, s, s), &Device::Cpu)
            .expect("buffer matches its shape");
        Some(Ok(ImageBatch {
            images,
            items: kept,
        }))
    }
}
