//! Which files make up a split of index shards (format in [`crate::indices`]): split names,
//! the `{split}-{k:05}-of-{n:05}.parquet` file names, and the check that a split's files
//! form one complete `k = 0..n` set, so an interrupted extract, or the leftovers of two
//! runs, is an error naming the file rather than a silently short or mixed training set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::INDICES_DIR;
use crate::error::DataError;
use crate::hf::split_of_file_name;
use crate::shard_writer::shard_file_name;

/// Split names follow Hugging Face (`train`, `test`, `validation`): letters, digits, `_` and
/// `.` (not first); a `-` would make the `{split}-{k}-of-{n}` file names ambiguous.
pub(crate) fn check_split(dir: &Path, split: &str) -> Result<(), DataError> {
    // A leading `.` would hide the shards from readers, which skip hidden files.
    let ok = !split.is_empty()
        && !split.starts_with('.')
        && split
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(DataError::Shards {
            path: dir.to_path_buf(),
            detail: format!("split name `{split}`: use letters, digits, `_` or `.` (e.g. `train`)"),
        })
    }
}

/// `"train-00001-of-00003.parquet"` -> `Some(("train", 1, 3))`; None for any other name.
pub(crate) fn parse_shard_name(name: &str) -> Option<(&str, usize, usize)> {
    let stem = name.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let (split, k, of, n) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<usize>().ok())
            .flatten()
    };
    let (k, n) = (number(k)?, number(n)?);
    (parts.next().is_none() && of == "of" && !split.is_empty() && k < n).then_some((split, k, n))
}

/// `dir/indices` when it exists, else `dir` itself.
pub(crate) fn indices_folder(dir: &Path) -> Result<PathBuf, DataError> {
    let meta = std::fs::metadata(dir).map_err(|e| DataError::io(dir, e))?;
    let nested = dir.join(INDICES_DIR);
    if nested.is_dir() {
        Ok(nested)
    } else if meta.is_dir() {
        Ok(dir.to_path_buf())
    } else {
        Err(DataError::Shards {
            path: dir.to_path_buf(),
            detail: format!("not a folder: expected a run folder holding `{INDICES_DIR}/`"),
        })
    }
}

/// The shards of `split` in `folder`, in order, checked to be exactly `k = 0..n` of one `n`.
pub(crate) fn split_files(folder: &Path, split: &str) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(folder).map_err(|e| DataError::io(folder, e))?;
    let mut splits = BTreeMap::<String, Vec<(usize, usize, PathBuf)>>::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(folder, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".parquet") || !path.is_file() {
            continue;
        }
        match parse_shard_name(name) {
            Some((s, k, n)) => splits.entry(s.to_string()).or_default().push((k, n, path)),
            None if split_of_file_name(name) == split => {
                return Err(DataError::Shards {
                    path,
                    detail: format!(
                        "not named `{split}-KKKKK-of-NNNNN.parquet` like an index shard"
                    ),
                })
            }
            None => {}
        }
    }
    let Some(mut shards) = splits.remove(split) else {
        let present: Vec<&str> = splits.keys().map(String::as_str).collect();
        return Err(DataError::Empty {
            path: folder.to_path_buf(),
            detail: format!(
                "no index shards of split `{split}` (splits present: {})",
                if present.is_empty() {
                    "none".into()
                } else {
                    present.join(", ")
                }
            ),
        });
    };
    shards.sort();
    let count = shards[0].1;
    for (_, n, path) in &shards {
        if *n != count {
            return Err(DataError::Shards {
                path: path.clone(),
                detail: format!(
                    "says {n} shards but {} says {count}: leftovers of two extract runs?",
                    shards[0].2.display()
                ),
            });
        }
    }
    if let Some(missing) = (0..count).find(|&k| shards.get(k).map(|s| s.0) != Some(k)) {
        return Err(DataError::Shards {
            path: folder.join(shard_file_name(split, missing, count)),
            detail: format!(
                "missing: split `{split}` has {} of its {count} shards (an interrupted extract?)",
                shards.len()
            ),
        });
    }
    Ok(shards.into_iter().map(|(_, _, path)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_parse_only_in_the_k_of_n_form() {
        assert_eq!(
            parse_shard_name("train-00001-of-00003.parquet"),
            Some(("train", 1, 3))
        );
        assert_eq!(parse_shard_name("train-00003-of-00003.parquet"), None);
        assert_eq!(parse_shard_name("train.parquet"), None);
        assert_eq!(parse_shard_name("train-1-of-x.parquet"), None);
        assert_eq!(parse_shard_name("a-b-00000-of-00001.parquet"), None);
    }

    #[test]
    fn split_names_without_dashes_are_accepted() {
        assert!(check_split(Path::new("d"), "train").is_ok());
        assert!(check_split(Path::new("d"), "held_out.v2").is_ok());
        assert!(check_split(Path::new("d"), "train-a").is_err());
        assert!(check_split(Path::new("d"), "").is_err());
        assert!(check_split(Path::new("d"), "..").is_err());
        assert!(check_split(Path::new("d"), "../x").is_err());
    }
}
