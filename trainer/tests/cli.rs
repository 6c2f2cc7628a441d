//! The `trainer` binary end to end, as a user runs it: synth -> inspect -> preview, config
//! check with errors, and clear failures on bad paths.

use std::path::Path;
use std::process::Command;

fn trainer(args: &[&str]) -> (bool, String, String) {
    trainer_env(args, &[])
}

fn trainer_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run trainer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn synth(dir: &Path, seed: &str) {
    synth_threads(dir, seed, None)
}

/// `threads`: RAYON_NUM_THREADS for the run (None = every core).
fn synth_threads(dir: &Path, seed: &str, threads: Option<&str>) {
    let out = dir.to_str().unwrap();
    let args = [
        "data",
        "synth",
        "--out",
        out,
        "--styles",
        "6",
        "--per-style",
        "3",
        "--size",
        "16",
        "--seed",
        seed,
        "--rows-per-shard",
        "10",
    ];
    let env: Vec<(&str, &str)> = threads
        .map(|t| ("RAYON_NUM_THREADS", t))
        .into_iter()
        .collect();
    let (ok, stdout, stderr) = trainer_env(&args, &env);
    assert!(ok, "synth failed: {stderr}");
    assert!(
        stdout.contains("wrote 18 train + 3 test images"),
        "{stdout}"
    );
}

#[test]
fn synth_inspect_preview() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "1");
    // 18 train rows at 10 per shard: two train shards and one test shard, plus the manifest.
    for f in [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "test-00000-of-00001.parquet",
        "synth.json",
    ] {
        assert!(dir.path().join(f).exists(), "missing {f}");
    }
    let (ok, stdout, stderr) = trainer(&["data", "inspect", dir.path().to_str().unwrap()]);
    assert!(ok, "inspect failed: {stderr}");
    assert!(
        stdout.contains("train") && stdout.contains("test"),
        "{stdout}"
    );
    assert!(stdout.contains("18"), "row count missing: {stdout}");
    let grid = dir.path().join("grid.png");
    let (ok, _, stderr) = trainer(&[
        "data",
        "preview",
        dir.path().to_str().unwrap(),
        "--out",
        grid.to_str().unwrap(),
        "--styles",
        "4",
        "--per-style",
        "3",
        "--cell",
        "16",
    ]);
    assert!(ok, "preview failed: {stderr}");
    let img = image::open(&grid).unwrap();
    // 4 rows and 3 columns of 16 px cells with 2 px gutters.
    assert_eq!((img.width(), img.height()), (3 * 18 + 2, 4 * 18 + 2));
}

#[test]
fn synth_refuses_to_mix_with_old_shards_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "1");
    let out = dir.path().to_str().unwrap();
    let args = [
        "data",
        "synth",
        "--out",
        out,
        "--styles",
        "4",
        "--per-style",
        "2",
        "--size",
        "8",
    ];
    let (ok, _, stderr) = trainer(&args);
    assert!(
        !ok && stderr.contains("already holds parquet shards"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = trainer(&[&args[..], &["--force"]].concat());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote 8 train + 2 test images"), "{stdout}");
    // Only the new run's shards remain.
    let parquet = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert_eq!(parquet, 2);
}

#[test]
fn same_seed_same_bytes_on_any_thread_count_other_seed_other_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    synth(a.path(), "5");
    synth_threads(b.path(), "5", Some("1"));
    synth(c.path(), "6");
    let shards = [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "test-00000-of-00001.parquet",
    ];
    let read = |d: &Path| shards.map(|f| std::fs::read(d.join(f)).unwrap());
    assert_eq!(read(a.path()), read(b.path()));
    assert_ne!(read(a.path()), read(c.path()));
}

#[test]
fn config_check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("codebook.yaml");
    std::fs::write(&f, "train:\n  stepz: 3\n  lr: fast\n").unwrap();
    let (ok, _, stderr) = trainer(&["config", "check", "--config", f.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains("codebook.yaml:2:3: `train.stepz`: unknown key (did you mean `steps`?)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("codebook.yaml:3:7: `train.lr`: expected a number"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = trainer(&[
        "config",
        "show",
        "--config",
        f.to_str().unwrap(),
        "--set",
        "train.steps=3",
    ]);
    assert!(!ok && stdout.is_empty(), "{stderr}");
}

#[test]
fn config_show_prints_the_resolved_config() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny/codebook.yaml");
    let (ok, stdout, stderr) = trainer(&[
        "config",
        "show",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "train.steps=5",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("stage: codebook\n"), "{stdout}");
    assert!(stdout.contains("steps: 5"), "{stdout}");
    assert!(
        stdout.contains("negative_fraction: 0.5"),
        "defaults are shown too: {stdout}"
    );
}

#[test]
fn missing_dataset_path_is_named() {
    let (ok, _, stderr) = trainer(&["data", "inspect", "/no/such/dataset"]);
    assert!(!ok);
    assert!(stderr.contains("/no/such/dataset"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn synth_names_the_flags_that_cannot_make_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let (ok, _, stderr) = trainer(&[
        "data",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--size",
        "0",
        "--per-style",
        "0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--per-style must be at least 1; --size must be at least 1"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing may be written on bad flags");
}
