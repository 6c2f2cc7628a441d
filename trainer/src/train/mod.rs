//! Pieces every training loop shares (DESIGN.md, "Layout": `src/train/`): the `train` config
//! section, AdamW with checkpointable state and clipping, the learning-rate schedule,
//! checkpoints (`checkpoint`), metric sinks (`metrics`, `tensorboard`), the progress display
//! (`progress`), the stop-signal flag (`stop`), and `run`: the run folder, resume, cadence and
//! gradient accumulation around each loop's own step; `ema`, the moving average of the
//! weights a diffusion model is sampled from.

pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod metrics;
pub mod optim;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod stop;
pub mod tensorboard;

pub use config::TrainConfig;
