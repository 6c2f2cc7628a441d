//! Training progress on rank 0 (DESIGN.md, "Logs"): an `indicatif` bar with step/total,
//! the latest values (loss, lr...), steps/s, samples/s and ETA when stderr is a terminal;
//! otherwise (SLURM logs, pipes) a `tracing::info!` line with the same fields every
//! `log_every` steps, since a redrawn bar in a log file is noise.
//!
//! Rates are averaged over the steps this process has run (a resumed run does not count
//! the steps it loaded), which settles within a few log lines and needs no tuning.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const TEMPLATE: &str = "[{elapsed_precise}] {bar:30} {pos}/{len} {msg}";

pub struct Progress {
    mode: Mode,
    total: u64,
    start_step: u64,
    log_every: u64,
    samples_per_step: f64,
    started: Instant,
}

enum Mode {
    Off,
    Bar(ProgressBar),
    Lines,
}

impl Progress {
    /// `enabled`: false on ranks other than 0 (nothing is shown). `start_step`: the step
    /// the run resumed at (0 for a new run).
    pub fn new(
        total_steps: u64,
        start_step: u64,
        log_every: u64,
        samples_per_step: usize,
        enabled: bool,
    ) -> Progress {
        let mode = if !enabled {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total_steps).with_position(start_step);
            // The template is a constant: a parse error is a bug caught by the tests.
            let style = ProgressStyle::with_template(TEMPLATE).expect("valid progress template");
            bar.set_style(style);
            Mode::Bar(bar)
        } else {
            Mode::Lines
        };
        Progress {
            mode,
            total: total_steps,
            start_step,
            log_every: log_every.max(1),
            samples_per_step: samples_per_step as f64,
            started: Instant::now(),
        }
    }

    /// Reports that optimiser step `step` is done, with its values (e.g. loss, lr).
    pub fn update(&mut self, step: u64, values: &[(&str, f64)]) {
        match &self.mode {
            Mode::Off => {}
            Mode::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(self.status(step, values, self.started.elapsed(), false));
            }
            Mode::Lines => {
                if step.is_multiple_of(self.log_every) || step == self.total {
                    let line = self.status(step, values, self.started.elapsed(), true);
                    tracing::info!("{line}");
                }
            }
        }
    }

    /// Runs `f` (e.g. a `tracing` call) with the bar hidden, so the two do not interleave.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Leaves the bar's last state on screen.
    pub fn finish(&mut self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish();
        }
    }

    /// `step 120/1000 loss 0.4231 lr 3.000e-4 | 3.21 steps/s 102.7 samples/s | ETA 4m34s`
    /// (the bar shows step/total itself, so `with_step` is for log lines).
    fn status(
        &self,
        step: u64,
        values: &[(&str, f64)],
        elapsed: Duration,
        with_step: bool,
    ) -> String {
        let mut s = String::new();
        if with_step {
            s.push_str(&format!("step {step}/{} ", self.total));
        }
        for (name, v) in values {
            s.push_str(&format!("{name} {} ", fmt_value(*v)));
        }
        let done = step.saturating_sub(self.start_step);
        let secs = elapsed.as_secs_f64();
        if done == 0 || secs <= 0.0 {
            s.push_str("| warming up");
            return s;
        }
        let rate = done as f64 / secs;
        let eta = self.total.saturating_sub(step) as f64 / rate;
        s.push_str(&format!(
            "| {} steps/s {} samples/s | ETA {}",
            fmt_rate(rate),
            fmt_rate(rate * self.samples_per_step),
            fmt_duration(eta)
        ));
        s
    }
}

/// Four significant digits, in exponent form where fixed point would hide them (lr).
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() || (1e-2..1e5).contains(&a) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

fn fmt_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_has_values_rates_and_eta() {
        let p = Progress::new(1000, 100, 10, 32, false);
        let s = p.status(
            120,
            &[("loss", 0.42311), ("lr", 3e-4)],
            Duration::from_secs(10),
            true,
        );
        assert_eq!(
            s,
            "step 120/1000 loss 0.4231 lr 3.000e-4 | 2.00 steps/s 64.00 samples/s | ETA 7m20s"
        );
        let s = p.status(100, &[("loss", f64::NAN)], Duration::ZERO, false);
        assert_eq!(s, "loss NaN | warming up");
        assert_eq!(fmt_duration(3.0 * 3600.0 + 65.0), "3h01m");
        assert_eq!(fmt_rate(1234.5), "1234");
    }

    #[test]
    fn every_mode_accepts_updates() {
        for enabled in [false, true] {
            let mut p = Progress::new(5, 0, 2, 8, enabled);
            for step in 1..=5 {
                p.update(step, &[("loss", 1.0 / step as f64)]);
            }
            p.suspend(|| ());
            p.finish();
        }
        // The bar's template parses (it is only built on a terminal otherwise).
        ProgressStyle::with_template(TEMPLATE).unwrap();
    }
}
