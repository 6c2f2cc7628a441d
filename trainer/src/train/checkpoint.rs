//! Checkpoints on disk (DESIGN.md, "Rules of the house": checkpoints, resume):
//!
//! ```text
//! RUN/step-N/{model.safetensors, optim.safetensors, state.json, config.yaml}
//! RUN/final/...           the same files, written by `save_final`, never pruned
//! RUN/latest              one line, `step-N`: the checkpoint `--resume latest` takes
//! ```
//!
//! A save writes everything into `RUN/.tmp-step-N-<pid>`, fsyncs each file and the folder,
//! renames it to `step-N`, fsyncs RUN, and only then points `latest` at it (tmp + rename).
//! A crash at any point leaves the previous checkpoint and `latest` as they were; the
//! leftover `.tmp-*` is ignored by `list`/`load` and removed by the next save.
//!
//! `state.json` records each other file's length and CRC-32C, and `load` checks them before
//! parsing, so a truncated or damaged file is an error naming it (and the checkpoint to fall
//! back to) rather than garbage weights or a parser panic. Tensors load onto the CPU; the
//! caller moves them to its device.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Bumped when the layout changes in a way an older reader would misread.
const FORMAT: u32 = 1;
const MODEL: &str = "model.safetensors";
const OPTIM: &str = "optim.safetensors";
const CONFIG: &str = "config.yaml";
const STATE: &str = "state.json";
const LATEST: &str = "latest";
const FINAL: &str = "final";
/// Every temporary entry in a run dir starts with this, so one sweep removes them all.
const TMP_PREFIX: &str = ".tmp-";

/// One checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Optimiser steps taken.
    pub step: u64,
    pub model: HashMap<String, Tensor>,
    /// The optimiser's state (`AdamW::state`).
    pub optim: HashMap<String, Tensor>,
    /// The loop's own state: data cursor, RNG, metric history...
    pub state: serde_json::Value,
    /// The resolved config the run was started with.
    pub config_yaml: String,
}

/// The contents of `state.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    step: u64,
    made_by: MadeBy,
    /// File name -> what it held when written.
    files: BTreeMap<String, FileRecord>,
    state: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct MadeBy {
    program: String,
    version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct FileRecord {
    bytes: u64,
    crc32c: u32,
}

/// Writes `ck` as `run_dir/step-N`, points `latest` at it and keeps the newest `keep`
/// step folders (at least this one). Returns the step folder.
///
/// Step folders numbered above `ck.step` belong to a branch of the run abandoned by
/// resuming from an earlier checkpoint (`metrics.jsonl` drops the same steps), so they are
/// removed too, with a warning.
pub fn save(run_dir: &Path, ck: &Checkpoint, keep: usize) -> Result<PathBuf> {
    let name = format!("step-{}", ck.step);
    let dir = write_dir(run_dir, &name, ck)?;
    let tmp = run_dir.join(format!("{TMP_PREFIX}{LATEST}-{}", std::process::id()));
    write_synced(&tmp, format!("{name}\n").as_bytes())?;
    let latest = run_dir.join(LATEST);
    fs::rename(&tmp, &latest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), latest.display()))?;
    sync_dir(run_dir)?;
    prune(run_dir, ck.step, keep.max(1))?;
    Ok(dir)
}

/// Writes `ck` as `run_dir/final` (replacing an earlier one). `latest` is left alone: it
/// names what to resume from, and `final` is an end point.
pub fn save_final(run_dir: &Path, ck: &Checkpoint) -> Result<PathBuf> {
    write_dir(run_dir, FINAL, ck)
}

