//! Fused differentiable ops for cotyle as candle `CustomOp`s, with forward *and* backward on
//! CPU and CUDA (DESIGN.md, "Layout": `kernels/`). Empty for now: the ops arrive with issue 3.
//! Until then no model may rely on this crate.
