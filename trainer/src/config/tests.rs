//! Config loading: defaults, files, overrides, and errors that name key, file and line.

use std::io::Write;

use super::stages::CodebookConfig;
use super::*;

/// Defaults, then `file` if given, then each `--set` in order (a stage-less load).
fn load<T: Config>(file: Option<&Path>, sets: &[String]) -> Result<T, Problems> {
    let mut tree = match file {
        Some(path) => Node::from_file(path).map_err(parse_problem)?,
        None => Node::empty_map(Origin::Default),
    };
    load_tree(&mut tree, sets)
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn messages(p: &Problems) -> Vec<String> {
    p.0.iter().map(ToString::to_string).collect()
}

#[test]
fn defaults_when_no_file() {
    let c: CodebookConfig = load(None, &[]).unwrap();
    assert_eq!(c, CodebookConfig::default());
}

#[test]
fn file_values_override_defaults_and_keep_the_rest() {
    let f = file("train:\n  steps: 7\n  lr: 1.0e-5\ndata:\n  root: /tmp/x\n");
    let c: CodebookConfig = load(Some(f.path()), &[]).unwrap();
    assert_eq!(c.train.steps, 7);
    assert_eq!(c.train.lr, 1e-5);
    assert_eq!(c.data.root, std::path::PathBuf::from("/tmp/x"));
    assert_eq!(
        c.train.batch_size,
        crate::train::TrainConfig::default().batch_size
    );
}

#[test]
fn every_unknown_key_is_reported_with_file_line_and_suggestion() {
    let f = file("train:\n  steps: 7\n  lerning_rate: 0.1\ndata:\n  image_sise: 32\nbogus: 1\n");
    let err = load::<CodebookConfig>(Some(f.path()), &[]).unwrap_err();
    let msgs = messages(&err);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    let path = f.path().display().to_string();
    assert!(
        msgs[0].starts_with(&format!("{path}:3:3: `train.lerning_rate`: unknown key")),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].contains(":5:3: `data.image_sise`")
            && msgs[1].contains("did you mean `image_size`"),
        "{}",
        msgs[1]
    );
    assert!(
        msgs[2].contains(
            ":6:1: `bogus`: unknown key (known keys: codebook, data, encoder, eval, loss, train)"
        ),
        "{}",
        msgs[2]
    );
}

#[test]
fn wrong_kinds_of_value_are_reported_together() {
    let f = file("train:\n  steps: many\n  lr: [1]\ndata:\n  skip_corrupt: 3\n");
    let err = load::<CodebookConfig>(Some(f.path()), &[]).unwrap_err();
    let msgs = messages(&err);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].contains(":2:10: `train.steps`: expected an integer, found a string `many`"),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].contains("`train.lr`: expected a number, found a list"),
        "{}",
        msgs[1]
    );
    assert!(
        msgs[2].contains("`data.skip_corrupt`: expected true or false"),
        "{}",
        msgs[2]
    );
}

#[test]
fn unknown_enum_variant_points_at_its_line() {
    let f = file("data:\n  crop: diagonal\n");
    let err = load::<CodebookConfig>(Some(f.path()), &[]).unwrap_err();
    let msg = messages(&err).join("\n");
    assert!(
        msg.contains(":2:9: `data.crop`: unknown variant `diagonal`"),
        "{msg}"
    );
}

#[test]
fn overrides_win_over_the_file_and_parse_as_yaml() {
    let f = file("train:\n  steps: 7\n");
    let sets = vec![
        "train.steps=9".to_string(),
        "train.lr=2e-4".into(),
        "data.skip_corrupt=true".into(),
    ];
    let c: CodebookConfig = load(Some(f.path()), &sets).unwrap();
    assert_eq!(
        (c.train.steps, c.train.lr, c.data.skip_corrupt),
        (9, 2e-4, true)
    );
}

#[test]
fn bad_overrides_name_the_argument() {
    let sets = vec![
        "train.stepz=9".to_string(),
        "train.lr=fast".into(),
        "nokeyvalue".into(),
    ];
    let err = load::<CodebookConfig>(None, &sets).unwrap_err();
    let msgs = messages(&err);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("--set nokeyvalue: expected KEY=VALUE")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with(
            "--set train.stepz=9: `train.stepz`: unknown key (did you mean `steps`?)"
        )),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("--set train.lr=fast: `train.lr`: expected a number")),
        "{msgs:?}"
    );
}

