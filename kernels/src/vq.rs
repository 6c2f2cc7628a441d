//! Vector quantisation: the nearest codebook entry by cosine, and codebook usage (CPU here;
//! CUDA in `crate::cuda::vq`, see below).
//!
//! CoTyle's style codebook (DESIGN.md, "Style codebook"; paper section 3.1) is UniTok-derived
//! cosine VQ: code vectors z and the codebook entries c_k are L2-normalised, so the cosine is
//! the dot product and the nearest code is argmax_k z·c_k. The blocked argmax here is ours:
//! it never forms the (N, K) score matrix that `z.matmul(&codebook.t())?.argmax(..)` writes and
//! reads back (N·K·4 bytes: 100 MB at N = 25,088, K = 1024); extra memory is the (N) outputs,
//! a packed copy of the codebook and a few KiB per task.
//!
//! Blocking: tasks of `TASK_ROWS` rows run in parallel (candle's CPU pool, or the current rayon
//! pool inside one). A task packs its rows as (group, d, MR) and walks the codebook, packed
//! once as panels of NR codes (d, NR), in blocks of about `CODE_BLOCK_BYTES` (L2-resident);
//! an MR x NR register tile of dot products (MR broadcasts and NR/width vector loads per d,
//! MR·NR/width independent accumulators) then updates a running (best, index) per row and
//! lane. Tile sizes follow the SIMD build: 8x32 with AVX-512F (25% faster than AVX2's on
//! AMD Zen 4), 6x16 with AVX2, 4x8 portable loops otherwise (and for f64).
//!
//! Determinism: each dot product is a sequential sum over d with separate multiply and add (no
//! build fuses them), so scores do not depend on the blocking, the build or the thread count;
//! codes are visited in increasing order within a lane and lanes are merged by (score, lowest
//! index), so ties go to the lowest index everywhere. NaN scores never win (a row of NaNs gets
//! index 0 and a NaN score).
//!
//! No gradient: indices are discrete. The quantised output with the straight-through estimator
//! (q = z + sg(c[idx] - z)) and the codebook/commitment losses are built on top of this in the
//! codebook model (issue 4).
//!
//! CUDA (`cuda` feature; `crate::cuda::vq`, `kernels/cuda/vq.cu`): the same results, bit for bit
//! (the same unfused sequential sums, the same tie rule), from a tiled kernel that stages
//! blocks of rows and codes in shared memory and never writes the (N, K) scores; the
//! histogram counts with integer atomics.

use crate::cpu::{self, Elem, Work};
use crate::simd::{self, multiversion, Level, Real};
#[cfg(target_arch = "x86_64")]
use crate::vq_x86 as x86;
use candle_core::{bail, CpuStorage, Device, Layout, Result, Storage, Tensor};

const NAME: &str = "vq::nearest_code";
/// Rows per parallel task (a multiple of every MR).
const TASK_ROWS: usize = 96;
/// Target size of one block of packed codes, kept in L2 while a task's rows sweep it.
const CODE_BLOCK_BYTES: usize = 128 << 10;

