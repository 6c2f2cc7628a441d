//! The AR stage's data: the `data` section (where `trainer extract` wrote the index sequences)
//! and [`SequenceBatches`], shuffled batches of whole sequences with a resumable cursor.
//!
//! Order: an endless stream of epochs, each a permutation of the split drawn from
//! `Rng::new(mix(seed, epoch))` (`data::rng`), read `batch` sequences at a time; a batch may
//! straddle two epochs, so no sequence is dropped. The cursor (epoch, offset) is all the state,
//! so a resumed run reads exactly the batches an uninterrupted one would.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{Device, Tensor};
use data::indices::IndexSet;
use data::rng::{mix, Rng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexDataConfig {
    /// The codebook run folder `trainer extract` wrote into: `indices/*.parquet` and
    /// `freq.json`.
    pub indices: PathBuf,
    pub train_split: String,
    /// Held-out sequences (the codebook's held-out styles).
    pub eval_split: String,
    /// Held-out sequences per evaluation; 0 = all.
    pub eval_max: usize,
}

impl Default for IndexDataConfig {
    fn default() -> Self {
        IndexDataConfig {
            indices: PathBuf::from("checkpoints/codebook/demo"),
            train_split: "train".into(),
            eval_split: "test".into(),
            eval_max: 0,
        }
    }
}

impl IndexDataConfig {
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut r = crate::config::rules::Rules::new(prefix);
        r.need(
            !self.train_split.is_empty(),
            "train_split",
            "must not be empty",
        );
        r.need(
            !self.eval_split.is_empty(),
            "eval_split",
            "must not be empty",
        );
        r.into_vec()
    }

    /// `freq.json` of the training split.
    pub fn freq(&self) -> PathBuf {
        self.indices.join(data::indices::FREQ_FILE)
    }
}

/// Where the next batch starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceCursor {
    pub epoch: u64,
    /// Sequences of this epoch already read.
    pub offset: usize,
}

/// Shuffled batches of whole sequences of one split.
pub struct SequenceBatches<'a> {
    set: &'a IndexSet,
    seed: u64,
    batch: usize,
    cursor: SequenceCursor,
    /// The permutation of `cursor.epoch`.
    order: Vec<usize>,
}

impl<'a> SequenceBatches<'a> {
    pub fn new(set: &'a IndexSet, seed: u64, batch: usize, cursor: SequenceCursor) -> Self {
        let order = permutation(set.len(), seed, cursor.epoch);
        SequenceBatches {
            set,
            seed,
            batch,
            cursor,
            order,
        }
    }

    /// The next `batch` sequences, (B, L) u32 on `dev`, and the cursor after them.
    pub fn next_batch(&mut self, dev: &Device) -> Result<(Tensor, SequenceCursor)> {
        let len = self.set.tokens();
        let mut flat = Vec::with_capacity(self.batch * len);
        for _ in 0..self.batch {
            if self.cursor.offset == self.order.len() {
                self.cursor = SequenceCursor {
                    epoch: self.cursor.epoch + 1,
                    offset: 0,
                };
                self.order = permutation(self.set.len(), self.seed, self.cursor.epoch);
            }
            let row = self.set.sequence(self.order[self.cursor.offset]);
            flat.extend(row.iter().map(|&i| u32::from(i)));
            self.cursor.offset += 1;
        }
        Ok((Tensor::from_vec(flat, (self.batch, len), dev)?, self.cursor))
    }
}

/// Epoch `epoch`'s order of `n` sequences.
fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(mix(seed, epoch)).shuffle(&mut order);
    order
}

/// Sequences `from..from + n` of a split in file order, (n, L) u32: held-out evaluation.
pub fn sequences(set: &IndexSet, from: usize, n: usize, dev: &Device) -> Result<Tensor> {
    let len = set.tokens();
    let mut flat = Vec::with_capacity(n * len);
    for i in from..from + n {
        flat.extend(set.sequence(i).iter().map(|&x| u32::from(x)));
    }
    Ok(Tensor::from_vec(flat, (n, len), dev)?)
}

/// Entropy (nats) of the unigram distribution of `counts`: the loss of a model that ignores
/// context, the bar the AR model must clear.
pub fn unigram_entropy(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use data::indices::IndexShardWriter;

    fn set(dir: &std::path::Path, n: usize) -> IndexSet {
        let mut w = IndexShardWriter::create(dir, "train", serde_json::json!({}), 16, 3).unwrap();
        for i in 0..n {
            let s = (i % 16) as u16;
            w.push(&format!("img{i}"), "s", &[s, s, s]).unwrap();
        }
        w.finish().unwrap();
        IndexSet::open(dir, "train").unwrap()
    }

    fn rows(t: &Tensor) -> Vec<u32> {
        t.narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn epochs_are_permutations_and_a_resumed_cursor_continues_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let set = set(dir.path(), 10);
        let dev = Device::Cpu;
        let mut b = SequenceBatches::new(&set, 5, 4, SequenceCursor::default());
        let mut seen = Vec::new();
        let mut cursors = Vec::new();
        for _ in 0..5 {
            let (t, c) = b.next_batch(&dev).unwrap();
            assert_eq!(t.dims(), [4, 3]);
            seen.extend(rows(&t));
            cursors.push(c);
        }
        // 20 sequences = two epochs, each a permutation of the 10 (values i % 16 = i).
        for epoch in seen.chunks(10) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..10).collect::<Vec<u32>>());
        }
        assert_ne!(seen[..10], seen[10..], "epochs reshuffle");
        assert_eq!(
            cursors[2],
            SequenceCursor {
                epoch: 1,
                offset: 2
            }
        );
        // Resuming after batch 2 reads batches 3.. again.
        let mut r = SequenceBatches::new(&set, 5, 4, cursors[1]);
        let (t, _) = r.next_batch(&dev).unwrap();
        assert_eq!(rows(&t), seen[8..12]);
    }

    #[test]
    fn unigram_entropy_of_uniform_counts_is_log_n() {
        assert!((unigram_entropy(&[5, 5, 5, 5]) - 4f64.ln()).abs() < 1e-12);
        assert_eq!(unigram_entropy(&[7, 0, 0]), 0.0);
    }
}
