//! Pieces every training loop shares (DESIGN.md, "Layout": `src/train/`). So far: the `train`
//! config section; the optimiser, schedule, clipping, EMA and checkpoints join it with the
//! first stage (issue 4).

pub mod config;

pub use config::TrainConfig;
