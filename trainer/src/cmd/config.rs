//! `trainer config show|check --config FILE [--set key=value ...]`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::config::stages::{
    ArConfig, CodebookConfig, DescriptorConfig, DitConfig, PipelineConfig, SynthStageConfig,
};
use crate::config::tree::Node;
use crate::config::{load_tree, take_stage, to_yaml, Config, Problems};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved config (defaults, file, overrides) as YAML.
    Show(ConfigArgs),
    /// Report every problem in a config, or `ok`.
    Check(ConfigArgs),
}

#[derive(Args)]
pub struct ConfigArgs {
    /// The YAML file; its `stage:` key (or its file name) says which stage it configures.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a key: `--set train.lr=1e-4` (repeatable; values are YAML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

pub fn run(cmd: ConfigCommand) -> Result<()> {
    let (args, show) = match cmd {
        ConfigCommand::Show(a) => (a, true),
        ConfigCommand::Check(a) => (a, false),
    };
    match resolve(&args) {
        Ok((stage, yaml)) if show => print!("stage: {stage}\n{yaml}"),
        Ok((stage, _)) => println!("ok: {} ({stage} config)", args.config.display()),
        Err(problems) => bail!("{problems}"),
    }
    Ok(())
}

/// The stage name and resolved YAML of a config file with its overrides.
pub fn resolve(args: &ConfigArgs) -> Result<(String, String), Problems> {
    let mut tree = Node::from_file(&args.config).map_err(|m| {
        Problems(vec![crate::config::Problem {
            origin: Default::default(),
            key: String::new(),
            message: m,
        }])
    })?;
    let stage = take_stage(&mut tree, &args.config)?;
    fn yaml<T: Config>(tree: &mut Node, sets: &[String]) -> Result<String, Problems> {
        load_tree::<T>(tree, sets).map(|c| to_yaml(&c))
    }
    let text = match stage.as_str() {
        "codebook" => yaml::<CodebookConfig>(&mut tree, &args.sets),
        "dit" => yaml::<DitConfig>(&mut tree, &args.sets),
        "ar" => yaml::<ArConfig>(&mut tree, &args.sets),
        "synth" => yaml::<SynthStageConfig>(&mut tree, &args.sets),
        "pipeline" => yaml::<PipelineConfig>(&mut tree, &args.sets),
        "eval" => yaml::<crate::stages::eval_protocol::EvalConfig>(&mut tree, &args.sets),
        "descriptor" => yaml::<DescriptorConfig>(&mut tree, &args.sets),
        other => unreachable!("take_stage accepts only known stages, got {other}"),
    }?;
    Ok((stage, text))
}