/// Loads a checkpoint: `path` is a checkpoint folder (`step-N`, `final`) or a run folder,
/// whose `latest` is followed. Every file is checked against `state.json` first.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let dir = checkpoint_dir(path)?;
    let state_path = dir.join(STATE);
    let text = fs::read(&state_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e}. {}",
            state_path.display(),
            fallback_hint(&dir)
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid checkpoint manifest: {e}. {}",
            state_path.display(),
            fallback_hint(&dir)
        )
    })?;
    if manifest.format > FORMAT {
        bail!(
            "{} has checkpoint format {}, this cotyle ({}) reads up to {FORMAT}: use a newer \
             cotyle",
            state_path.display(),
            manifest.format,
            env!("CARGO_PKG_VERSION")
        );
    }
    if let Some(n) = parse_step_name(&dir) {
        if n != manifest.step {
            bail!(
                "{} says step {}, but its folder is named step-{n}",
                state_path.display(),
                manifest.step
            );
        }
    }
    // Sizes first (cheap), then contents: a truncated file fails before anything big is read.
    let mut records = Vec::new();
    for name in [MODEL, OPTIM, CONFIG] {
        let rec = *manifest
            .files
            .get(name)
            .with_context(|| format!("{} has no record of `{name}`", state_path.display()))?;
        let path = dir.join(name);
        let len = fs::metadata(&path)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {}: {e}. {}",
                    path.display(),
                    fallback_hint(&dir)
                )
            })?
            .len();
        if len != rec.bytes {
            bail!(
                "{} is {len} bytes, but {} records {} bytes: the file is truncated or was \
                 changed after the checkpoint was written. {}",
                path.display(),
                state_path.display(),
                rec.bytes,
                fallback_hint(&dir)
            );
        }
        records.push((path, rec));
    }
    // One file at a time, each checked right before it is parsed and dropped after: the
    // peak is one file's bytes plus the tensors, as with candle's own `load`.
    let read_checked = |(path, rec): &(PathBuf, FileRecord)| -> Result<Vec<u8>> {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let crc = crc32c::crc32c(&bytes);
        if crc != rec.crc32c {
            bail!(
                "{} has CRC-32C {crc:08x}, but {} records {:08x}: the file is damaged. {}",
                path.display(),
                state_path.display(),
                rec.crc32c,
                fallback_hint(&dir)
            );
        }
        Ok(bytes)
    };
    let tensors = |i: usize| -> Result<HashMap<String, Tensor>> {
        let bytes = read_checked(&records[i])?;
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .with_context(|| format!("parsing {}", records[i].0.display()))
    };
    let config_yaml = String::from_utf8(read_checked(&records[2])?)
        .with_context(|| format!("{} is not UTF-8", records[2].0.display()))?;
    Ok(Checkpoint {
        step: manifest.step,
        model: tensors(0)?,
        optim: tensors(1)?,
        state: manifest.state,
        config_yaml,
    })
}

/// The checkpoint folder `--resume ARG` means: `latest` follows `run_dir/latest`; anything
/// else is a path (to a checkpoint folder or a run folder), tried as given and then inside
/// `run_dir` (so `--resume step-200` works). Contents are checked by [`load`].
pub fn resolve_resume(run_dir: &Path, arg: &str) -> Result<PathBuf> {
    if arg == LATEST {
        return follow_latest(run_dir);
    }
    let given = PathBuf::from(arg);
    if given.exists() {
        return checkpoint_dir(&given);
    }
    let inside = run_dir.join(arg);
    if inside.exists() {
        return checkpoint_dir(&inside);
    }
    bail!(
        "--resume {arg}: neither {} nor {} exists",
        given.display(),
        inside.display()
    )
}

