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

/// Stage 1 as a user runs it: the tiny codebook config on a small synthetic set, a stop and
/// `--resume latest`, then `codebook eval` and `extract` (index shards + freq.json).
#[test]
fn codebook_train_resume_eval_extract() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("synth");
    let (ok, _, err) = trainer(&[
        "data",
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--styles",
        "6",
        "--test-styles",
        "3",
        "--per-style",
        "4",
        "--size",
        "32",
        "--seed",
        "5",
    ]);
    assert!(ok, "{err}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("configs/tiny/codebook.yaml");
    let sets = |steps: &str| {
        vec![
            format!("data.root={}", data.display()),
            "data.image_size=32".into(),
            "encoder.vision.image_size=32".into(),
            format!("train.out_dir={}", d.join("runs").display()),
            "train.run=cli".into(),
            format!("train.steps={steps}"),
            "train.batch_size=8".into(),
            "train.eval_every=4".into(),
            "train.checkpoint_every=2".into(),
        ]
    };
    let run = |steps: &str, resume: bool| {
        let mut args = vec![
            "codebook".to_string(),
            "--config".into(),
            config.display().to_string(),
        ];
        for s in sets(steps) {
            args.extend(["--set".to_string(), s]);
        }
        if resume {
            args.extend(["--resume".to_string(), "latest".into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        trainer(&args)
    };
    let (ok, out, err) = run("4", false);
    assert!(ok, "{err}");
    assert!(
        out.contains("done at") && out.contains("held-out top-1"),
        "{out}"
    );
    let (ok, out, err) = run("6", true);
    assert!(ok, "{err}");
    assert!(out.contains("done at"), "{out}");
    let run_dir = d.join("runs/cli");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("\"step\":6")),
        "{metrics}"
    );

    let ck = run_dir.join("final");
    let (ok, out, err) = trainer(&["codebook", "eval", "--checkpoint", ck.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("style embeddings: top-1"), "{out}");
    assert!(run_dir.join("eval-final.json").is_file());

    let (ok, out, err) = trainer(&["extract", "--checkpoint", ck.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("train: 24 images x 4 tokens"), "{out}");
    let freq: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("freq.json")).unwrap()).unwrap();
    let total: u64 = freq["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 24 * 4);
    assert_eq!(freq["tokens_counted"].as_u64(), Some(96));

    // A corrupt checkpoint is refused by name; the previous one still evaluates.
    let model = run_dir.join("step-6/model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let (ok, _, err) = trainer(&[
        "codebook",
        "eval",
        "--checkpoint",
        run_dir.join("step-6").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("model.safetensors"), "{err}");
    let (ok, _, err) = trainer(&[
        "codebook",
        "eval",
        "--checkpoint",
        run_dir.join("step-4").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
}
