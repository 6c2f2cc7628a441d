//! `trainer data synth|inspect|preview|export|tokenizer`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use data::synth::generate::{generate, SynthConfig};
use data::Dataset;

use crate::config::stages::SynthStageConfig;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Render the synthetic paired-style dataset into Hugging Face parquet shards.
    Synth(SynthArgs),
    /// Print schema, row counts, styles, images per style and a decode check.
    Inspect(InspectArgs),
    /// Write a contact sheet: one row per style, one column per image.
    Preview(PreviewArgs),
    /// Write images of a split as PNG files, one per style (style references for
    /// `trainer generate --style-image`).
    Export(ExportArgs),
    /// Build a word-level `tokenizer.json` from a dataset's prompts (for data with no
    /// pretrained tokenizer, such as the synthetic set).
    Tokenizer(TokenizerArgs),
}

#[derive(Args)]
pub struct TokenizerArgs {
    /// The dataset (parquet folder or file, image folder).
    data: PathBuf,
    /// Splits whose prompts make the vocabulary (repeatable).
    #[arg(long = "split", default_values_t = ["train".to_string(), "test".to_string()])]
    splits: Vec<String>,
    /// Where to write `tokenizer.json`.
    #[arg(long)]
    out: PathBuf,
}

fn tokenizer(a: TokenizerArgs) -> Result<()> {
    let mut prompts = Vec::new();
    for split in &a.splits {
        let ds = Dataset::open(&a.data, split)?;
        prompts.extend(ds.items.into_iter().map(|i| i.prompt));
    }
    let json = crate::stages::dit_text::word_tokenizer(prompts.iter().map(String::as_str))?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&a.out, &json).with_context(|| format!("writing {}", a.out.display()))?;
    let words = serde_json::from_str::<serde_json::Value>(&json)?["model"]["vocab"]
        .as_object()
        .map_or(0, |v| v.len());
    println!(
        "{}: {words} tokens from {} prompts of {}",
        a.out.display(),
        prompts.len(),
        a.data.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder (created; existing shards of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// A `stage: synth` config file; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training styles.
    #[arg(long)]
    styles: Option<u32>,
    /// Held-out styles in the test split [default: styles / 8, at least 1].
    #[arg(long)]
    test_styles: Option<u32>,
    /// Images per style.
    #[arg(long)]
    per_style: Option<u32>,
    /// Image side in pixels.
    #[arg(long)]
    size: Option<u32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Size of the pool of scenes images draw their content from.
    #[arg(long)]
    contents: Option<u32>,
    /// First style id (a disjoint range gives disjoint styles).
    #[arg(long)]
    first_style: Option<u64>,
    #[arg(long)]
    rows_per_shard: Option<u32>,
    /// Rows per parquet row group [default: sized to about 16 MiB, at most 256].
    #[arg(long)]
    rows_per_group: Option<u32>,
    /// Delete the parquet files already in --out first.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A parquet folder, a .parquet file or an image folder.
    path: PathBuf,
    /// Rows to decode per split as a check; 0 decodes every row.
    #[arg(long, default_value_t = 64)]
    decode: usize,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A parquet folder, a .parquet file or an image folder.
    path: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    /// The first image of each of the first N styles.
    #[arg(long, default_value_t = 4)]
    styles: usize,
}

#[derive(Args)]
pub struct PreviewArgs {
    /// A parquet folder, a .parquet file or an image folder.
    path: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    /// Rows (styles) in the sheet.
    #[arg(long, default_value_t = 8)]
    styles: usize,
    /// Columns (images per style).
    #[arg(long, default_value_t = 8)]
    per_style: usize,
    /// Side of each cell in pixels.
    #[arg(long, default_value_t = 64)]
    cell: u32,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Inspect(a) => {
            let report = data::inspect::inspect(&a.path, a.decode)?;
            print!("{report}");
            Ok(())
        }
        DataCommand::Preview(a) => {
            let ds = Dataset::open(&a.path, &a.split)?;
            let sheet = data::preview::contact_sheet(&ds, a.styles, a.per_style, a.cell)?;
            sheet
                .save(&a.out)
                .with_context(|| format!("cannot write {}", a.out.display()))?;
            println!(
                "wrote {} ({}x{})",
                a.out.display(),
                sheet.width(),
                sheet.height()
            );
            Ok(())
        }
        DataCommand::Export(a) => export(a),
        DataCommand::Tokenizer(a) => tokenizer(a),
    }
}

/// `{split}-{item}.png` for the first item of each of the first `--styles` styles, with a line
/// per file naming its style and prompt.
fn export(a: ExportArgs) -> Result<()> {
    let ds = Dataset::open(&a.path, &a.split)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let firsts: Vec<usize> = ds
        .items_of_style()
        .into_iter()
        .filter_map(|items| items.first().copied())
        .take(a.styles)
        .collect();
    for item in firsts {
        let it = &ds.items[item];
        let img = ds.image(item)?;
        let file = a.out.join(format!("{}-{item}.png", a.split));
        img.save(&file)
            .with_context(|| format!("writing {}", file.display()))?;
        println!(
            "{}  style {} ({}): {}",
            file.display(),
            it.style,
            ds.styles
                .get(it.style as usize)
                .map(String::as_str)
                .unwrap_or("?"),
            it.prompt
        );
    }
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    let mut cfg: SynthConfig = match &a.config {
        Some(file) => crate::config::load_stage::<SynthStageConfig>(file, "synth", &[])?.synth,
        None => SynthConfig::default(),
    };
    let styles_given = a.styles.is_some();
    if let Some(v) = a.styles {
        cfg.styles = v;
    }
    match a.test_styles {
        Some(v) => cfg.test_styles = v,
        None if styles_given => cfg.test_styles = (cfg.styles / 8).max(1),
        None => {}
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { cfg.$f = v; } )* };
    }
    set!(
        per_style,
        size,
        seed,
        contents,
        first_style,
        rows_per_shard,
        rows_per_group
    );
    let problems: Vec<String> = cfg
        .problems()
        .into_iter()
        .map(|(field, msg)| format!("--{} {msg}", field.replace('_', "-")))
        .collect();
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    if a.force {
        for old in data::synth::generate::existing_shards(&a.out)? {
            std::fs::remove_file(&old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
    }
    let total = (cfg.styles + cfg.test_styles) as u64 * cfg.per_style as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {per_sec}  ETA {eta}")
            .expect("valid template"),
    );
    let started = std::time::Instant::now();
    let summary = generate(&a.out, &cfg, &|done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    // Provenance: what made these shards (DESIGN.md, "How data flows").
    let manifest = serde_json::json!({
        "made_by": format!("cotyle trainer {} data synth", env!("CARGO_PKG_VERSION")),
        "config": cfg,
        "summary": summary,
    });
    let manifest_path = a.out.join("synth.json");
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    println!(
        "wrote {} train + {} test images ({} + {} styles, {} px) to {} in {} files, {:.1} MB, {:.1}s",
        summary.train_rows,
        summary.test_rows,
        cfg.styles,
        cfg.test_styles,
        cfg.size,
        a.out.display(),
        summary.files.len(),
        summary.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