/// The `step-N` folders of a run, oldest first (temporary and `final` folders excluded).
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries =
        fs::read_dir(run_dir).with_context(|| format!("listing {}", run_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", run_dir.display()))?;
        let path = entry.path();
        if let Some(step) = parse_step_name(&path) {
            if path.is_dir() {
                out.push((step, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `step-N` -> N; anything else (`final`, `.tmp-step-N-pid`, `step-x`) -> None.
fn parse_step_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A checkpoint folder (has `state.json`) as is; a run folder through its `latest`.
/// The checkpoint folder `path` names: itself (`step-N`, `final`), or a run folder's
/// `latest`; an error saying what `path` is instead.
pub fn checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if path.join(STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join(LATEST).is_file() {
        return follow_latest(path);
    }
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    let inside = list(path).unwrap_or_default();
    let hint = if parse_step_name(path).is_some() {
        format!(". {}", fallback_hint(path))
    } else if inside.is_empty() {
        String::new()
    } else {
        format!("; it holds {}", names(&inside))
    };
    bail!(
        "{} is neither a checkpoint (no {STATE}) nor a run folder (no `{LATEST}`){hint}",
        path.display()
    )
}

fn follow_latest(run_dir: &Path) -> Result<PathBuf> {
    let latest = run_dir.join(LATEST);
    let text = match fs::read_to_string(&latest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let found = list(run_dir).unwrap_or_default();
            if found.is_empty() {
                bail!(
                    "no checkpoint to resume: {} does not exist",
                    latest.display()
                );
            }
            bail!(
                "{} does not exist; checkpoints found: {}. Pass one with --resume PATH",
                latest.display(),
                names(&found)
            );
        }
        Err(e) => bail!("cannot read {}: {e}", latest.display()),
    };
    let name = text.trim();
    // Only a sibling `step-N`: the pointer must not lead outside the run folder.
    if parse_step_name(Path::new(name)).is_none() {
        bail!("{} holds `{name}`, expected `step-N`", latest.display());
    }
    let dir = run_dir.join(name);
    if !dir.join(STATE).is_file() {
        bail!(
            "{} names {}, which is not a complete checkpoint. {}",
            latest.display(),
            dir.display(),
            fallback_hint(&dir)
        );
    }
    Ok(dir)
}

/// Where to go when the checkpoint in `dir` is unusable: the newest older `step-N`.
fn fallback_hint(dir: &Path) -> String {
    let Some(run_dir) = dir.parent() else {
        return String::new();
    };
    let below = parse_step_name(dir).unwrap_or(u64::MAX);
    let older: Vec<_> = list(run_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|(s, p)| *s < below && p.as_path() != dir)
        .collect();
    match older.last() {
        Some((_, p)) => format!(
            "The previous checkpoint is {} (resume with --resume {}); all: {}",
            p.display(),
            p.display(),
            names(&older)
        ),
        None => format!("There is no earlier checkpoint in {}", run_dir.display()),
    }
}

fn names(found: &[(u64, PathBuf)]) -> String {
    let v: Vec<String> = found.iter().map(|(s, _)| format!("step-{s}")).collect();
    v.join(", ")
}

/// Writes the checkpoint into a temporary folder and renames it to `run_dir/name`.
fn write_dir(run_dir: &Path, name: &str, ck: &Checkpoint) -> Result<PathBuf> {
    fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    remove_stale_tmp(run_dir);
    let pid = std::process::id();
    let tmp = run_dir.join(format!("{TMP_PREFIX}{name}-{pid}"));
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;

    let mut files = BTreeMap::new();
    for (file, tensors) in [(MODEL, &ck.model), (OPTIM, &ck.optim)] {
        let path = tmp.join(file);
        candle_core::safetensors::save(tensors, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        files.insert(file.to_string(), seal(&path)?);
    }
    let path = tmp.join(CONFIG);
    write_synced(&path, ck.config_yaml.as_bytes())?;
    files.insert(CONFIG.to_string(), seal(&path)?);

    let manifest = Manifest {
        format: FORMAT,
        step: ck.step,
        made_by: MadeBy {
            program: "cotyle".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        files,
        state: ck.state.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    write_synced(&tmp.join(STATE), &json)?;
    sync_dir(&tmp)?;

    let dir = run_dir.join(name);
    // rename() cannot replace a non-empty folder: move an old one aside first (a resumed
    // run saving the same step again, or a second `final`).
    let old = run_dir.join(format!("{TMP_PREFIX}old-{name}-{pid}"));
    let replaced = dir.exists();
    if replaced {
        fs::rename(&dir, &old)
            .with_context(|| format!("moving {} aside to {}", dir.display(), old.display()))?;
    }
    fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    sync_dir(run_dir)?;
    if replaced {
        remove_logged(&old);
    }
    Ok(dir)
}

/// Fsyncs a written file and returns its length and CRC-32C, read back from disk (the
/// safetensors writer gives no hook to checksum while writing).
fn seal(path: &Path) -> Result<FileRecord> {
    // Write access: fsync on a read-only handle is refused on some systems.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    let (mut crc, mut bytes) = (0u32, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        bytes += n as u64;
    }
    Ok(FileRecord { bytes, crc32c: crc })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes renames and creations inside `dir` durable (a no-op where folders cannot be opened).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing folder {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Leftovers of saves that crashed before their rename. Only rank 0 of one run writes a
/// run folder, so every `.tmp-*` entry is stale by the time a new save starts.
fn remove_stale_tmp(run_dir: &Path) {
    let Ok(entries) = fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            tracing::info!(
                "removing {} left by an interrupted save",
                entry.path().display()
            );
            remove_logged(&entry.path());
        }
    }
}

/// Pruning failures must not stop a run: they only cost disk space.
fn remove_logged(path: &Path) {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    if let Err(e) = r {
        tracing::warn!("could not remove {}: {e}", path.display());
    }
}

/// Keeps the newest `keep` step folders up to `step`, removes those above it (see [`save`]);
/// never the one `latest` names.
fn prune(run_dir: &Path, step: u64, keep: usize) -> Result<()> {
    let latest = fs::read_to_string(run_dir.join(LATEST)).unwrap_or_default();
    let latest = latest.trim();
    let found = list(run_dir)?;
    let (newer, older): (Vec<_>, Vec<_>) = found.into_iter().partition(|(s, _)| *s > step);
    for (_, path) in &newer {
        tracing::warn!(
            "removing {}: it is past step {step}, from before this run resumed",
            path.display()
        );
    }
    let surplus = older.len().saturating_sub(keep);
    for (_, path) in newer.iter().chain(&older[..surplus]) {
        if path.file_name().and_then(|n| n.to_str()) != Some(latest) {
            remove_logged(path);
        }
    }
    Ok(())
}

/// Replaces each tensor of `fresh` (a model's fresh parameters) by the checkpoint's `trained`
/// one, which must exist with its shape; `what` names the model in errors.
pub fn restore(
    fresh: &mut HashMap<String, Tensor>,
    trained: &HashMap<String, Tensor>,
    what: &str,
) -> Result<()> {
    for (name, t) in fresh.iter_mut() {
        let Some(saved) = trained.get(name) else {
            bail!("the checkpoint has no `{name}` ({what}): was it written by another config?");
        };
        if saved.dims() != t.dims() {
            bail!(
                "checkpoint tensor `{name}` has shape {:?}, the config makes {:?}",
                saved.dims(),
                t.dims()
            );
        }
        *t = saved.to_dtype(candle_core::DType::F32)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn checkpoint(step: u64) -> Result<Checkpoint> {
        let dev = &Device::Cpu;
        // Values whose bits a lossy path would change: NaN payloads, -0, subnormals.
        let special = Tensor::new(
            &[
                f32::from_bits(0x7fc0_1234),
                -0.0,
                f32::from_bits(1),
                f32::MAX,
                step as f32,
                -1.5,
            ],
            dev,
        )?;
        let mut model = HashMap::new();
        model.insert("special".to_string(), special.reshape((2, 3))?);
        model.insert(
            "w.t".to_string(),
            Tensor::arange(0f32, 12., dev)?
                .sin()?
                .reshape((3, 4))?
                .t()?,
        );
        model.insert(
            "bf16".to_string(),
            Tensor::arange(0f32, 5., dev)?
                .exp()?
                .to_dtype(DType::BF16)?,
        );
        model.insert("f64".to_string(), Tensor::new(&[1e-300f64, 3.25], dev)?);
        model.insert("u8".to_string(), Tensor::new(&[0u8, 7, 255], dev)?);
        let mut optim = HashMap::new();
        optim.insert("step".to_string(), Tensor::new(&[step as i64], dev)?);
        optim.insert("w.t.m".to_string(), Tensor::zeros((4, 3), DType::F32, dev)?);
        Ok(Checkpoint {
            step,
            model,
            optim,
            state: serde_json::json!({"cursor": step * 32, "rng": [1, 2, 3]}),
            config_yaml: format!("train:\n  steps: {step}\n"),
        })
    }

    fn steps(run: &Path) -> Vec<u64> {
        list(run).unwrap().into_iter().map(|(s, _)| s).collect()
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn round_trip_is_bit_identical() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path().join("run");
        let ck = checkpoint(7)?;
        let dir = save(&run, &ck, 3)?;
        assert_eq!(dir, run.join("step-7"));
        let back = load(&dir)?;
        assert_eq!(back.step, 7);
        assert_eq!(back.state, ck.state);
        assert_eq!(back.config_yaml, ck.config_yaml);
        for (a, b) in [(&ck.model, &back.model), (&ck.optim, &back.optim)] {
            assert_eq!(a.len(), b.len());
            for (k, t) in a {
                let u = &b[k];
                assert_eq!((t.dtype(), t.dims()), (u.dtype(), u.dims()), "{k}");
                assert!(u.device().is_cpu());
            }
        }
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&ck.model["special"]), bits(&back.model["special"]));
        // Every dtype, bf16 included: what was loaded saves to the same bytes.
        let again = save(&tmp.path().join("again"), &back, 3)?;
        for f in [MODEL, OPTIM, CONFIG] {
            assert_eq!(fs::read(dir.join(f))?, fs::read(again.join(f))?, "{f}");
        }
        let manifest: serde_json::Value = serde_json::from_slice(&fs::read(dir.join(STATE))?)?;
        assert_eq!(manifest["format"], 1);
        assert_eq!(manifest["made_by"]["program"], "cotyle");
        assert!(manifest["files"][MODEL]["crc32c"].is_u64());
        Ok(())
    }

    #[test]
    fn keeps_the_newest_k_and_final_and_latest_follows() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path();
        for s in 1..=5 {
            save(run, &checkpoint(s * 10)?, 2)?;
            assert_eq!(
                fs::read_to_string(run.join(LATEST))?,
                format!("step-{}\n", s * 10)
            );
            assert_eq!(load(run)?.step, s * 10);
        }
        assert_eq!(steps(run), vec![40, 50]);
        assert_eq!(save_final(run, &checkpoint(50)?)?, run.join(FINAL));
        assert_eq!(load(&run.join(FINAL))?.step, 50);
        assert_eq!(resolve_resume(run, "latest")?, run.join("step-50"));
        assert_eq!(resolve_resume(run, "step-40")?, run.join("step-40"));
        let given = run.join("step-40");
        assert_eq!(
            resolve_resume(Path::new("/nonexistent"), given.to_str().unwrap())?,
            given
        );

        // Resumed from step 40: the abandoned step-50 goes; `final` stays.
        save(run, &checkpoint(45)?, 2)?;
        assert_eq!(steps(run), vec![40, 45]);
        assert!(run.join(FINAL).join(STATE).is_file());
        // The same step twice replaces it.
        save(run, &checkpoint(45)?, 2)?;
        assert_eq!(steps(run), vec![40, 45]);
        assert_eq!(load(run)?.step, 45);
        Ok(())
    }

    #[test]
    fn truncated_file_is_refused_and_the_previous_one_loads() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path();
        save(run, &checkpoint(10)?, 3)?;
        let dir = save(run, &checkpoint(20)?, 3)?;
        let model = dir.join(MODEL);
        let len = fs::metadata(&model)?.len();
        OpenOptions::new()
            .write(true)
            .open(&model)?
            .set_len(len - 9)?;
        let e = err(load(run));
        assert!(e.contains(&model.display().to_string()), "{e}");
        assert!(e.contains(&format!("is {} bytes", len - 9)), "{e}");
        assert!(e.contains(&format!("records {len} bytes")), "{e}");
        assert!(
            e.contains(&run.join("step-10").display().to_string()),
            "{e}"
        );
        assert_eq!(load(&run.join("step-10"))?.step, 10);
        Ok(())
    }

    #[test]
    fn flipped_byte_is_refused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = save(tmp.path(), &checkpoint(3)?, 3)?;
        let path = dir.join(OPTIM);
        let mut bytes = fs::read(&path)?;
        let mid = bytes.len() - 5;
        bytes[mid] ^= 0x10;
        fs::write(&path, &bytes)?;
        let e = err(load(&dir));
        assert!(
            e.contains("optim.safetensors") && e.contains("CRC-32C"),
            "{e}"
        );
        assert!(e.contains("no earlier checkpoint"), "{e}");
        Ok(())
    }

    #[test]
    fn crash_before_rename_leaves_the_previous_checkpoint() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path();
        save(run, &checkpoint(10)?, 3)?;
        // What a crash mid-save leaves: a partial temporary folder, `latest` untouched.
        let stale = run.join(".tmp-step-20-4242");
        fs::create_dir(&stale)?;
        fs::write(stale.join(MODEL), b"partial")?;
        fs::write(run.join(".tmp-latest-4242"), b"step-20\n")?;
        assert_eq!(steps(run), vec![10]);
        assert_eq!(load(run)?.step, 10);
        assert_eq!(resolve_resume(run, "latest")?, run.join("step-10"));
        save(run, &checkpoint(20)?, 3)?;
        assert!(!stale.exists() && !run.join(".tmp-latest-4242").exists());
        let left: Vec<_> = fs::read_dir(run)?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(load(run)?.step, 20);
        Ok(())
    }

    #[test]
    fn missing_paths_and_pointers_are_errors() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path();
        let nowhere = run.join("nowhere");
        let e = err(load(&nowhere));
        assert!(e.contains("does not exist") && e.contains("nowhere"), "{e}");
        let e = err(resolve_resume(run, "latest"));
        assert!(e.contains("no checkpoint to resume"), "{e}");
        let e = err(resolve_resume(run, "step-99"));
        assert!(e.contains("step-99"), "{e}");
        let e = err(load(run));
        assert!(e.contains("neither a checkpoint"), "{e}");
        assert!(list(&nowhere).is_err());

        save(run, &checkpoint(5)?, 3)?;
        fs::write(run.join(LATEST), "../elsewhere\n")?;
        let e = err(load(run));
        assert!(e.contains("expected `step-N`"), "{e}");
        fs::remove_file(run.join(LATEST))?;
        let e = err(resolve_resume(run, "latest"));
        assert!(e.contains("checkpoints found: step-5"), "{e}");
        fs::remove_file(run.join("step-5").join(STATE))?;
        let e = err(load(&run.join("step-5")));
        assert!(e.contains("no state.json"), "{e}");
        Ok(())
    }
}
