//! Atomic publication of files the data layer writes (DESIGN.md, "Checkpoints": written to a
//! temporary name, synced, renamed): a reader either sees the old file or the complete new
//! one, never a half-written file under the final name. Used by the image shard writer
//! ([`crate::shard_writer`]), the index-sequence shards and `freq.json` ([`crate::indices`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DataError;

/// `DIR/.NAME.tmp`: a hidden sibling of `path`, which dataset and index readers skip (they
/// ignore hidden files and anything not ending in `.parquet`).
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

/// Flushes `file` (written at `path`) to disk, so the rename that publishes it cannot
/// outlive its contents after a crash.
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<(), DataError> {
    file.sync_all().map_err(|e| DataError::io(path, e))
}

/// Renames the synced `tmp` to `path` (replacing an existing file) and, best effort, syncs
/// the directory so the rename itself persists (not possible on every platform). On error
/// `tmp` is removed.
pub(crate) fn publish(tmp: &Path, path: &Path) -> Result<(), DataError> {
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(DataError::io(path, e));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: hidden temporary sibling, sync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = tmp_sibling(path);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).map(|()| f))
        .map_err(|e| DataError::io(&tmp, e))
        .and_then(|f| sync_file(&f, &tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    publish(&tmp, path)
}
