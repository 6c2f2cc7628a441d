//! Our shards open in the real Hugging Face `datasets` library (`scripts/check_hf_compat.py`):
//! `features["image"]` is `Image()` and an image decodes with PIL. Skips with a message when
//! `python3` or `datasets` is not installed (no network is used either way).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use data::shard_writer::{shard_file_name, WriterOptions};

#[test]
fn our_shards_load_in_python_datasets_as_an_image_dataset() {
    let has_datasets = Command::new("python3")
        .args(["-c", "import datasets, PIL"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_datasets {
        println!("skipped: python datasets not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = || WriterOptions {
        rows_per_group: 2,
        ..Default::default()
    };
    let all = rows(6, &[1, 2, 3]);
    write_shard(
        dir.path(),
        &shard_file_name("train", 0, 2),
        &all[..3],
        opts(),
    );
    write_shard(
        dir.path(),
        &shard_file_name("train", 1, 2),
        &all[3..],
        opts(),
    );
    write_shard(
        dir.path(),
        &shard_file_name("test", 0, 1),
        &all[..2],
        opts(),
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_hf_compat.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        // Keep `datasets` offline and its cache inside the temporary directory.
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf-home"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "check_hf_compat.py failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("train: 6 rows, first image (8, 8) RGB, features ok"),
        "{stdout}"
    );
}