/// For each row of `z`, the codebook entry with the largest dot product (= cosine, since both
/// are L2-normalised: the caller normalises, this op does not) and that dot product.
/// z: (N, D), codebook: (K, D), same dtype (f32, f64; bf16/f16 computed in f32) and device,
/// any strides -> (indices: u32 (N), best score: (N) f32, or f64 for f64 inputs).
/// Ties go to the lowest index. Not differentiable (see the module header).
pub fn nearest_code(z: &Tensor, codebook: &Tensor) -> Result<(Tensor, Tensor)> {
    let ((n, d), (k, dc)) = match (z.dims(), codebook.dims()) {
        (&[n, d], &[k, dc]) => ((n, d), (k, dc)),
        (a, b) => bail!(
            "{NAME}: z must be (N, D) and the codebook (K, D), got z {a:?} and codebook {b:?}"
        ),
    };
    if d != dc {
        bail!(
            "{NAME}: z {:?} and codebook {:?} differ in D ({d} vs {dc})",
            z.dims(),
            codebook.dims()
        );
    }
    if k == 0 || k > u32::MAX as usize {
        bail!(
            "{NAME}: the codebook {:?} must have 1 to 2^32-1 entries",
            codebook.dims()
        );
    }
    crate::check_same_kind(NAME, ("z", z), ("the codebook", codebook))?;
    let (zs, zl) = z.storage_and_layout();
    let (cs, cl) = codebook.storage_and_layout();
    let (zs, cs) = match (&*zs, &*cs) {
        (Storage::Cpu(zs), Storage::Cpu(cs)) => (zs, cs),
        #[cfg(feature = "cuda")]
        (Storage::Cuda(zs), Storage::Cuda(cs)) => {
            let (idx, best) = crate::cuda::vq::nearest_code(NAME, (zs, zl), (cs, cl), (n, k, d))?;
            return Ok((cuda_tensor(idx, n), cuda_tensor(best, n)));
        }
        _ => bail!("{NAME}: only CPU and CUDA tensors are supported"),
    };
    let dev = &Device::Cpu;
    let nr = tile_width(simd::level());
    Ok(match cpu::work(NAME, z.dtype())? {
        Work::F32 => {
            let (idx, best) = search::<f32>((zs, zl), (cs, cl), (n, k, d), nr)?;
            (
                Tensor::from_vec(idx, n, dev)?,
                Tensor::from_vec(best, n, dev)?,
            )
        }
        Work::F64 => {
            let (idx, best) = search::<f64>((zs, zl), (cs, cl), (n, k, d), nr)?;
            (
                Tensor::from_vec(idx, n, dev)?,
                Tensor::from_vec(best, n, dev)?,
            )
        }
    })
}

/// How many times each code occurs: indices: u32 or i64 (N), any strides -> counts: i64 (K).
/// An index outside 0..k is an error naming it and its position.
pub fn code_histogram(indices: &Tensor, k: usize) -> Result<Tensor> {
    const OP: &str = "vq::code_histogram";
    if indices.rank() != 1 {
        bail!("{OP}: indices must be (N), got {:?}", indices.dims());
    }
    let (s, l) = indices.storage_and_layout();
    let s = match &*s {
        Storage::Cpu(s) => s,
        #[cfg(feature = "cuda")]
        Storage::Cuda(s) => {
            return Ok(cuda_tensor(
                crate::cuda::vq::code_histogram(OP, (s, l), k)?,
                k,
            ));
        }
        _ => bail!("{OP}: only CPU and CUDA tensors are supported"),
    };
    let idx: Vec<i64> = match s {
        CpuStorage::U32(v) => cpu::gather(v, l, |i| i as i64),
        CpuStorage::I64(v) => cpu::gather(v, l, |i| i),
        _ => bail!(
            "{OP}: indices must be u32 or i64, got {:?}",
            indices.dtype()
        ),
    };
    let mut counts = vec![0i64; k];
    for (pos, &i) in idx.iter().enumerate() {
        match usize::try_from(i).ok().and_then(|i| counts.get_mut(i)) {
            Some(c) => *c += 1,
            None => bail!("{OP}: index {i} at position {pos} is outside the codebook of {k}"),
        }
    }
    Tensor::from_vec(counts, k, &Device::Cpu)
}

/// A result of the CUDA path as a (len) tensor, outside the autograd graph.
#[cfg(feature = "cuda")]
fn cuda_tensor(s: candle_core::CudaStorage, len: usize) -> Tensor {
    let none = candle_core::op::BackpropOp::none();
    Tensor::from_storage(Storage::Cuda(s), len, none, false)
}

/// Codes per panel (NR) for a build; the rows per tile (MR) follow from it in `block`.
fn tile_width(level: Level) -> usize {
    match level {
        Level::Avx512 => 32,
        Level::Avx2 => 16,
        Level::Base => 8,
    }
}

type Input<'a> = (&'a CpuStorage, &'a Layout);

