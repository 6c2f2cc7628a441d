//! The x86-64 register tiles of `vq::nearest_code` for f32: 6 rows x 16 codes in AVX2 (12
//! accumulators) and 8 rows x 32 codes in AVX-512F (16 accumulators; about 25% faster on AMD
//! Zen 4). Per step
//! of d: NR/width loads of the code panel, MR broadcasts of a row element, and a separate
//! multiply and add per accumulator (no FMA, so the scores are bit-identical to the portable tile's; on
//! AMD Zen 4 the adds issue on their own pipes, so this costs no throughput). The running best
//! is updated with a compare and two blends per vector. Ours (issue 3); see `vq.rs`.

// The two halves of a row of the tile are indexed together with the code vectors.
#![allow(clippy::needless_range_loop)]

use crate::vq::{block, update, Tile};
use std::arch::x86_64::*;

/// 8 x 32 tile with AVX-512F.
struct Avx512;

impl Tile<f32, 8, 32> for Avx512 {
    #[inline(always)]
    unsafe fn tile(a: &[f32], p: &[f32], base: u32, valid: usize, lb: &mut [f32], li: &mut [u32]) {
        tile_avx512(a, p, base, valid, lb, li)
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    a: &[f32],
    p: &[f32],
    base: u32,
    valid: usize,
    lb: &mut [f32],
    li: &mut [u32],
) {
    const MR: usize = 8;
    const NR: usize = 32;
    let d = p.len() / NR;
    assert!(a.len() >= d * MR && lb.len() >= MR * NR && li.len() >= MR * NR);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut pa, mut pb) = (a.as_ptr(), p.as_ptr());
    for _ in 0..d {
        // SAFETY: pa and pb stay within the d * MR and d * NR elements checked above.
        let y = unsafe { [_mm512_loadu_ps(pb), _mm512_loadu_ps(pb.add(16))] };
        for (i, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(unsafe { *pa.add(i) });
            for h in 0..2 {
                acc[h] = _mm512_add_ps(acc[h], _mm512_mul_ps(x, y[h]));
            }
        }
        (pa, pb) = unsafe { (pa.add(MR), pb.add(NR)) };
    }
    if valid < NR {
        let mut s = [0f32; MR * NR];
        for (i, acc) in acc.iter().enumerate() {
            for h in 0..2 {
                unsafe { _mm512_storeu_ps(s.as_mut_ptr().add(i * NR + h * 16), acc[h]) };
            }
        }
        return update(&s, base, valid, NR, lb, li);
    }
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let first = _mm512_add_epi32(_mm512_set1_epi32(base as i32), lane);
    let codes = [first, _mm512_add_epi32(first, _mm512_set1_epi32(16))];
    for (i, acc) in acc.iter().enumerate() {
        for h in 0..2 {
            let o = i * NR + h * 16;
            // SAFETY: o + 16 <= MR * NR, checked above.
            unsafe {
                let (pb, pi) = (lb.as_mut_ptr().add(o), li.as_mut_ptr().add(o) as *mut i32);
                let b = _mm512_loadu_ps(pb);
                let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(acc[h], b);
                _mm512_storeu_ps(pb, _mm512_mask_blend_ps(m, b, acc[h]));
                let ix = _mm512_loadu_epi32(pi);
                _mm512_storeu_epi32(pi, _mm512_mask_blend_epi32(m, ix, codes[h]));
            }
        }
    }
}

/// 6 x 16 tile with AVX2.
struct Avx2;

impl Tile<f32, 6, 16> for Avx2 {
    #[inline(always)]
    unsafe fn tile(a: &[f32], p: &[f32], base: u32, valid: usize, lb: &mut [f32], li: &mut [u32]) {
        tile_avx2(a, p, base, valid, lb, li)
    }
}

#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(a: &[f32], p: &[f32], base: u32, valid: usize, lb: &mut [f32], li: &mut [u32]) {
    const MR: usize = 6;
    const NR: usize = 16;
    let d = p.len() / NR;
    assert!(a.len() >= d * MR && lb.len() >= MR * NR && li.len() >= MR * NR);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut pa, mut pb) = (a.as_ptr(), p.as_ptr());
    for _ in 0..d {
        // SAFETY: pa and pb stay within the d * MR and d * NR elements checked above.
        let y = unsafe { [_mm256_loadu_ps(pb), _mm256_loadu_ps(pb.add(8))] };
        for (i, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_ps(unsafe { *pa.add(i) });
            for h in 0..2 {
                acc[h] = _mm256_add_ps(acc[h], _mm256_mul_ps(x, y[h]));
            }
        }
        (pa, pb) = unsafe { (pa.add(MR), pb.add(NR)) };
    }
    if valid < NR {
        let mut s = [0f32; MR * NR];
        for (i, acc) in acc.iter().enumerate() {
            for h in 0..2 {
                unsafe { _mm256_storeu_ps(s.as_mut_ptr().add(i * NR + h * 8), acc[h]) };
            }
        }
        return update(&s, base, valid, NR, lb, li);
    }
    let first = _mm256_add_epi32(
        _mm256_set1_epi32(base as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let second = _mm256_add_epi32(first, _mm256_set1_epi32(8));
    let codes = [_mm256_castsi256_ps(first), _mm256_castsi256_ps(second)];
    for (i, acc) in acc.iter().enumerate() {
        for h in 0..2 {
            let o = i * NR + h * 8;
            // SAFETY: o + 8 <= MR * NR, checked above.
            unsafe {
                let (pb, pi) = (lb.as_mut_ptr().add(o), li.as_mut_ptr().add(o) as *mut f32);
                let b = _mm256_loadu_ps(pb);
                let m = _mm256_cmp_ps::<_CMP_GT_OQ>(acc[h], b);
                _mm256_storeu_ps(pb, _mm256_blendv_ps(b, acc[h], m));
                let ix = _mm256_loadu_ps(pi);
                _mm256_storeu_ps(pi, _mm256_blendv_ps(ix, codes[h], m));
            }
        }
    }
}

/// A task (see `vq::Search::task`) with the AVX-512F tile.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn task_avx512(
    rows: &[f32],
    panels: &[f32],
    dims: &[usize; 4],
    idx: &mut [u32],
    best: &mut [f32],
) {
    block::<f32, 8, 32, Avx512>(rows, panels, dims, idx, best)
}

/// A task with the AVX2 tile.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn task_avx2(
    rows: &[f32],
    panels: &[f32],
    dims: &[usize; 4],
    idx: &mut [u32],
    best: &mut [f32],
) {
    block::<f32, 6, 16, Avx2>(rows, panels, dims, idx, best)
}
