//! The x86-64 register tiles of the attention products for f32: C (+)= A·B on R x W tiles
//! with R = 4 rows (or 1 for a tail row) and W = 64, 32 or 16 columns in AVX-512F (up to 16
//! accumulators of 32), 16 columns in AVX2 (8 of 16). Per step of the inner index: W/width
//! loads of a row of B, R broadcasts of an element of A, and a separate multiply and add per
//! accumulator (no FMA, so every element is the same sequential sum as the portable tile's;
//! on AMD Zen 4 the adds issue on their own pipes, so this costs no throughput). Written
//! with intrinsics because LLVM vectorises the portable tile for some (R, W) and leaves
//! others scalar.

use super::{tile_offsets, Ops, Span, MR, PAD};
use std::arch::x86_64::*;

/// Defines an R x (NV vectors) tile over raw pointers; the caller checks the bounds.
macro_rules! tile_fn {
    ($name:ident, $feat:literal, $lanes:expr, $zero:ident, $load:ident, $store:ident, $set1:ident,
     $add:ident, $mul:ident) => {
        /// # Safety
        /// The CPU supports the feature; a, b, c cover the tile (checked by `drive!`).
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
        unsafe fn $name<const R: usize, const NV: usize, const AT: bool>(
            a: *const f32,
            lda: usize,
            b: *const f32,
            ldb: usize,
            c: *mut f32,
            ldc: usize,
            (k0, k1): (usize, usize),
            zero: bool,
        ) {
            let mut acc = [[$zero(); NV]; R];
            if !zero {
                for r in 0..R {
                    for v in 0..NV {
                        // SAFETY: inside the tile of c (the caller's check).
                        acc[r][v] = unsafe { $load(c.add(r * ldc + v * $lanes)) };
                    }
                }
            }
            for kk in k0..k1 {
                let mut y = [$zero(); NV];
                for v in 0..NV {
                    // SAFETY: row kk of b, columns < NV * lanes (the caller's check).
                    y[v] = unsafe { $load(b.add(kk * ldb + v * $lanes)) };
                }
                for r in 0..R {
                    // SAFETY: A[r][kk] (the caller's check).
                    let x = $set1(unsafe {
                        if AT {
                            *a.add(kk * lda + r)
                        } else {
                            *a.add(r * lda + kk)
                        }
                    });
                    for v in 0..NV {
                        acc[r][v] = $add(acc[r][v], $mul(x, y[v]));
                    }
                }
            }
            for r in 0..R {
                for v in 0..NV {
                    // SAFETY: inside the tile of c (the caller's check).
                    unsafe { $store(c.add(r * ldc + v * $lanes), acc[r][v]) };
                }
            }
        }
    };
}

tile_fn!(
    tile512,
    "avx512f",
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_add_ps,
    _mm512_mul_ps
);
tile_fn!(
    tile256,
    "avx2",
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_add_ps,
    _mm256_mul_ps
);

/// C (+)= A·B with AVX-512F tiles; see `super::gemm`.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gemm_avx512<const AT: bool>(
    m: usize,
    o: &Ops<f32>,
    c: &mut [f32],
    ldc: usize,
    zero: bool,
    span: impl Fn(usize, usize) -> Span,
) {
    let (a, b) = (o.a.as_ptr(), o.b.as_ptr());
    drive!(
        AT,
        m,
        o,
        c,
        ldc,
        span,
        [64, 32, PAD],
        |rows, w, ao, bo, co, k| {
            let cp = c.as_mut_ptr();
            // SAFETY: `drive!` checked that the operands cover the tile at these offsets.
            unsafe {
                let (a, b, cp) = (a.add(ao), b.add(bo), cp.add(co));
                match (rows, w) {
                    (4, 64) => tile512::<4, 4, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                    (4, 32) => tile512::<4, 2, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                    (4, _) => tile512::<4, 1, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                    (_, 64) => tile512::<1, 4, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                    (_, 32) => tile512::<1, 2, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                    _ => tile512::<1, 1, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                }
            }
        }
    );
}

/// C (+)= A·B with AVX2 tiles; see `super::gemm`.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gemm_avx2<const AT: bool>(
    m: usize,
    o: &Ops<f32>,
    c: &mut [f32],
    ldc: usize,
    zero: bool,
    span: impl Fn(usize, usize) -> Span,
) {
    let (a, b) = (o.a.as_ptr(), o.b.as_ptr());
    drive!(AT, m, o, c, ldc, span, [PAD], |rows, _w, ao, bo, co, k| {
        let cp = c.as_mut_ptr();
        // SAFETY: `drive!` checked that the operands cover the tile at these offsets.
        unsafe {
            let (a, b, cp) = (a.add(ao), b.add(bo), cp.add(co));
            match rows {
                4 => tile256::<4, 2, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
                _ => tile256::<1, 2, AT>(a, o.lda, b, o.ldb, cp, ldc, k, zero),
            }
        }
    });
}

/// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (f32), by 8 x 8 blocks in AVX
/// registers (unpack, shuffle, lane permute); the edges element by element. Exact moves.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose_avx2(
    src: &[f32],
    lds: usize,
    (rows, cols): (usize, usize),
    dst: &mut [f32],
    ldd: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * lds + cols <= src.len() && (cols - 1) * ldd + rows <= dst.len(),
        "transpose outside its operands"
    );
    let (full_r, full_c) = (rows / 8 * 8, cols / 8 * 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..full_r).step_by(8) {
        for c0 in (0..full_c).step_by(8) {
            // SAFETY: rows r0..r0 + 8 of src and c0..c0 + 8 of dst lie inside (checked above).
            unsafe {
                let mut a = [_mm256_setzero_ps(); 8];
                for (i, a) in a.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(s.add((r0 + i) * lds + c0));
                }
                let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
                let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
                let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
                let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
                let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
                let (u0, u1) = (
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                );
                let (u2, u3) = (
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                );
                let (u4, u5) = (
                    _mm256_shuffle_ps::<0x44>(t4, t6),
                    _mm256_shuffle_ps::<0xEE>(t4, t6),
                );
                let (u6, u7) = (
                    _mm256_shuffle_ps::<0x44>(t5, t7),
                    _mm256_shuffle_ps::<0xEE>(t5, t7),
                );
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (c, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add((c0 + c) * ldd + r0), v);
                }
            }
        }
    }
    for r in 0..rows {
        let c_from = if r < full_r { full_c } else { 0 };
        for c in c_from..cols {
            dst[c * ldd + r] = src[r * lds + c];
        }
    }
}
