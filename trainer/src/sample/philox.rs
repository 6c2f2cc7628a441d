//! The random numbers a style code seeds: Philox4x32-10, a counter-based generator (Salmon,
//! Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11; the Random123
//! library, whose `tests/kat_vectors` our tests check), and `CodeRng`, which turns a style
//! code into uniform draws (DESIGN.md, "Autoregressive style generator": "the numeric style
//! code seeds the RNG").
//!
//! Why counter-based: draw `t` of stream `s` for code `c` is a pure function of `(c, s, t)`
//! (the code is the key, stream and position are the counter). There is no generator state to
//! carry between positions, to checkpoint, or to split between threads, so a code gives the
//! same sequence on every machine, thread count, batch size and backend (DESIGN.md, rules of
//! the house, "Determinism"), and any single draw can be recomputed on its own (random
//! access: re-sampling position 57 of code 42 needs no positions 0..56).
//!
//! Why Philox: it is the counter-based generator of cuRAND, JAX and PyTorch's CUDA backend,
//! passes TestU01's BigCrush (the SC'11 paper), and costs ten rounds of two 32x32->64-bit
//! multiplies per four words: nothing next to the model call each draw waits for.

/// Philox4x32 round multipliers (Random123 `PHILOX_M4x32_0`, `PHILOX_M4x32_1`).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
/// Weyl-sequence key increments (Random123 `PHILOX_W32_0`, `PHILOX_W32_1`: the golden ratio
/// and sqrt(3) - 1, as 32-bit fractions).
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// (high, low) 32-bit halves of the 64-bit product a * b.
#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32 round (Random123 `_philox4x32round`).
#[inline]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(M0, c[0]);
    let (hi1, lo1) = mulhilo(M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox4x32 with 10 rounds: the block `counter` encrypts to under `key`. The key is bumped
/// by the Weyl increments between rounds (9 bumps for 10 rounds), as in Random123's
/// `philox4x32_R(10, ctr, key)`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        c = round(c, k);
    }
    c
}

/// What a draw is for. Each purpose has its own counter range, so the draws for one never
/// reuse those of another (the first index, token `t` and the interpolation choice at
/// position `t` are independent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The first index of a sequence (drawn uniformly over the vocabulary).
    First = 0,
    /// The index at sequence position `t >= 1`, drawn from the generator's logits.
    Token = 1,
    /// Style interpolation: which code's sequence position `t` is taken from.
    Mix = 2,
}

/// The uniform draws of one style code: the code is the Philox key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRng {
    key: [u32; 2],
}

impl CodeRng {
    /// key = [low 32 bits, high 32 bits] of the code: every u64 code is a distinct key.
    pub fn new(code: u64) -> Self {
        CodeRng {
            key: [code as u32, (code >> 32) as u32],
        }
    }

    /// The uniform draw in [0, 1) for `stream` at `position`: Philox4x32-10 of the counter
    /// [position low, position high, stream, 0]; its first two words make a 64-bit integer
    /// whose top 53 bits, times 2^-53, are the draw: an exact multiple of 2^-53, so no
    /// rounding differs between machines and 1.0 can never come out.
    pub fn uniform(&self, stream: Stream, position: u64) -> f64 {
        let ctr = [position as u32, (position >> 32) as u32, stream as u32, 0];
        let w = philox4x32_10(ctr, self.key);
        let bits = ((w[0] as u64) << 32 | w[1] as u64) >> 11;
        bits as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 `tests/kat_vectors`, the three `philox4x32 10` lines: counter (4 words), key
    /// (2 words), expected output (4 words). Cross-checked against randomgen 2.5.1's
    /// `Philox(number=4, width=32)` (which increments its counter before each block, so it
    /// is given counter - 1).
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0, 0, 0, 0],
            [0, 0],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [0xffffffff; 4],
            [0xffffffff; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn matches_random123_known_answers() {
        for (ctr, key, want) in KAT {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "ctr {ctr:08x?} key {key:08x?}"
            );
        }
    }

    #[test]
    fn code_is_split_into_the_key_low_word_first() {
        assert_eq!(
            CodeRng::new(0x0123_4567_89ab_cdef).key,
            [0x89ab_cdef, 0x0123_4567]
        );
        assert_eq!(CodeRng::new(7).key, [7, 0]);
    }

    #[test]
    fn uniform_is_pinned() {
        // Literal values, computed independently in Python from randomgen's Philox4x32-10
        // blocks with the layout documented on `uniform`, so a change of layout (word
        // order, stream slot, bit selection, key split) shows.
        let pins = [
            (0u64, Stream::First, 0u64, 0.3990464708489645),
            (42, Stream::Token, 1, 0.12889964738662518),
            (u64::MAX, Stream::Mix, 195, 0.4905202359449602),
            (1 << 40, Stream::Token, 1 << 33, 0.9438676417464331),
        ];
        for (code, stream, pos, want) in pins {
            assert_eq!(
                CodeRng::new(code).uniform(stream, pos),
                want,
                "code {code} {stream:?} {pos}"
            );
        }
    }

    #[test]
    fn draws_are_in_range_multiples_of_2_pow_minus_53_and_distinct() {
        let streams = [Stream::First, Stream::Token, Stream::Mix];
        let mut seen = std::collections::HashSet::new();
        for code in [0u64, 1, 2, 1 << 32, u64::MAX] {
            let rng = CodeRng::new(code);
            for s in streams {
                for t in 0..50u64 {
                    let u = rng.uniform(s, t);
                    assert!((0.0..1.0).contains(&u), "{u}");
                    let scaled = u * 2f64.powi(53);
                    assert_eq!(scaled, scaled.trunc(), "{u} is not a multiple of 2^-53");
                    // 750 draws of 53 bits: a repeat would mean two (code, stream, position)
                    // triples share a counter and key.
                    assert!(seen.insert(u.to_bits()), "repeat at {code} {s:?} {t}");
                }
            }
        }
        // Same triple, same draw (a pure function).
        let r = CodeRng::new(99);
        assert_eq!(
            r.uniform(Stream::Mix, 3),
            CodeRng::new(99).uniform(Stream::Mix, 3)
        );
    }

    #[test]
    fn draws_look_uniform() {
        // Mean and the share below 1/4 over 4000 draws: 1/2 and 1/4 within a few sigma.
        let rng = CodeRng::new(12345);
        let n = 4000;
        let us: Vec<f64> = (0..n).map(|t| rng.uniform(Stream::Token, t)).collect();
        let mean = us.iter().sum::<f64>() / n as f64;
        let low = us.iter().filter(|&&u| u < 0.25).count() as f64 / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!((low - 0.25).abs() < 0.03, "share below 1/4: {low}");
    }
}