fn search<T: Search>(
    (zs, zl): Input,
    (cs, cl): Input,
    (n, k, d): (usize, usize, usize),
    nr: usize,
) -> Result<(Vec<u32>, Vec<T>)> {
    if d == 0 {
        // Every score is the empty sum 0: all codes tie.
        return Ok((vec![0; n], vec![T::ZERO; n]));
    }
    let z = T::load(NAME, zs, zl)?;
    let c = T::load(NAME, cs, cl)?;
    // Panels of nr codes, each (d, nr); the codes past k are zeros and are never compared.
    let n_panels = k.div_ceil(nr);
    let mut panels = vec![T::ZERO; n_panels * d * nr];
    for (code, row) in c.chunks_exact(d).take(k).enumerate() {
        let panel = &mut panels[(code / nr) * d * nr..];
        for (j, &v) in row.iter().enumerate() {
            panel[j * nr + code % nr] = v;
        }
    }
    let block_panels = (CODE_BLOCK_BYTES / (d * nr * std::mem::size_of::<T>())).max(1);
    let mut idx = vec![0u32; n];
    let mut best = vec![T::ZERO; n];
    let tasks: Vec<(&mut [u32], &mut [T])> = idx
        .chunks_mut(TASK_ROWS)
        .zip(best.chunks_mut(TASK_ROWS))
        .collect();
    cpu::par_tasks(tasks, |t, (idx, best)| {
        let rows = &z[t * TASK_ROWS * d..(t * TASK_ROWS + idx.len()) * d];
        let dims = [k, d, nr, block_panels];
        T::task(rows, &panels, &dims, idx, best);
    });
    Ok((idx, best))
}

/// The element types `nearest_code` computes in, each with its task kernel.
pub(crate) trait Search: Elem {
    /// One task: rows (r, d) against all panels; dims = [k, d, NR, panels per code block].
    fn task(rows: &[Self], panels: &[Self], dims: &[usize; 4], idx: &mut [u32], best: &mut [Self]);
}

impl Search for f64 {
    fn task(rows: &[f64], panels: &[f64], dims: &[usize; 4], idx: &mut [u32], best: &mut [f64]) {
        task_generic(rows, panels, dims, idx, best)
    }
}

impl Search for f32 {
    fn task(rows: &[f32], panels: &[f32], dims: &[usize; 4], idx: &mut [u32], best: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if dims[2] == 32 && has!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { x86::task_avx512(rows, panels, dims, idx, best) };
            }
            if dims[2] == 16 && has!("avx2") {
                // SAFETY: the CPU has AVX2.
                return unsafe { x86::task_avx2(rows, panels, dims, idx, best) };
            }
        }
        task_generic(rows, panels, dims, idx, best)
    }
}

multiversion! {
    /// A task with the portable tile (f64, and f32 on CPUs without AVX2).
    fn task_generic<T: Real>(rows: &[T], panels: &[T], dims: &[usize; 4], idx: &mut [u32], best: &mut [T]) {
        match dims[2] {
            32 => block::<T, 8, 32, Portable>(rows, panels, dims, idx, best),
            16 => block::<T, 6, 16, Portable>(rows, panels, dims, idx, best),
            _ => block::<T, 4, 8, Portable>(rows, panels, dims, idx, best),
        }
    }
}

/// An MR x NR tile: scores of MR packed rows `a` (d, MR) against one panel (d, NR) of codes
/// base.., folded into the running best `lb` and index `li` (MR, NR) of the first `valid` codes.
pub(crate) trait Tile<T: Real, const MR: usize, const NR: usize> {
    /// # Safety
    /// The CPU must support the implementation's instruction set.
    unsafe fn tile(a: &[T], panel: &[T], base: u32, valid: usize, lb: &mut [T], li: &mut [u32]);
}

/// Plain loops, for any build.
struct Portable;

impl<T: Real, const MR: usize, const NR: usize> Tile<T, MR, NR> for Portable {
    #[inline(always)]
    unsafe fn tile(a: &[T], panel: &[T], base: u32, valid: usize, lb: &mut [T], li: &mut [u32]) {
        let mut acc = [[T::ZERO; NR]; MR];
        for (x, y) in a.chunks_exact(MR).zip(panel.chunks_exact(NR)) {
            for i in 0..MR {
                for l in 0..NR {
                    acc[i][l] += x[i] * y[l];
                }
            }
        }
        update(acc.as_flattened(), base, valid, NR, lb, li);
    }
}

