//! Scalar building blocks that the compiler auto-vectorises: the `Real` element trait (f32, f64),
//! lane-split reductions, a branch-free `exp` for f32, and the `multiversion!` macro that
//! compiles a row kernel three times (baseline x86-64, AVX2, AVX-512F) and picks the best
//! one the CPU supports at run time.
//!
//! Reductions keep `LANES` independent accumulators: without fast-math LLVM may not reorder a
//! floating-point sum, so a plain `iter().sum()` stays scalar; a fixed lane split vectorises
//! and, because the split does not depend on the vector width (and no build fuses a multiply
//! and an add), all builds give bit-identical results (DESIGN.md, "Determinism"; tested).
//!
//! The f32 `exp` is the Cephes `expf` scheme (range reduction by ln 2, degree-6 polynomial,
//! exponent built in the float's bits); relative error about 2e-7 over the normal range.

use std::ops::{Add, AddAssign, Div, Mul, Sub};

/// Accumulators per reduction; a multiple of every vector width we target (4, 8, 16 f32).
pub(crate) const LANES: usize = 16;

/// The element types our CPU kernels compute in: f32 (also for bf16/f16 storage) and f64.
pub(crate) trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn from_f64(v: f64) -> Self;
    fn sqrt(self) -> Self;
    /// e^self; vectorisable for f32 (see the module header), `f64::exp` for f64.
    fn exp(self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// e^x for f32 without branches or libm calls, so loops over it vectorise. Normal and
/// subnormal results down to x = -104 (exact 0 below), +inf above 88.72, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const HI: f32 = 88.722_83;
    const LO: f32 = -104.0;
    let xc = x.clamp(LO, HI);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n as two factors so that n in [-150, 128] never leaves the exponent range.
    let n1 = ni >> 1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - n1 + 127) as u32) << 23);
    let v = y * s1 * s2;
    let v = if x < LO { 0.0 } else { v };
    if x > HI {
        f32::INFINITY
    } else {
        v
    }
}

#[inline(always)]
fn fold<T: Real>(acc: [T; LANES], tail: T) -> T {
    let mut s = T::ZERO;
    for a in acc {
        s += a;
    }
    s + tail
}

/// sum_i f(a_i), lane-split.
#[inline(always)]
pub(crate) fn sum_map<T: Real>(a: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::ZERO; LANES];
    let mut ca = a.chunks_exact(LANES);
    for x in &mut ca {
        for l in 0..LANES {
            acc[l] += f(x[l]);
        }
    }
    let mut tail = T::ZERO;
    for &x in ca.remainder() {
        tail += f(x);
    }
    fold(acc, tail)
}

/// sum_i f(a_i, b_i) over the common length, lane-split.
#[inline(always)]
pub(crate) fn sum_map2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let mut tail = T::ZERO;
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += f(x, y);
    }
    fold(acc, tail)
}

/// sum_i f(a_i, b_i, c_i) over the common length, lane-split.
#[inline(always)]
pub(crate) fn sum_map3<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> T {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut acc = [T::ZERO; LANES];
    let (mut ca, mut cb, mut cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    for ((x, y), z) in (&mut ca).zip(&mut cb).zip(&mut cc) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l], z[l]);
        }
    }
    let mut tail = T::ZERO;
    for ((&x, &y), &z) in ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
    {
        tail += f(x, y, z);
    }
    fold(acc, tail)
}

/// max_i a_i (NEG_INF for an empty slice; NaNs are skipped).
#[inline(always)]
pub(crate) fn max<T: Real>(a: &[T]) -> T {
    let mut acc = [T::NEG_INF; LANES];
    let mut ca = a.chunks_exact(LANES);
    for x in &mut ca {
        for l in 0..LANES {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    let mut m = T::NEG_INF;
    for v in acc.into_iter().chain(ca.remainder().iter().copied()) {
        m = if v > m { v } else { m };
    }
    m
}

/// Which build of the kernels runs: the baseline target, AVX2, or AVX-512F (x86-64 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Level {
    Base,
    Avx2,
    Avx512,
}

/// The best build this CPU supports (std caches the detection).
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Base
}

/// Tests may cap the build used (process-wide) to compare the builds' results; only through
/// [`assert_builds_agree`], which serialises the tests that lower it.
#[cfg(test)]
static CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

