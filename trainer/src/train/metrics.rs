//! Metric sinks of a run (DESIGN.md, "Logs"): one JSON line per log call in
//! `RUN/metrics.jsonl`, and the same scalars in a TensorBoard event file under `RUN/tb/`
//! (W&B users import those with `wandb sync`).
//!
//! `{"step":120,"time":1712345678.25,"loss":0.4231,"lr":0.0003}`: keys in the order logged;
//! a non-finite value is `null` (JSON has no NaN), while TensorBoard gets it as it is.
//!
//! Resuming from step S keeps the lines up to S and drops the rest (the file is rewritten
//! atomically), and the new event file tells TensorBoard to drop steps after S, so both
//! logs read as one run that never stopped.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::tensorboard::{unix_time, EventWriter};

pub struct Metrics {
    jsonl: BufWriter<File>,
    path: PathBuf,
    tb: EventWriter,
}

impl Metrics {
    /// Opens the sinks of `run_dir`. `resume_step`: the step of the checkpoint the run
    /// resumed from (later lines are dropped), or None for a new run (the log starts empty).
    pub fn open(run_dir: &Path, resume_step: Option<u64>) -> Result<Metrics> {
        fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join("metrics.jsonl");
        truncate_after(&path, resume_step)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let first_step = resume_step.map_or(0, |s| s + 1);
        let tb = EventWriter::create(&run_dir.join("tb"), first_step)?;
        Ok(Metrics {
            jsonl: BufWriter::new(file),
            path,
            tb,
        })
    }

    /// Logs `values` at `step` to both sinks and flushes them (log cadence is low enough for
    /// a flush per call, and a crash then loses nothing already logged).
    pub fn log(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let time = unix_time();
        let mut line = format!("{{\"step\":{step},\"time\":{}", json_number(time));
        for (i, (name, v)) in values.iter().enumerate() {
            if matches!(*name, "step" | "time") || values[..i].iter().any(|(n, _)| n == name) {
                bail!("metric `{name}` is logged twice at step {step}");
            }
            line.push(',');
            line.push_str(&serde_json::to_string(name)?);
            line.push(':');
            line.push_str(&json_number(*v));
        }
        line.push_str("}\n");
        self.jsonl
            .write_all(line.as_bytes())
            .and_then(|()| self.jsonl.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.tb.scalars(step, time, values)?;
        self.tb.flush()
    }

    pub fn jsonl_path(&self) -> &Path {
        &self.path
    }

    pub fn tb_path(&self) -> &Path {
        self.tb.path()
    }
}

/// Shortest round-tripping decimal, or `null` for NaN and infinities.
fn json_number(v: f64) -> String {
    match serde_json::Number::from_f64(v) {
        Some(n) => n.to_string(),
        None => "null".into(),
    }
}

/// Keeps the lines of `path` with step <= `keep_upto` (none for None), via a synced
/// temporary file and a rename, so a crash here leaves the old log or the new one.
fn truncate_after(path: &Path, keep_upto: Option<u64>) -> Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (mut kept, mut dropped, mut torn) = (String::new(), 0usize, 0usize);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let step = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step")?.as_u64());
        match (step, keep_upto) {
            (Some(s), Some(k)) if s <= k => {
                kept.push_str(line);
                kept.push('\n');
            }
            (Some(_), _) => dropped += 1,
            // A line cut by a crash mid-write: it was never a complete record.
            (None, _) => torn += 1,
        }
    }
    if dropped == 0 && torn == 0 {
        return Ok(());
    }
    match keep_upto {
        Some(k) => tracing::info!(
            "{}: dropping {dropped} line(s) after step {k} (resumed) and {torn} unreadable",
            path.display()
        ),
        None => tracing::warn!(
            "{}: a new run starts here; dropping its {} earlier line(s)",
            path.display(),
            dropped + torn
        ),
    }
    let tmp = path.with_extension(format!("jsonl.tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(kept.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::tensorboard::read;
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn writes_jsonl_and_tensorboard() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path().join("run");
        let mut m = Metrics::open(&run, None)?;
        m.log(1, &[("loss", 2.5), ("lr", 1e-4)])?;
        m.log(2, &[("loss", f64::NAN), ("grad_norm", f64::INFINITY)])?;
        let text = fs::read_to_string(run.join("metrics.jsonl"))?;
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("{\"step\":1,\"time\":"), "{first}");
        assert!(first.ends_with(",\"loss\":2.5,\"lr\":0.0001}"), "{first}");
        let v = lines(m.jsonl_path());
        assert_eq!(v.len(), 2);
        assert!(v[0]["time"].as_f64().unwrap() > 1.6e9);
        assert!(v[1]["loss"].is_null() && v[1]["grad_norm"].is_null());

        let tb = m.tb_path().to_path_buf();
        assert_eq!(tb.parent().unwrap(), run.join("tb"));
        let ev = read::events(&fs::read(&tb)?)?;
        assert_eq!(ev.len(), 4);
        assert!(ev[1].session_start && ev[1].step == 0);
        assert_eq!(ev[2].step, 1);
        assert_eq!(
            ev[2].scalars,
            [("loss".into(), 2.5), ("lr".into(), 1e-4f32)]
        );
        assert!(ev[3].scalars[0].1.is_nan() && ev[3].scalars[1].1 == f32::INFINITY);
        // serde_json's default parser may be an ulp off; the text itself is exact (ryu).
        assert!((ev[2].wall_time - v[0]["time"].as_f64().unwrap()).abs() < 1e-6);

        let e = m.log(3, &[("loss", 1.0), ("loss", 2.0)]).unwrap_err();
        assert!(e.to_string().contains("`loss` is logged twice"), "{e}");
        assert!(m.log(3, &[("step", 1.0)]).is_err());
        Ok(())
    }

    #[test]
    fn resume_drops_later_steps() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let run = tmp.path();
        let mut m = Metrics::open(run, None)?;
        for s in 1..=5 {
            m.log(s, &[("loss", s as f64)])?;
        }
        drop(m);
        // A crash mid-line leaves a torn last line.
        let path = run.join("metrics.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"{\"step\":6,\"ti")?;
        drop(f);

        let mut m = Metrics::open(run, Some(3))?;
        m.log(4, &[("loss", 40.0)])?;
        let steps: Vec<u64> = lines(&path)
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 3, 4]);
        assert_eq!(lines(&path)[3]["loss"], 40.0);
        let ev = read::events(&fs::read(m.tb_path())?)?;
        assert!(
            ev[1].session_start && ev[1].step == 4,
            "TensorBoard purges from step 4"
        );
        assert_eq!(fs::read_dir(run.join("tb"))?.count(), 2);
        let leftovers = fs::read_dir(run)?
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);

        // A new run in the same folder starts an empty log.
        drop(m);
        Metrics::open(run, None)?;
        assert_eq!(fs::read_to_string(&path)?, "");
        Ok(())
    }
}
