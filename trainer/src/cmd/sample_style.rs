//! `trainer sample-style --code 1234 [--code 99 --weight 0.3 ...] --ar CKPT [--out F]`: the
//! index sequence of a style code (or of several, interpolated), printed or written as JSON
//! with its stats: distinct indices and the share of high-frequency indices (count >= tau).
//!
//! Weights: none (codes mixed equally), one per code (normalised), or one per code after the
//! first, which then takes the rest of 1 (`--code 1234 --code 99 --weight 0.3` gives 0.7 and
//! 0.3). `--codes A..B` samples every code of a range on its own instead (no interpolation)
//! and reports the stats over all of them: that is how suppression is measured
//! (`--no-suppression` against the default).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;

use crate::sample::{interpolate, CodeRng};
use crate::stages::ar_sample::{stats, StyleGenerator};

#[derive(Args)]
pub struct SampleStyleArgs {
    /// A style code: any unsigned 64-bit integer (repeatable: interpolate several).
    #[arg(long = "code", value_parser = parse_code)]
    codes: Vec<u64>,
    /// Interpolation weights (see the command's help above).
    #[arg(long = "weight")]
    weights: Vec<f64>,
    /// Sample every code of a half-open range A..B on its own and report the stats over all.
    #[arg(long = "codes", value_name = "A..B", conflicts_with_all = ["codes", "weights"])]
    range: Option<String>,
    /// The AR checkpoint (`step-N`, `final`) or run folder (its `latest`).
    #[arg(long)]
    ar: PathBuf,
    /// Write the JSON here instead of printing the sequence.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sample without high-frequency suppression.
    #[arg(long)]
    no_suppression: bool,
    /// Override the checkpoint's sampling temperature.
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    repetition_penalty: Option<f64>,
    /// Codes decoded together in one batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// A style code: a decimal unsigned 64-bit integer.
pub(crate) fn parse_code(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!(
            "a style code is an unsigned 64-bit integer (0 to {}), got `{s}`",
            u64::MAX
        )
    })
}

/// `A..B` -> A..B, both style codes, A < B.
fn parse_range(s: &str) -> Result<std::ops::Range<u64>> {
    let Some((a, b)) = s.split_once("..") else {
        bail!("--codes takes a range A..B, got `{s}`");
    };
    let (a, b) = (
        parse_code(a).map_err(anyhow::Error::msg)?,
        parse_code(b).map_err(anyhow::Error::msg)?,
    );
    if a >= b {
        bail!("--codes {s}: the range is empty");
    }
    Ok(a..b)
}

/// The weight of every code (see the module header).
fn weights_for(codes: usize, given: &[f64]) -> Result<Vec<f64>> {
    if given.is_empty() {
        return Ok(vec![1.0; codes]);
    }
    if given.len() == codes {
        return Ok(given.to_vec());
    }
    if given.len() + 1 == codes {
        let rest = 1.0 - given.iter().sum::<f64>();
        if rest < 0.0 {
            bail!("the weights of the codes after the first sum to more than 1 ({given:?})");
        }
        let mut w = vec![rest];
        w.extend_from_slice(given);
        return Ok(w);
    }
    bail!(
        "{} weights for {codes} codes: give one per code, or one per code after the first",
        given.len()
    );
}

pub fn run(a: SampleStyleArgs) -> Result<()> {
    let gen = StyleGenerator::load(
        &a.ar,
        |s| {
            s.suppression.enabled &= !a.no_suppression;
            s.temperature = a.temperature.unwrap_or(s.temperature);
            s.top_k = a.top_k.unwrap_or(s.top_k);
            s.top_p = a.top_p.unwrap_or(s.top_p);
            s.repetition_penalty = a.repetition_penalty.unwrap_or(s.repetition_penalty);
        },
        &Device::Cpu,
    )?;
    let sampling = serde_json::to_value(&gen.sample)?;
    let head = serde_json::json!({
        "checkpoint": gen.checkpoint,
        "step": gen.step,
        "sampling": sampling,
    });
    let json = match &a.range {
        Some(r) => sample_range(&gen, parse_range(r)?, a.batch.max(1), head)?,
        None => sample_one(&gen, &a.codes, &a.weights, head)?,
    };
    let text = serde_json::to_string_pretty(&json)? + "\n";
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None if a.range.is_none() => println!("{}", serde_json::to_string(&json["sequence"])?),
        None => {}
    }
    Ok(())
}