#[test]
fn semantic_rules_point_at_the_value_that_breaks_them() {
    let f = file("train:\n  batch_size: 10\n  grad_accum: 3\ndata:\n  negative_fraction: 1.5\n");
    let err = load::<CodebookConfig>(Some(f.path()), &[]).unwrap_err();
    let msg = messages(&err).join("\n");
    assert!(
        msg.contains(":2:15: `train.batch_size`: 10 is not divisible by grad_accum 3"),
        "{msg}"
    );
    assert!(
        msg.contains(":5:22: `data.negative_fraction`: must be within [0, 1]"),
        "{msg}"
    );
}

#[test]
fn yaml_syntax_errors_name_the_file_and_position() {
    let f = file("train:\n  steps: [1, 2\n");
    let err = load::<CodebookConfig>(Some(f.path()), &[]).unwrap_err();
    let msg = messages(&err).join("\n");
    assert!(msg.contains(&f.path().display().to_string()), "{msg}");
    assert!(msg.contains("line"), "{msg}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = load::<CodebookConfig>(Some(std::path::Path::new("/no/such/config.yaml")), &[])
        .unwrap_err();
    assert!(messages(&err)[0].contains("/no/such/config.yaml: cannot read config file"));
}

#[test]
fn resolved_yaml_loads_back_to_the_same_config() {
    let sets = vec![
        "train.steps=11".to_string(),
        "data.mean=[0.1, 0.2, 0.3]".into(),
    ];
    let c: CodebookConfig = load(None, &sets).unwrap();
    let f = file(&to_yaml(&c));
    let back: CodebookConfig = load(Some(f.path()), &[]).unwrap();
    assert_eq!(c, back);
}

#[test]
fn stage_key_selects_and_guards_the_stage() {
    let f = file("stage: dit\ntrain:\n  steps: 3\n");
    let err = load_stage::<CodebookConfig>(f.path(), "codebook", &[]).unwrap_err();
    assert!(messages(&err)[0]
        .contains("this is a `dit` config, but `trainer codebook` needs a `codebook` config"));
    let f = file("stage: codebook\ntrain:\n  steps: 3\n");
    let c = load_stage::<CodebookConfig>(f.path(), "codebook", &[]).unwrap();
    assert_eq!(c.train.steps, 3);
    let f = file("stage: painting\n");
    let err = load_stage::<CodebookConfig>(f.path(), "codebook", &[]).unwrap_err();
    assert!(
        messages(&err)[0].contains(":1:8: `stage`: expected one of codebook, dit, ar, synth"),
        "{:?}",
        messages(&err)
    );
}

#[test]
fn shipped_configs_all_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut seen = 0;
    for dir in ["", "tiny", "full"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let args = crate::cmd::config::ConfigArgs {
                config: path.clone(),
                sets: vec![],
            };
            if let Err(p) = crate::cmd::config::resolve(&args) {
                panic!("{}: {p}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 7, "only {seen} configs found");
}

#[test]
fn the_full_codebook_config_is_the_papers_encoder_and_a_checkpoints_config_loads_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("configs/full/codebook.yaml");
    let c: CodebookConfig = load_stage(&file, "codebook", &[]).unwrap();
    assert_eq!(
        c.encoder.vision,
        crate::models::vision::VisionConfig::qwen2_5_vl_7b()
    );
    assert_eq!((c.codebook.codes, c.codebook.code_dim), (1024, 64));
    // What a checkpoint stores (`stage:` + resolved YAML) reads back to the same config.
    let saved = format!("stage: codebook\n{}", to_yaml(&c));
    let back: CodebookConfig =
        load_stage_text(&saved, Path::new("ck/config.yaml"), "codebook").unwrap();
    assert_eq!(back, c);
    let err = load_stage_text::<CodebookConfig>(&saved, Path::new("x.yaml"), "ar").unwrap_err();
    assert!(err.to_string().contains("`codebook` config"), "{err}");
}
