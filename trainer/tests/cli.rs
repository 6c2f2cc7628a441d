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

/// 6 + 3 styles x 4 images of 32 px: what the stage tests train on.
fn synth_32px(out: &Path, seed: &str) {
    let out = out.to_str().unwrap();
    let (ok, _, err) = trainer(&[
        "data",
        "synth",
        "--out",
        out,
        "--styles",
        "6",
        "--test-styles",
        "3",
        "--per-style",
        "4",
        "--size",
        "32",
        "--seed",
        seed,
    ]);
    assert!(ok, "{err}");
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
    synth_32px(&data, "5");
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

/// The repository root.
fn root_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `trainer <stage> --config <configs/tiny/STAGE.yaml> --set ...` from the repository root.
fn stage(name: &str, sets: &[String]) -> (bool, String, String) {
    let config = root_dir().join(format!("configs/tiny/{name}.yaml"));
    let mut args = vec![
        name.to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    for s in sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    trainer(&args)
}

/// The three stages chained as a user chains them (codebook -> extract -> ar and dit ->
/// generate), with a pipeline file; generation is reproducible, writes what the manifest
/// says, and a style generator that does not fit the codebook is refused by name.
#[test]
fn stages_chain_into_generate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("synth");
    synth_32px(&data, "8");
    let runs = d.join("runs");
    let common = |run: &str| {
        vec![
            format!("train.out_dir={}", runs.display()),
            format!("train.run={run}"),
            "train.steps=2".to_string(),
            "train.warmup_steps=1".into(),
            "train.eval_every=0".into(),
        ]
    };
    let mut sets = common("cb");
    sets.extend([
        format!("data.root={}", data.display()),
        "data.image_size=32".into(),
        "encoder.vision.image_size=32".into(),
        "train.batch_size=8".into(),
    ]);
    let (ok, _, err) = stage("codebook", &sets);
    assert!(ok, "{err}");
    let cb = runs.join("cb");
    let (ok, _, err) = trainer(&[
        "extract",
        "--checkpoint",
        cb.join("final").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let ar = |run: &str, extra: &[&str]| {
        let mut sets = common(run);
        sets.push(format!("data.indices={}", cb.display()));
        sets.push("train.batch_size=8".into());
        sets.extend(extra.iter().map(|s| s.to_string()));
        let (ok, _, err) = stage("ar", &sets);
        assert!(ok, "{err}");
    };
    ar("ar", &[]);
    // Sequences of 4 indices, but a generator that samples 8 per style.
    ar("ar-long", &["model.max_position_embeddings=8"]);
    let mut sets = common("dit");
    sets.extend([
        format!("data.root={}", data.display()),
        "data.image_size=32".into(),
        "model.sample_size=32".into(),
        format!("codebook={}", cb.join("final").display()),
        format!(
            "text.tokenizer={}/../configs/tokenizers/synth.json",
            env!("CARGO_MANIFEST_DIR")
        ),
        "train.batch_size=4".into(),
    ]);
    let (ok, _, err) = stage("dit", &sets);
    assert!(ok, "{err}");

    let pipeline = d.join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "stage: pipeline\ndit: {}\nar: {}\n",
            runs.join("dit/final").display(),
            runs.join("ar/final").display()
        ),
    )
    .unwrap();
    let reference = d.join("my ref.png");
    image::RgbImage::from_fn(40, 32, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 7) as u8, 90])
    })
    .save(&reference)
    .unwrap();
    let reference2 = d.join("other.png");
    image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([200, (x * y) as u8, 30]))
        .save(&reference2)
        .unwrap();
    let generate = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--code",
            "1234",
            "--code",
            "7",
            "--style-image",
            reference.to_str().unwrap(),
            "--style-image",
            reference2.to_str().unwrap(),
            "--prompt",
            "a red star",
            "--prompt",
            "two small ovals",
            "--steps",
            "2",
            "--grid",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        trainer(&args)
    };
    let (a, b) = (d.join("gen-a"), d.join("gen-b"));
    let (ok, out, err) = generate(&a, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("8 images (4 styles x 2 prompts)"), "{out}");
    let files = [
        "code-1234_p0.png",
        "code-1234_p1.png",
        "code-7_p0.png",
        "code-7_p1.png",
        "ref0-my_ref_p0.png",
        "ref0-my_ref_p1.png",
        "ref1-other_p0.png",
        "ref1-other_p1.png",
    ];
    for f in files {
        let img = image::open(a.join(f)).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32), "{f}");
    }
    // Rows: two codes and two references; columns: the reference (white for codes), 2 prompts.
    let grid = image::open(a.join("grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (3 * 34 + 2, 4 * 34 + 2));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("generate.json")).unwrap()).unwrap();
    assert_eq!(manifest["images"].as_array().unwrap().len(), 8);
    assert_eq!(manifest["styles"][0]["code"].as_u64(), Some(1234));
    assert_eq!(
        manifest["styles"][2]["indices"].as_array().unwrap().len(),
        4
    );
    assert_eq!(manifest["dit"]["ema"].as_bool(), Some(true));

    let (ok, _, err) = generate(&b, &[]);
    assert!(ok, "{err}");
    for f in files {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}: same seed, same image"
        );
    }
    let (ok, _, err) = generate(&b, &["--seed", "1"]);
    assert!(ok, "{err}");
    assert_ne!(
        std::fs::read(a.join(files[0])).unwrap(),
        std::fs::read(b.join(files[0])).unwrap(),
        "another seed, another image"
    );

    // Score the folder with a tiny offline descriptor: two codes and two references, two
    // images each.
    let desc_root = root_dir().join("configs/tiny/descriptor.yaml");
    let (ok, out, err) = trainer(&[
        "eval",
        "train-descriptor",
        "--config",
        desc_root.to_str().unwrap(),
        "--set",
        &format!("train.out_dir={}", runs.display()),
        "--set",
        "train.run=desc",
        "--set",
        "train.steps=2",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("trained:"), "{out}");
    let (ok, out, err) = trainer(&[
        "eval",
        "--metric",
        "csd",
        "--images",
        a.to_str().unwrap(),
        "--descriptor",
        runs.join("desc").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("offline descriptor")
            && out.contains("codes: consistency")
            && out.contains("references: to own reference"),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["codes"]["codes"].as_u64(), Some(2));
    assert_eq!(report["codes"]["images"].as_u64(), Some(4));
    assert_eq!(report["references"]["references"].as_u64(), Some(2));
    assert_eq!(report["references"]["images"].as_u64(), Some(4));
    let (m, o) = (
        report["references"]["matched"].as_f64().unwrap(),
        report["references"]["mismatched"].as_f64().unwrap(),
    );
    assert!(m.abs() <= 1.0 + 1e-6 && o.abs() <= 1.0 + 1e-6, "{m} {o}");

    // The protocols of configs/tiny/eval.yaml through the same runs: report and grid.
    let eval_out = d.join("eval");
    let tiny_eval = root_dir().join("configs/tiny/eval.yaml");
    let eval_sets = [
        format!("pipeline.dit={}", runs.join("dit/final").display()),
        format!("pipeline.ar={}", runs.join("ar/final").display()),
        format!("data={}", data.display()),
        format!("descriptor={}", runs.join("desc").display()),
        format!("out_dir={}", eval_out.display()),
        "codes=4".to_string(),
        "images_per_code=2".to_string(),
        "references=4".to_string(),
    ];
    let mut args = vec!["eval", "--config", tiny_eval.to_str().unwrap()];
    for s in &eval_sets {
        args.extend(["--set", s.as_str()]);
    }
    let (ok, out, err) = trainer(&args);
    assert!(ok, "{err}");
    assert!(out.contains("| code-to-style consistency |"), "{out}");
    assert!(
        out.contains("Skipped: clip-t: no CLIP weights given"),
        "CLIP scores without weights are skipped by name: {out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_out.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["scores"]["codes"]["images"].as_u64(), Some(8));
    // 3 held-out styles: one reference of each, then a second of the first.
    assert_eq!(
        report["scores"]["references"]["references"].as_u64(),
        Some(4)
    );
    assert_eq!(
        report["without_suppression"]["codes"]["codes"].as_u64(),
        Some(4)
    );
    assert!(eval_out.join("report.md").is_file() && eval_out.join("grid.png").is_file());

    let long = runs.join("ar-long/final");
    let (ok, _, err) = generate(&b, &["--ar", long.to_str().unwrap()]);
    assert!(
        !ok && err.contains("do not fit") && err.contains("8 indices per style"),
        "{err}"
    );
    let (ok, _, err) = trainer(&[
        "generate",
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--code",
        "1",
    ]);
    assert!(!ok && err.contains("--prompt"), "{err}");
}

/// `trainer pipeline` end to end on the tiny configs (the DiT shortened), then again: every
/// step is skipped; then with a changed AR config: only the AR and what reads it run again.
#[test]
fn pipeline_runs_every_step_once_and_reruns_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = root_dir();
    let tiny = |name: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(root.join(format!("configs/tiny/{name}.yaml"))).unwrap();
        assert!(
            text.contains(from),
            "configs/tiny/{name}.yaml lost `{from}`"
        );
        let path = d.join(format!("{name}.yaml"));
        std::fs::write(&path, text.replace(from, to)).unwrap();
        path
    };
    let dit = tiny("dit", "steps: 600", "steps: 4");
    // Tests run in trainer/: the tokenizer path of the config is relative to the root.
    let tok = root.join("configs/tokenizers/synth.json");
    let text = std::fs::read_to_string(&dit).unwrap();
    let text = text.replace("configs/tokenizers/synth.json", tok.to_str().unwrap());
    std::fs::write(&dit, text).unwrap();
    let ar = tiny("ar", "steps: 60", "steps: 4");
    let out = d.join("pl");
    let run = |ar: &Path| {
        let sets = [
            format!("run.out={}", out.display()),
            format!(
                "run.synth={}",
                root.join("configs/tiny/synth.yaml").display()
            ),
            format!(
                "run.codebook={}",
                root.join("configs/tiny/codebook.yaml").display()
            ),
            format!("run.ar={}", ar.display()),
            format!("run.dit={}", dit.display()),
            format!(
                "run.descriptor={}",
                root.join("configs/tiny/descriptor.yaml").display()
            ),
            format!("run.eval={}", root.join("configs/tiny/eval.yaml").display()),
            "run.prompts=[a large circle]".to_string(),
            "run.codes=[5, 6]".to_string(),
        ];
        let pipeline = root.join("configs/pipeline.yaml");
        let mut args = vec!["pipeline", "--config", pipeline.to_str().unwrap()];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        let (ok, stdout, err) = trainer(&args);
        assert!(ok, "{err}");
        stdout
    };
    let first = run(&ar);
    assert!(first.contains("[8/8] eval: done in"), "{first}");
    assert!(out.join("eval/report.md").is_file() && out.join("generate/grid.png").is_file());
    let again = run(&ar);
    assert_eq!(again.matches("done already").count(), 8, "{again}");
    let ar2 = d.join("ar2.yaml");
    std::fs::write(
        &ar2,
        std::fs::read_to_string(&ar)
            .unwrap()
            .replace("steps: 4", "steps: 3"),
    )
    .unwrap();
    let changed = run(&ar2);
    for skipped in ["synth", "codebook", "extract", "dit", "descriptor"] {
        assert!(
            changed.contains(&format!("] {skipped}: done already")),
            "{changed}"
        );
    }
    for rerun in ["ar", "generate", "eval"] {
        assert!(
            changed.contains(&format!("] {rerun}: done in")),
            "{changed}"
        );
    }
}
