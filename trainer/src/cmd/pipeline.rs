//! `trainer pipeline --config configs/pipeline.yaml`: the whole system in one command (DESIGN.md,
//! "How data flows"): synthesise the data, train the codebook, extract its indices, train the
//! style generator and the DiT, train the offline style descriptor, generate a contact sheet,
//! evaluate. Each step runs this binary as a user would (`trainer codebook --config ...`), so
//! its log is the step's own.
//!
//! Re-running resumes: a step whose output exists for the same inputs is skipped. Each step
//! has a key, a hash of its command line, the text of its config file and the keys of the
//! steps it reads from (so a changed codebook config re-runs extract, ar, dit and what follows,
//! but not the descriptor). `OUT/steps/NAME`
//! holds `started KEY` while it runs and `done KEY` after; a training step started with the
//! same key resumes from its `latest` checkpoint; a step whose key changed starts afresh,
//! its old output moved aside to `NAME.replaced-UNIXTIME`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::load_stage;
use crate::config::stages::PipelineConfig;
use crate::models::init::fnv1a;

#[derive(Args)]
pub struct PipelineArgs {
    /// The pipeline file (YAML with `stage: pipeline`; its `run:` section).
    #[arg(long, default_value = "configs/pipeline.yaml")]
    config: PathBuf,
    /// Override a key: `--set run.out=out/other` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// One step: its name, the steps whose outputs it reads, the command's arguments, the config
/// file it reads (hashed into its key), what it makes, and whether it trains (resumable from
/// `latest`).
struct Step {
    name: &'static str,
    needs: &'static [&'static str],
    args: Vec<String>,
    config: Option<PathBuf>,
    output: PathBuf,
    trains: bool,
}

