//! `RUN/freq.json`: how often each codebook index occurs over a split's sequences (DESIGN.md,
//! "Autoregressive style generator": f(i) in the sampler's high-frequency suppression
//! s(i) = 1 if f(i) < tau else exp(-k (f(i) - tau)), tau in raw counts, paper default 90000).
//!
//! Written atomically by `trainer extract`, read by `trainer ar`/`sample-style`. Reading
//! checks that the file agrees with itself: one count per code, counts summing to
//! `tokens_counted` (a hand-edited or truncated file is refused, naming it).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::IndexSet;
use crate::atomic;
use crate::error::DataError;

/// Index frequencies over a set of sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFreq {
    /// Codebook size; `counts.len()`.
    pub codes: u32,
    /// Indices counted: sequences x tokens; the sum of `counts`.
    pub tokens_counted: u64,
    /// `counts[i]` = occurrences of index i.
    pub counts: Vec<u64>,
    /// What made the sequences counted (the shards' `cotyle.made_by`).
    pub made_by: serde_json::Value,
}

impl IndexFreq {
    /// Counts every index of `set`.
    pub fn from_set(set: &IndexSet) -> IndexFreq {
        let mut counts = vec![0u64; set.codes() as usize];
        for &i in set.indices() {
            // IndexSet::open checked every index against codes().
            counts[usize::from(i)] += 1;
        }
        IndexFreq {
            codes: set.codes(),
            tokens_counted: set.indices().len() as u64,
            counts,
            made_by: set.made_by().clone(),
        }
    }

    /// Writes `path` atomically (temporary sibling, sync, rename), after the same checks as
    /// [`IndexFreq::read`] so an inconsistent file is never produced.
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        self.check(path)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| DataError::Json {
            file: path.to_path_buf(),
            detail: format!("cannot serialise: {e}"),
        })?;
        atomic::write_atomic(path, &json)
    }

    /// Reads and checks `path`: `counts` has `codes` entries summing to `tokens_counted`.
    pub fn read(path: &Path) -> Result<IndexFreq, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let freq: IndexFreq = serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
            file: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        freq.check(path)?;
        Ok(freq)
    }

    /// Frequency of index `i` (0 for an index outside the codebook).
    pub fn count(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    fn check(&self, path: &Path) -> Result<(), DataError> {
        let bad = |detail: String| DataError::Json {
            file: path.to_path_buf(),
            detail,
        };
        if self.codes == 0 || self.codes > super::MAX_CODES {
            return Err(bad(format!(
                "`codes` = {}: must be 1..={}",
                self.codes,
                super::MAX_CODES
            )));
        }
        if self.counts.len() != self.codes as usize {
            return Err(bad(format!(
                "`counts` has {} entries but `codes` = {}",
                self.counts.len(),
                self.codes
            )));
        }
        // u128: a sum of u64 counts cannot overflow it.
        let sum: u128 = self.counts.iter().map(|&c| u128::from(c)).sum();
        if sum != u128::from(self.tokens_counted) {
            return Err(bad(format!(
                "`counts` sum to {sum} but `tokens_counted` = {}",
                self.tokens_counted
            )));
        }
        Ok(())
    }
}
