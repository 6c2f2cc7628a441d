//! Paired-style sampling for the contrastive objective (DESIGN.md, "Style codebook": pairs
//! (x1, x2) with label y, 1 = same style) and for the DiT's same-style pairs.
//!
//! An epoch's order is a pure function of (seed, epoch): blocks (parquet row groups) are
//! shuffled, grouped into windows of `window_blocks`, and the items of each window shuffled.
//! Rank r of a world of w takes positions r, r + w, r + 2w, ... of that order, so ranks read
//! disjoint anchors. The partner of the anchor at position p is drawn from a generator seeded
//! by (seed, epoch, p), preferring the anchor's own window so reads stay in cached blocks.
//! Because everything is derived from positions, a [`Cursor`] of (epoch, batch) is enough to
//! resume on the next batch with the same pairs an uninterrupted run would have seen.

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::rng::{mix, Rng};

/// Where a loader is in its stream: the next batch to produce. Saved in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    /// Index of the next batch within the epoch (this rank's batches).
    pub batch: u64,
}

/// One training pair: `anchor` and `other` are item indices into the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub anchor: usize,
    pub other: usize,
    /// true = same style (y = 1).
    pub same_style: bool,
    /// Seed for this pair's augmentations (random crops), derived from its position.
    pub seed: u64,
}

/// Sampling parameters that do not change during a run.
#[derive(Debug, Clone)]
pub struct PairPlan {
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    pub batch_size: usize,
    pub negative_fraction: f32,
    pub window_blocks: usize,
}

/// The anchors of one epoch for one rank, and what is needed to draw their partners.
pub struct EpochPlan {
    pub epoch: u64,
    /// This rank's anchors, in order.
    anchors: Vec<usize>,
    /// Position of each anchor in the global order (its pair seed derives from it).
    positions: Vec<u64>,
    /// Window of each block in this epoch's order (block -> window).
    window_of_block: Vec<u32>,
    /// Items of each window, by style: window -> list of (style, item).
    window_items: Vec<Vec<(u32, usize)>>,
}

impl PairPlan {
    /// The epoch's order. Its length is the same on every rank (the global order is cut to a
    /// multiple of the world size), so ranks stay in step.
    pub fn epoch(&self, ds: &Dataset, epoch: u64) -> EpochPlan {
        let mut rng = Rng::new(mix(mix(self.seed, 0xe90c), epoch));
        let mut blocks: Vec<u32> = (0..ds.num_blocks() as u32).collect();
        rng.shuffle(&mut blocks);
        let mut items_of_block: Vec<Vec<usize>> = vec![Vec::new(); ds.num_blocks()];
        for (i, item) in ds.items.iter().enumerate() {
            items_of_block[item.block as usize].push(i);
        }
        let mut window_of_block = vec![0u32; ds.num_blocks()];
        let mut order = Vec::with_capacity(ds.items.len());
        let mut window_items = Vec::new();
        for (w, window) in blocks.chunks(self.window_blocks.max(1)).enumerate() {
            let start = order.len();
            for &b in window {
                window_of_block[b as usize] = w as u32;
                order.extend_from_slice(&items_of_block[b as usize]);
            }
            rng.shuffle(&mut order[start..]);
            window_items.push(
                order[start..]
                    .iter()
                    .map(|&i| (ds.items[i].style, i))
                    .collect(),
            );
        }
        let usable = order.len() / self.world * self.world;
        let positions: Vec<u64> = (self.rank..usable)
            .step_by(self.world)
            .map(|p| p as u64)
            .collect();
        let anchors = positions.iter().map(|&p| order[p as usize]).collect();
        EpochPlan {
            epoch,
            anchors,
            positions,
            window_of_block,
            window_items,
        }
    }

    /// Full batches per epoch for this rank (a last partial batch is dropped).
    pub fn batches_per_epoch(&self, plan: &EpochPlan) -> u64 {
        (plan.anchors.len() / self.batch_size) as u64
    }

    /// The pairs of batch `batch` of `plan`.
    pub fn batch(
        &self,
        ds: &Dataset,
        by_style: &[Vec<usize>],
        plan: &EpochPlan,
        batch: u64,
    ) -> Vec<Pair> {
        let lo = batch as usize * self.batch_size;
        (lo..lo + self.batch_size)
            .map(|k| {
                let (anchor, pos) = (plan.anchors[k], plan.positions[k]);
                let seed = mix(mix(mix(self.seed, 0x9a1e), plan.epoch), pos);
                let mut rng = Rng::new(seed);
                let same_style = !rng.chance(self.negative_fraction);
                let other = self.partner(ds, by_style, plan, anchor, same_style, &mut rng);
                Pair {
                    anchor,
                    other,
                    same_style,
                    seed,
                }
            })
            .collect()
    }

    /// A partner of the requested kind: from the anchor's window when it has one, else from the
    /// whole dataset. `Dataset::validate_pairs` guarantees both kinds exist.
    fn partner(
        &self,
        ds: &Dataset,
        by_style: &[Vec<usize>],
        plan: &EpochPlan,
        anchor: usize,
        same_style: bool,
        rng: &mut Rng,
    ) -> usize {
        let style = ds.items[anchor].style;
        let window =
            &plan.window_items[plan.window_of_block[ds.items[anchor].block as usize] as usize];
        let fits = |&(s, i): &(u32, usize)| i != anchor && (s == style) == same_style;
        let local: Vec<usize> = window.iter().filter(|e| fits(e)).map(|&(_, i)| i).collect();
        if !local.is_empty() {
            return *rng.pick(&local);
        }
        if same_style {
            let mates: Vec<usize> = by_style[style as usize]
                .iter()
                .copied()
                .filter(|&i| i != anchor)
                .collect();
            return *rng.pick(&mates);
        }
        // Rejection sampling over all items: every try succeeds with probability >= 1/2 unless
        // one style dominates, so the bound is only a guard against a degenerate dataset.
        for _ in 0..10_000 {
            let i = rng.below(ds.items.len() as u64) as usize;
            if ds.items[i].style != style {
                return i;
            }
        }
        by_style
            .iter()
            .enumerate()
            .find(|(s, v)| *s as u32 != style && !v.is_empty())
            .map(|(_, v)| v[0])
            .unwrap_or(anchor)
    }
}
