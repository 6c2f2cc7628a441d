//! Stopping a run cleanly on a signal: Ctrl-C (SIGINT), SIGTERM (what SLURM sends before a
//! preemption or the time limit) and SIGHUP (the terminal went away) set a process-wide flag
//! that the loops poll with [`requested`] between steps, then save a checkpoint and return.
//! A second signal exits at once with code 130 (128 + SIGINT), for a loop stuck in a step.
//!
//! The `ctrlc` crate runs our handler on its own thread (not in signal context), so the
//! handler may log and exit normally. Each rank sees its own signal; loops that need all
//! ranks to stop at the same step combine the flag across ranks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::{anyhow, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Installs the handler; later calls return the first call's outcome.
pub fn install() -> Result<()> {
    INSTALLED
        .get_or_init(|| ctrlc::set_handler(on_signal).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| anyhow!("cannot install the SIGINT/SIGTERM handler: {e}"))
}

/// Whether a stop signal has arrived since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

fn on_signal() {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
        REQUESTED.store(true, Ordering::SeqCst);
        tracing::warn!(
            "stop requested: saving a checkpoint after this step, then exiting \
             (signal again to exit now, without one)"
        );
    } else {
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(130);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test that raises a signal in this test binary: a second one would exit it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn sigint_sets_the_flag() -> Result<()> {
        install()?;
        install()?;
        assert!(!requested());
        // SAFETY: raise() only queues a signal for this thread; the handler is installed.
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        // The handler runs on ctrlc's thread: wait for it.
        let t0 = std::time::Instant::now();
        while !requested() && t0.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(requested());
        assert_eq!(SIGNALS.load(Ordering::SeqCst), 1);
        Ok(())
    }
}
