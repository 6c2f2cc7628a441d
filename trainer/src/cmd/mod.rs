//! One file per subcommand: parse arguments, load the config, call into the crates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::train::{checkpoint, TrainConfig};

pub mod ar;
pub mod bench;
pub mod bench_ar;
pub mod bench_block;
pub mod bench_dit;
pub mod bench_ops;
pub mod codebook;
pub mod config;
pub mod data;
pub mod dit;
pub mod eval;
pub mod extract;
pub mod generate;
pub mod pipeline;
pub mod sample_style;

/// `train.out_dir/train.run`; a run without a name gets one from the time. A resumed run
/// is the run folder of the checkpoint it names.
pub fn run_dir(t: &TrainConfig, resume: Option<&str>) -> Result<PathBuf> {
    if let Some(arg) = resume.filter(|a| *a != "latest") {
        let ck = checkpoint::checkpoint_dir(Path::new(arg))
            .with_context(|| format!("--resume {arg}"))?;
        // The run folder is the checkpoint's parent, whichever of the two was named.
        return Ok(ck.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    if t.run.is_empty() {
        if resume.is_some() {
            bail!(
                "--resume latest needs the run's name: add --set train.run=NAME (the folder under {})",
                t.out_dir.display()
            );
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Ok(t.out_dir.join(format!("run-{secs}")));
    }
    Ok(t.out_dir.join(&t.run))
}
