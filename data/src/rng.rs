//! The project's own deterministic random number generator (DESIGN.md, "Determinism").
//!
//! Every random choice in the synthetic data (styles, scenes, pair sampling) comes from here,
//! never from the `rand` crate, so a seed gives byte-identical results forever, on every
//! machine, compiler version and thread count.
//!
//! - Seeding and sub-seed derivation use **SplitMix64** (Steele, Lea, Flood, "Fast splittable
//!   pseudorandom number generators", OOPSLA 2014): its finaliser is a strong 64-bit bijective
//!   mixer, so `mix(seed, k)` for neighbouring `k` gives unrelated streams.
//! - The stream itself is **xoshiro256\*\*** (Blackman and Vigna, "Scrambled linear
//!   pseudorandom number generators", 2018), whose 256-bit state is filled by four SplitMix64
//!   outputs as its authors recommend (this also rules out the all-zero state).
//!
//! Floats take the top bits of one `u64` (24 for `f32`, 53 for `f64`) so they are exact
//! multiples of 2^-24 / 2^-53 in [0, 1). Integer ranges use Lemire's multiply-and-reject
//! method, which is unbiased. The pinned-output test below catches any change of stream.

/// The SplitMix64 increment (2^64 / golden ratio).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective avalanche mixer of one `u64`.
fn splitmix_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step: advances `state` and returns the next output.
fn splitmix_next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN_GAMMA);
    splitmix_finalize(*state)
}

/// Derives an independent sub-seed from a seed and a stream label, e.g.
/// `mix(style_seed, FACTOR_PALETTE)`. Not symmetric: `mix(a, b) != mix(b, a)` in general.
pub fn mix(a: u64, b: u64) -> u64 {
    let ha = splitmix_finalize(a.wrapping_add(GOLDEN_GAMMA));
    splitmix_finalize(ha ^ b.wrapping_mul(GOLDEN_GAMMA).rotate_left(23) ^ 0x5851_F42D_4C95_7F2D)
}

/// xoshiro256** generator seeded through SplitMix64. Cheap to clone; a clone continues the
/// same stream independently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose stream is a pure function of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let state = [
            splitmix_next(&mut sm),
            splitmix_next(&mut sm),
            splitmix_next(&mut sm),
            splitmix_next(&mut sm),
        ];
        Rng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), from the top 24 bits (every value is a multiple of 2^-24).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [0, 1), from the top 53 bits (every value is a multiple of 2^-53).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n), unbiased (Lemire's multiply-shift with rejection).
    ///
    /// # Panics
    /// If `n == 0` (the range would be empty); callers pass lengths of non-empty tables.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0): empty range");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            // Reject the few low products that would over-represent some outputs.
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in [lo, hi) (or exactly `lo` when `lo == hi`).
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// True with probability `p` (p <= 0 never, p >= 1 always).
    pub fn chance(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }

    /// A uniformly chosen element.
    ///
    /// # Panics
    /// If `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        assert!(!items.is_empty(), "Rng::pick on an empty slice");
        &items[self.below(items.len() as u64) as usize]
    }

    /// Index drawn with probability proportional to `weights[i]` (non-negative, not all zero).
    ///
    /// # Panics
    /// If `weights` is empty or sums to zero.
    pub fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f32 = weights.iter().sum();
        assert!(total > 0.0, "Rng::weighted needs a positive total weight");
        let mut target = self.next_f32() * total;
        for (i, &w) in weights.iter().enumerate() {
            if target < w {
                return i;
            }
            target -= w;
        }
        // Rounding can leave `target` just above the last bucket: take the last non-zero one.
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }

    /// In-place uniform permutation (Fisher-Yates, from the back).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Standard normal N(0, 1) by Box-Muller; consumes exactly two `u64` per call (the second
    /// variate is dropped so the stream position never depends on call history).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: ln is finite
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_first_outputs_are_pinned() {
        let mut r = Rng::new(42);
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, PINNED_SEED_42);
        assert_eq!(mix(1, 2), PINNED_MIX_1_2);
    }

    // Cross-checked against an independent Python transcription of the reference
    // SplitMix64 + xoshiro256** code (SplitMix64 from 0 gives 0xE220A8397B1DCDAF).
    const PINNED_SEED_42: [u64; 4] = [
        1_546_998_764_402_558_742,
        6_990_951_692_964_543_102,
        12_544_586_762_248_559_009,
        17_057_574_109_182_124_193,
    ];
    const PINNED_MIX_1_2: u64 = 4_380_780_520_483_708_400;

    #[test]
    fn splitmix_matches_reference() {
        let mut state = 0;
        assert_eq!(splitmix_next(&mut state), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn rng_same_seed_same_stream_and_clone_continues() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = a.clone();
        assert_eq!(a.next_f64(), c.next_f64());
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn rng_below_stays_in_range_and_is_roughly_uniform() {
        let mut r = Rng::new(3);
        let n = 10u64;
        let mut counts = [0u32; 10];
        let draws = 100_000;
        for _ in 0..draws {
            let v = r.below(n);
            assert!(v < n);
            counts[v as usize] += 1;
        }
        let expected = draws as f64 / n as f64;
        for &c in &counts {
            assert!((c as f64 - expected).abs() < expected * 0.05, "{counts:?}");
        }
        assert_eq!(r.below(1), 0);
        for _ in 0..1000 {
            assert!(r.below(u64::MAX) < u64::MAX);
            assert!(r.below(3) < 3);
        }
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn rng_below_zero_panics() {
        Rng::new(0).below(0);
    }

    #[test]
    fn rng_floats_in_unit_interval() {
        let mut r = Rng::new(11);
        let mut sum = 0.0f64;
        for _ in 0..10_000 {
            let a = r.next_f32();
            let b = r.next_f64();
            assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b));
            let c = r.range_f32(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&c));
            sum += b;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
    }

    #[test]
    fn rng_shuffle_is_a_permutation() {
        let mut r = Rng::new(5);
        let mut v: Vec<u32> = (0..50).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        let mut empty: [u8; 0] = [];
        r.shuffle(&mut empty);
    }

    #[test]
    fn rng_mix_differs_for_neighbouring_inputs() {
        let mut seen = std::collections::HashSet::new();
        for a in 0..32u64 {
            for b in 0..32u64 {
                assert!(seen.insert(mix(a, b)), "collision at ({a}, {b})");
            }
        }
        assert_ne!(mix(1, 2), mix(2, 1));
        // Neighbouring labels flip about half the bits.
        let flips = (mix(9, 0) ^ mix(9, 1)).count_ones();
        assert!((16..=48).contains(&flips), "{flips}");
    }

    #[test]
    fn rng_normal_has_unit_moments_and_pick_weighted_work() {
        let mut r = Rng::new(13);
        let n = 20_000;
        let xs: Vec<f32> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f32>() / n as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert!(xs.iter().all(|x| x.is_finite()));
        let items = ["a", "b", "c"];
        assert!(items.contains(r.pick(&items)));
        for _ in 0..100 {
            assert_eq!(r.weighted(&[0.0, 1.0, 0.0]), 1);
        }
    }
}
