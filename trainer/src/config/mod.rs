//! Configs: serde structs with defaults in code, YAML on disk, `--set a.b=v` overrides, and
//! errors that name the key and where it was written (DESIGN.md, "Rules of the house").
//!
//! Loading runs in three steps so that a user sees every mistake at once:
//! 1. parse the file into a [`tree::Node`] that remembers file, line and column per value;
//! 2. apply `--set` overrides to that tree, then walk it against the defaults serialised to
//!    JSON ([`check::check_shape`]): unknown keys and wrong kinds of value, all of them;
//! 3. deserialise into the typed struct (which also has `deny_unknown_fields`), then run the
//!    struct's own [`Validate`] rules; each error is mapped back to its origin in the tree.

pub mod check;
pub mod rules;
pub mod stages;
pub mod tree;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use check::{Problem, Problems};
use tree::{Node, Origin};

/// Semantic rules a config must satisfy beyond its types (e.g. warm-up shorter than the run).
pub trait Validate {
    /// Pushes `(dotted key, message)` for every rule broken.
    fn validate(&self, _out: &mut Vec<(String, String)>) {}
}

/// A config that can be loaded from YAML: a whole stage, or any section used on its own.
pub trait Config: Serialize + DeserializeOwned + Default + Validate {}
impl<T: Serialize + DeserializeOwned + Default + Validate> Config for T {}

/// Overrides, shape check, typed load and validation, on an already parsed tree.
pub fn load_tree<T: Config>(tree: &mut Node, sets: &[String]) -> Result<T, Problems> {
    let mut problems = Vec::new();
    for arg in sets {
        if let Err(message) = tree.apply_override(arg) {
            problems.push(Problem {
                origin: Origin::Override(arg.clone()),
                key: String::new(),
                message,
            });
        }
    }
    let schema = serde_json::to_value(T::default()).expect("config defaults serialise to JSON");
    check::check_shape(&schema, tree, "", &mut problems);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let json = tree.to_json();
    let config: T = serde_path_to_error::deserialize(json).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        Problems(vec![Problem {
            origin: origin_at(tree, &key),
            key,
            message: e.inner().to_string(),
        }])
    })?;
    let mut broken = Vec::new();
    config.validate(&mut broken);
    if !broken.is_empty() {
        let problems = broken
            .into_iter()
            .map(|(key, message)| Problem {
                origin: origin_at(tree, &key),
                key,
                message,
            })
            .collect();
        return Err(Problems(problems));
    }
    Ok(config)
}

/// The stage a config file names: its top-level `stage:` key (removed from the tree, since the
/// structs do not hold it), else the file name (`configs/tiny/codebook.yaml` -> `codebook`).
pub fn take_stage(tree: &mut Node, file: &Path) -> Result<String, Problems> {
    if let tree::Value::Map(entries) = &mut tree.value {
        if let Some(pos) = entries.iter().position(|(k, _)| k.name == "stage") {
            let (_, node) = entries.remove(pos);
            return match node.value {
                tree::Value::Str(s) if stages::STAGES.contains(&s.as_str()) => Ok(s),
                other => Err(Problems(vec![Problem {
                    origin: node.origin,
                    key: "stage".into(),
                    message: format!(
                        "expected one of {}, found {}",
                        stages::STAGES.join(", "),
                        other.kind()
                    ),
                }])),
            };
        }
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if stages::STAGES.contains(&stem) {
        return Ok(stem.to_string());
    }
    Err(Problems(vec![Problem {
        origin: tree.origin.clone(),
        key: "stage".into(),
        message: format!(
            "the file does not say which stage it configures: add `stage: <{}>` at the top",
            stages::STAGES.join("|")
        ),
    }]))
}

/// Loads a stage's config file, refusing a file written for another stage.
pub fn load_stage<T: Config>(file: &Path, stage: &str, sets: &[String]) -> Result<T, Problems> {
    let tree = Node::from_file(file).map_err(parse_problem)?;
    load_stage_tree(tree, file, stage, sets)
}

/// [`load_stage`] on config text (a checkpoint's `config.yaml`); `source` names it in errors.
pub fn load_stage_text<T: Config>(text: &str, source: &Path, stage: &str) -> Result<T, Problems> {
    let tree = Node::parse(text, &source.display().to_string()).map_err(parse_problem)?;
    load_stage_tree(tree, source, stage, &[])
}

fn load_stage_tree<T: Config>(
    mut tree: Node,
    file: &Path,
    stage: &str,
    sets: &[String],
) -> Result<T, Problems> {
    let named = take_stage(&mut tree, file)?;
    if named != stage {
        return Err(Problems(vec![Problem {
            origin: tree.origin.clone(),
            key: "stage".into(),
            message: format!(
                "this is a `{named}` config, but `trainer {stage}` needs a `{stage}` config"
            ),
        }]));
    }
    load_tree(&mut tree, sets)
}

/// Resolved config as YAML, as saved beside every checkpoint.
pub fn to_yaml<T: Serialize>(config: &T) -> String {
    serde_saphyr::to_string(config).expect("config serialises to YAML")
}

/// Where the value at a dotted key was written; the nearest written parent if the key itself
/// was left at its default.
fn origin_at(tree: &Node, key: &str) -> Origin {
    let parts: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    for n in (0..=parts.len()).rev() {
        if let Some(node) = tree.get_path(&parts[..n]) {
            return node.origin.clone();
        }
    }
    Origin::Default
}

/// A file that could not be read or parsed: the message already names the file and position.
fn parse_problem(message: String) -> Problems {
    Problems(vec![Problem {
        origin: Origin::Default,
        key: String::new(),
        message,
    }])
}

#[cfg(test)]
mod tests;
