//! y (n, out) = x (n, in) · Wᵀ for a handful of rows (n <= [`FEW_ROWS`]), f32 on CPU: the
//! shape of decoding, where each step multiplies one token per sequence by every weight
//! matrix. A general gemm packs W (out, in) into panels on every call, which for a few rows
//! reads and writes the whole weight once more than the product itself does: decoding is
//! bound by reading weights, so that doubles its cost (measured with `trainer bench ar`).
//!
//! Here W is streamed once, as it lies: each task takes a block of W's rows, and for each
//! group of four of them (in L1 after the first row of x) takes the dot products with every
//! row of x (in L2). A dot product keeps `LANES` partial sums with separate multiply and add,
//! then adds them in a fixed order, so every result is the same bits for any thread count and
//! any SIMD build (DESIGN.md, "Determinism"), as the crate's other reductions.

use crate::simd::{multiversion, LANES};
use rayon::prelude::*;

/// Rows of x up to which [`matmul_wt`] is used instead of the gemm.
pub(crate) const FEW_ROWS: usize = 8;
/// W rows per task: enough work to amortise a task, small enough to spread over threads.
const ROWS_PER_TASK: usize = 64;
/// W rows per register tile.
const TILE: usize = 4;

/// y (n, out) = x (n, inp) · Wᵀ with x and w dense row-major, w (out, inp).
pub(crate) fn matmul_wt(x: &[f32], w: &[f32], n: usize, inp: usize, out: usize) -> Vec<f32> {
    debug_assert_eq!((x.len(), w.len()), (n * inp, out * inp));
    // Tasks write W-row-major results (out, n), one contiguous block each; transposed after.
    let mut yt = vec![0f32; out * n];
    yt.par_chunks_mut(ROWS_PER_TASK * n)
        .zip(w.par_chunks(ROWS_PER_TASK * inp))
        .for_each(|(yt, w)| block(x, w, yt, n, inp));
    let mut y = vec![0f32; n * out];
    for (j, col) in yt.chunks_exact(n).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            y[i * out + j] = v;
        }
    }
    y
}

multiversion! {
    /// yt (rows, n) = (x (n, inp) · w (rows, inp)ᵀ)ᵀ for one task's rows of w.
    fn block<T: Real>(x: &[T], w: &[T], yt: &mut [T], n: usize, inp: usize) {
        let rows = w.len() / inp;
        let mut r = 0;
        while r < rows {
            let t = TILE.min(rows - r);
            for i in 0..n {
                let xi = &x[i * inp..(i + 1) * inp];
                let mut acc = [[T::ZERO; LANES]; TILE];
                let full = inp / LANES * LANES;
                let mut k = 0;
                while k < full {
                    let xv = &xi[k..k + LANES];
                    for (a, acc) in acc.iter_mut().enumerate().take(t) {
                        let wr = &w[(r + a) * inp + k..(r + a) * inp + k + LANES];
                        for l in 0..LANES {
                            acc[l] += xv[l] * wr[l];
                        }
                    }
                    k += LANES;
                }
                for (a, acc) in acc.iter().enumerate().take(t) {
                    let wr = &w[(r + a) * inp..(r + a + 1) * inp];
                    // The lanes in a fixed order, then the tail.
                    let mut s = T::ZERO;
                    for v in acc {
                        s += *v;
                    }
                    for kk in full..inp {
                        s += xi[kk] * wr[kk];
                    }
                    yt[(r + a) * n + i] = s;
                }
            }
            r += t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761);
                (h >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn matches_a_plain_product_over_odd_shapes() {
        for (n, inp, out) in [
            (1, 1, 1),
            (1, 17, 5),
            (3, 64, 130),
            (8, 100, 67),
            (2, 15, 257),
        ] {
            let (x, w) = (values(n * inp, 1), values(out * inp, 2));
            let y = matmul_wt(&x, &w, n, inp, out);
            for i in 0..n {
                for j in 0..out {
                    let want: f64 = (0..inp)
                        .map(|k| x[i * inp + k] as f64 * w[j * inp + k] as f64)
                        .sum();
                    let got = y[i * out + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "({n},{inp},{out}) [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_same_bits_on_any_thread_count() {
        let (n, inp, out) = (5, 200, 700);
        let (x, w) = (values(n * inp, 3), values(out * inp, 4));
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| matmul_wt(&x, &w, n, inp, out))
        };
        assert_eq!(run(1), run(3));
    }
}