/// Runs `f` on the best build, then capped at AVX2 and at the baseline, and panics (naming
/// `what` and the cap) unless all give the same result. CAP is process-wide and tests run in
/// parallel, so a lock keeps two such tests from interleaving their caps, and a guard restores
/// the cap even when `f` panics.
#[cfg(test)]
pub(crate) fn assert_builds_agree<R: PartialEq>(what: &str, f: impl Fn() -> R) {
    use std::sync::atomic::Ordering;
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            CAP.store(2, Ordering::Relaxed);
        }
    }
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore;
    let best = f();
    for cap in [1u8, 0] {
        CAP.store(cap, Ordering::Relaxed);
        assert!(
            f() == best,
            "{what}: the build capped at {cap} differs from {:?}",
            detected()
        );
    }
}

/// The build the kernels run now.
#[inline]
pub(crate) fn level() -> Level {
    let l = detected();
    #[cfg(test)]
    let l = l.min(match CAP.load(std::sync::atomic::Ordering::Relaxed) {
        0 => Level::Base,
        1 => Level::Avx2,
        _ => Level::Avx512,
    });
    l
}

/// Defines `fn $name<T: Real>(args)` whose body is compiled for the baseline target and, on
/// x86-64, again with AVX2 and with AVX-512F enabled; the best copy the CPU supports runs. The
/// body must only call `#[inline(always)]` helpers so that every copy is vectorised.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident<T: Real>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name<T: $crate::simd::Real>($($arg: $ty),*) {
            #[inline(always)]
            fn body<T: $crate::simd::Real>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<T: $crate::simd::Real>($($arg: $ty),*) {
                    body::<T>($($arg),*)
                }
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<T: $crate::simd::Real>($($arg: $ty),*) {
                    body::<T>($($arg),*)
                }
                match $crate::simd::level() {
                    // SAFETY: `level` reports only what the CPU supports.
                    $crate::simd::Level::Avx512 => return unsafe { avx512::<T>($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::Level::Avx2 => return unsafe { avx2::<T>($($arg),*) },
                    $crate::simd::Level::Base => {}
                }
            }
            body::<T>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_matches_libm() {
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.72 {
            let want = (x as f64).exp();
            let rel = ((exp_f32(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            x += 0.013;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        let sub = exp_f32(-90.0) as f64;
        assert!((sub / (-90f64).exp() - 1.0).abs() < 1e-3, "subnormal {sub}");
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(1000.0).is_infinite());
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// Forward and gradients of every op, as f32 bits, on the current build.
    fn all_ops_bits() -> Vec<Vec<u32>> {
        use candle_core::{Device, Tensor, Var};
        let dev = &Device::Cpu;
        let vals = |n: usize, k: f32| {
            (0..n)
                .map(|i| ((i as f32) * k).sin() * 3.0)
                .collect::<Vec<_>>()
        };
        let x = Var::from_vec(vals(300 * 129, 0.37), (300, 129), dev).unwrap();
        let w = Var::from_vec(vals(129, 0.11), 129, dev).unwrap();
        let b = Var::from_vec(vals(129, 0.23), 129, dev).unwrap();
        let r = Tensor::from_vec(vals(300 * 129, 0.05), (300, 129), dev).unwrap();
        let ys = [
            crate::softmax_last_dim(&x).unwrap(),
            crate::rms_norm(&x, &w, 1e-5).unwrap(),
            crate::layer_norm(&x, &w, Some(&b), 1e-5).unwrap(),
        ];
        let mut out = Vec::new();
        for y in ys {
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut ts = vec![y];
            ts.extend([&x, &w, &b].iter().filter_map(|v| g.get(v).cloned()));
            for t in ts {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                out.push(v.iter().map(|f| f.to_bits()).collect());
            }
        }
        out
    }

    #[test]
    fn builds_that_differ_are_caught() {
        if detected() == Level::Base {
            return; // one build only: nothing can differ
        }
        let caught = std::panic::catch_unwind(|| assert_builds_agree("level", level));
        assert!(
            caught.is_err(),
            "a result that depends on the build was not reported"
        );
        assert_eq!(
            level(),
            detected(),
            "the cap was not restored after the panic"
        );
    }

    #[test]
    fn every_simd_build_gives_identical_bits() {
        assert_builds_agree("softmax, rms_norm, layer_norm", all_ops_bits);
    }

    #[test]
    fn lane_reductions_match_sequential() {
        for n in [0usize, 1, 7, 16, 17, 33, 129] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let s: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((sum_map2(&a, &b, |x, y| x * y) - s).abs() < 1e-12);
            let s3: f64 = a.iter().zip(&b).map(|(x, y)| x * y * y).sum();
            assert!((sum_map3(&a, &b, &b, |x, y, z| x * y * z) - s3).abs() < 1e-12);
            assert!((sum_map(&a, |x| x * x) - a.iter().map(|x| x * x).sum::<f64>()).abs() < 1e-12);
            let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(max(&a), m);
        }
    }
}