pub fn run(a: PipelineArgs) -> Result<()> {
    let cfg: PipelineConfig =
        load_stage(&a.config, "pipeline", &a.sets).map_err(|p| anyhow::anyhow!("{p}"))?;
    let r = &cfg.run;
    let out = &r.out;
    let runs = out.join("runs");
    let p = |x: &Path| x.display().to_string();
    let set = |kv: String| ["--set".to_string(), kv];
    let train = |name: &'static str, stage: &str, config: &Path, extra: Vec<String>| {
        let mut args = vec![stage.to_string(), "--config".into(), p(config)];
        args.extend(set(format!("train.out_dir={}", p(&runs))));
        args.extend(set(format!("train.run={name}")));
        for kv in extra {
            args.extend(set(kv));
        }
        Step {
            name,
            needs: &[],
            args,
            config: Some(config.to_path_buf()),
            output: runs.join(name).join("final"),
            trains: true,
        }
    };
    let synth = out.join("synth");
    let codebook = runs.join("codebook");
    let mut descriptor = train("descriptor", "eval", &r.descriptor, vec![]);
    descriptor.args.insert(1, "train-descriptor".into());
    descriptor.output = runs.join("descriptor").join("descriptor");
    let mut generate = vec![
        "generate".to_string(),
        "--pipeline".into(),
        p(&a.config),
        "--dit".into(),
        p(&runs.join("dit/final")),
        "--ar".into(),
        p(&runs.join("ar/final")),
        "--grid".into(),
        "--out".into(),
        p(&out.join("generate")),
    ];
    for c in &r.codes {
        generate.extend(["--code".to_string(), c.to_string()]);
    }
    for pr in &r.prompts {
        generate.extend(["--prompt".to_string(), pr.clone()]);
    }
    let steps = [
        Step {
            name: "synth",
            needs: &[],
            args: vec![
                "data".into(),
                "synth".into(),
                "--config".into(),
                p(&r.synth),
                "--out".into(),
                p(&synth),
                "--force".into(),
            ],
            config: Some(r.synth.clone()),
            output: synth.join("synth.json"),
            trains: false,
        },
        Step {
            needs: &["synth"],
            ..train(
                "codebook",
                "codebook",
                &r.codebook,
                vec![format!("data.root={}", p(&synth))],
            )
        },
        Step {
            name: "extract",
            needs: &["codebook"],
            args: vec![
                "extract".into(),
                "--checkpoint".into(),
                p(&codebook.join("final")),
            ],
            config: None,
            output: codebook.join("freq.json"),
            trains: false,
        },
        Step {
            needs: &["extract"],
            ..train(
                "ar",
                "ar",
                &r.ar,
                vec![format!("data.indices={}", p(&codebook))],
            )
        },
        Step {
            needs: &["synth", "codebook"],
            ..train(
                "dit",
                "dit",
                &r.dit,
                vec![
                    format!("data.root={}", p(&synth)),
                    format!("codebook={}", p(&codebook.join("final"))),
                ],
            )
        },
        descriptor,
        Step {
            name: "generate",
            needs: &["ar", "dit"],
            args: generate,
            config: None,
            output: out.join("generate/grid.png"),
            trains: false,
        },
        Step {
            name: "eval",
            needs: &["synth", "ar", "dit", "descriptor"],
            args: vec![
                "eval".into(),
                "--config".into(),
                p(&r.eval),
                "--set".into(),
                format!("pipeline.dit={}", p(&runs.join("dit/final"))),
                "--set".into(),
                format!("pipeline.ar={}", p(&runs.join("ar/final"))),
                "--set".into(),
                format!("data={}", p(&synth)),
                "--set".into(),
                format!("descriptor={}", p(&runs.join("descriptor"))),
                "--set".into(),
                format!("out_dir={}", p(&out.join("eval"))),
            ],
            config: Some(r.eval.clone()),
            output: out.join("eval/report.md"),
            trains: false,
        },
    ];

    let exe = std::env::current_exe().context("locating the trainer binary")?;
    let marks = out.join("steps");
    std::fs::create_dir_all(&marks).with_context(|| format!("creating {}", marks.display()))?;
    let started = std::time::Instant::now();
    let mut keys: Vec<(&str, u64)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let config_text = match &step.config {
            Some(c) => std::fs::read_to_string(c)
                .with_context(|| format!("reading {} (step {})", c.display(), step.name))?,
            None => String::new(),
        };
        let inputs: Vec<String> = step
            .needs
            .iter()
            .map(|n| {
                let (_, k) = keys
                    .iter()
                    .find(|(m, _)| m == n)
                    .expect("steps run in order");
                format!("{k:016x}")
            })
            .collect();
        let key = fnv1a(&format!(
            "{}\n{}\n{config_text}",
            inputs.join(","),
            step.args.join("\u{1f}")
        ));
        keys.push((step.name, key));
        let mark = marks.join(step.name);
        let state = std::fs::read_to_string(&mark).unwrap_or_default();
        let head = format!("[{}/{}] {}", i + 1, steps.len(), step.name);
        if state.trim() == format!("done {key:016x}") && step.output.exists() {
            println!("{head}: done already ({})", step.output.display());
            continue;
        }
        let mut args = step.args.clone();
        let run_dir = step.output.parent().map(Path::to_path_buf);
        let resumable = step.trains
            && state.trim() == format!("started {key:016x}")
            && run_dir.as_ref().is_some_and(|d| d.join("latest").exists());
        if resumable {
            args.extend(["--resume".to_string(), "latest".into()]);
            println!("{head}: resuming");
        } else {
            set_aside(step)?;
            println!("{head}: {}", args.join(" "));
        }
        std::fs::write(&mark, format!("started {key:016x}\n"))
            .with_context(|| format!("writing {}", mark.display()))?;
        let t = std::time::Instant::now();
        let status = Command::new(&exe)
            .args(&args)
            .status()
            .with_context(|| format!("running step {}", step.name))?;
        if !status.success() {
            bail!(
                "step {} failed ({status}); fix the cause and run `trainer pipeline` again: \
                 finished steps are kept, a training step resumes",
                step.name
            );
        }
        std::fs::write(&mark, format!("done {key:016x}\n"))
            .with_context(|| format!("writing {}", mark.display()))?;
        println!("{head}: done in {:.0} s", t.elapsed().as_secs_f64());
    }
    println!(
        "pipeline done in {:.0} s under {}:\n  data        {}\n  checkpoints {}\n  contact sheet {}\n  report      {}",
        started.elapsed().as_secs_f64(),
        out.display(),
        synth.display(),
        runs.display(),
        out.join("generate/grid.png").display(),
        out.join("eval/report.md").display()
    );
    Ok(())
}

/// Moves a step's earlier output (made from other inputs) out of the way.
fn set_aside(step: &Step) -> Result<()> {
    let dir = match step.trains {
        // The run folder: RUN/final -> RUN (the descriptor's: RUN/descriptor -> RUN).
        true => step.output.parent(),
        false => None,
    };
    let Some(dir) = dir.filter(|d| d.exists()) else {
        return Ok(());
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = dir.with_file_name(format!(
        "{}.replaced-{secs}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("run")
    ));
    std::fs::rename(dir, &aside)
        .with_context(|| format!("moving {} aside to {}", dir.display(), aside.display()))?;
    println!(
        "  (earlier output from other inputs moved to {})",
        aside.display()
    );
    Ok(())
}