/// Folds the scores `s` (rows of `nr`) of codes base..base + valid into the running best.
/// Codes arrive in increasing order and only a strictly larger score replaces: ties keep the
/// lower index.
#[inline(always)]
pub(crate) fn update<T: Real>(
    s: &[T],
    base: u32,
    valid: usize,
    nr: usize,
    lb: &mut [T],
    li: &mut [u32],
) {
    let rows = s.chunks_exact(nr).zip(lb.chunks_exact_mut(nr));
    for ((s, b), ix) in rows.zip(li.chunks_exact_mut(nr)) {
        for l in 0..valid {
            if s[l] > b[l] {
                (b[l], ix[l]) = (s[l], base + l as u32);
            }
        }
    }
}

/// The blocked argmax of one task with MR x NR tiles (see the module header).
#[inline(always)]
pub(crate) fn block<T: Real, const MR: usize, const NR: usize, K: Tile<T, MR, NR>>(
    rows: &[T],
    panels: &[T],
    &[k, d, _, block_panels]: &[usize; 4],
    idx: &mut [u32],
    best: &mut [T],
) {
    let r = idx.len();
    let groups = r.div_ceil(MR);
    // Rows packed as (group, d, MR), zero-padded past r.
    let mut a = vec![T::ZERO; groups * d * MR];
    for (i, row) in rows.chunks_exact(d).take(r).enumerate() {
        let g = &mut a[(i / MR) * d * MR..];
        for (j, &v) in row.iter().enumerate() {
            g[j * MR + i % MR] = v;
        }
    }
    // Running best score and index per row and lane: (groups * MR, NR).
    let mut lane_best = vec![T::NEG_INF; groups * MR * NR];
    let mut lane_idx = vec![u32::MAX; groups * MR * NR];
    let n_panels = k.div_ceil(NR);
    for p0 in (0..n_panels).step_by(block_panels) {
        for (g, ag) in a.chunks_exact(d * MR).enumerate() {
            let lb = &mut lane_best[g * MR * NR..(g + 1) * MR * NR];
            let li = &mut lane_idx[g * MR * NR..(g + 1) * MR * NR];
            for p in p0..n_panels.min(p0 + block_panels) {
                let panel = &panels[p * d * NR..(p + 1) * d * NR];
                let valid = NR.min(k - p * NR);
                // SAFETY: `Search::task` picks K for what the CPU supports.
                unsafe { K::tile(ag, panel, (p * NR) as u32, valid, lb, li) };
            }
        }
    }
    // Merge the lanes: the highest score, the lowest index among equals.
    let lanes = lane_best.chunks_exact(NR).zip(lane_idx.chunks_exact(NR));
    for ((o_idx, o_best), (lb, li)) in idx.iter_mut().zip(best.iter_mut()).zip(lanes) {
        let (mut bs, mut bi) = (T::NEG_INF, u32::MAX);
        for (&s, &ix) in lb.iter().zip(li) {
            if s > bs || (s == bs && ix < bi) {
                (bs, bi) = (s, ix);
            }
        }
        if bi == u32::MAX {
            // Every score was NaN (or k = 0, excluded above).
            (bs, bi) = (T::from_f64(f64::NAN), 0);
        }
        (*o_idx, *o_best) = (bi, bs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, k: usize, d: usize) -> (Vec<u32>, Vec<u32>) {
        let v = |m: usize, s: f32| (0..m).map(|i| ((i as f32) * s).sin()).collect::<Vec<_>>();
        let z = Tensor::from_vec(v(n * d, 0.37), (n, d), &Device::Cpu).unwrap();
        let c = Tensor::from_vec(v(k * d, 0.11), (k, d), &Device::Cpu).unwrap();
        // Duplicated codes make exact ties.
        let c = Tensor::cat(&[&c, &c], 0).unwrap();
        let (i, b) = nearest_code(&z, &c).unwrap();
        let b = b
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|f| f.to_bits())
            .collect();
        (i.to_vec1::<u32>().unwrap(), b)
    }

    #[test]
    fn every_simd_build_gives_identical_results() {
        for (n, k, d) in [(200, 130, 17), (97, 64, 64)] {
            let best = run(n, k, d);
            assert!(best.0.iter().all(|&i| (i as usize) < k), "ties go low");
            simd::assert_builds_agree(&format!("nearest_code ({n}, {k}, {d})"), || run(n, k, d));
        }
    }
}