/// One sequence: a code's, or several codes' interpolated.
fn sample_one(
    gen: &StyleGenerator,
    codes: &[u64],
    weights: &[f64],
    mut json: serde_json::Value,
) -> Result<serde_json::Value> {
    if codes.is_empty() {
        bail!("give a style code: --code 1234 (any unsigned 64-bit integer), or --codes A..B");
    }
    let w = weights_for(codes.len(), weights)?;
    let seqs = gen.sample(codes)?;
    let seq = if codes.len() == 1 {
        seqs[0].clone()
    } else {
        interpolate(&seqs, &w, &CodeRng::new(codes[0]))?
    };
    let st = stats(&seq, &gen.sampler);
    eprintln!(
        "{} indices, {} distinct, {:.1}% high-frequency (count >= tau)",
        seq.len(),
        st.distinct,
        100.0 * st.high_frequency_share
    );
    json["codes"] = serde_json::json!(codes);
    json["weights"] = serde_json::json!(w);
    json["sequence"] = serde_json::json!(seq);
    json["stats"] = serde_json::to_value(&st)?;
    Ok(json)
}

/// Every code of `range` on its own, in batches; stats per code and over all.
fn sample_range(
    gen: &StyleGenerator,
    range: std::ops::Range<u64>,
    batch: usize,
    mut json: serde_json::Value,
) -> Result<serde_json::Value> {
    let codes: Vec<u64> = range.clone().collect();
    let started = std::time::Instant::now();
    let mut all = Vec::with_capacity(codes.len());
    for chunk in codes.chunks(batch) {
        all.extend(gen.sample(chunk)?);
        eprint!("\r{}/{} codes", all.len(), codes.len());
    }
    eprintln!();
    let per: Vec<_> = all.iter().map(|s| stats(s, &gen.sampler)).collect();
    let n = per.len() as f64;
    let high = per.iter().map(|s| s.high_frequency_share).sum::<f64>() / n;
    let distinct = per.iter().map(|s| s.distinct as f64).sum::<f64>() / n;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} codes: mean {distinct:.1} distinct indices per sequence, high-frequency share {:.2}% ({:.1} codes/s)",
        codes.len(),
        100.0 * high,
        n / secs
    );
    json["codes"] = serde_json::json!({"from": range.start, "to": range.end});
    json["mean_distinct"] = serde_json::json!(distinct);
    json["high_frequency_share"] = serde_json::json!(high);
    json["sequences"] = serde_json::json!(all);
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_u64_and_anything_else_is_named() {
        assert_eq!(parse_code("18446744073709551615"), Ok(u64::MAX));
        for bad in ["-1", "18446744073709551616", "12a", "1.5", ""] {
            let e = parse_code(bad).unwrap_err();
            assert!(
                e.contains("unsigned 64-bit") && e.contains(&format!("`{bad}`")),
                "{e}"
            );
        }
        assert_eq!(parse_range("3..7").unwrap(), 3..7);
        assert!(parse_range("7..3").is_err() && parse_range("7").is_err());
    }

    #[test]
    fn weights_default_equal_and_the_first_code_takes_the_rest() {
        assert_eq!(weights_for(2, &[]).unwrap(), [1.0, 1.0]);
        assert_eq!(weights_for(2, &[0.3]).unwrap(), [0.7, 0.3]);
        assert_eq!(weights_for(2, &[2.0, 6.0]).unwrap(), [2.0, 6.0]);
        assert!(weights_for(3, &[0.8, 0.5]).is_err());
        assert!(weights_for(3, &[0.1, 0.1, 0.1, 0.1]).is_err());
    }
}
