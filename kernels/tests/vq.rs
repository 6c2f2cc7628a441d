//! `kernels::vq` against the matmul + argmax reference (`z.matmul(&codebook.t())`): indices
//! and best scores on odd and paper-sized shapes, strided inputs, other dtypes, ties to the
//! lowest index on every thread count, the usage histogram, and errors naming the shapes.

mod common;

use candle_core::{DType, Device, IndexOp, Result, Tensor, D};
use common::{tensor, with_threads};
use kernels::vq::{code_histogram, nearest_code};

/// Rows of `shape` (…, D) uniform from the LCG, L2-normalised.
fn unit(shape: &[usize], seed: u64) -> Result<Tensor> {
    let x = tensor(shape, seed, 1.0, DType::F32)?;
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

/// Checks `nearest_code(z, c)` against matmul + argmax: the same index on every row, or, where
/// the reference's top two scores are within 1e-6 (a near-tie that gemm's summation order may
/// break differently), an index whose reference score is that close to the max; best score
/// equal to the reference max within 1e-5. Returns the number of near-tie differences.
fn check(z: &Tensor, c: &Tensor, what: &str) -> Result<usize> {
    let (idx, best) = nearest_code(z, c)?;
    assert_eq!(idx.dims(), [z.dim(0)?], "{what}: index shape");
    assert_eq!(
        (idx.dtype(), best.dtype()),
        (DType::U32, DType::F32),
        "{what}"
    );
    let scores = z.matmul(&c.t()?)?;
    let want = scores.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let max = scores.max(D::Minus1)?.to_vec1::<f32>()?;
    let scores = scores.to_vec2::<f32>()?;
    let (idx, best) = (idx.to_vec1::<u32>()?, best.to_vec1::<f32>()?);
    let mut near_ties = 0;
    for r in 0..idx.len() {
        if idx[r] != want[r] {
            let gap = max[r] - scores[r][idx[r] as usize];
            assert!(
                gap.abs() <= 1e-6,
                "{what}: row {r}: index {} (score {}) but the reference says {} (score {})",
                idx[r],
                scores[r][idx[r] as usize],
                want[r],
                max[r]
            );
            near_ties += 1;
        }
        assert!(
            (best[r] - max[r]).abs() <= 1e-5,
            "{what}: row {r}: best {} vs reference max {}",
            best[r],
            max[r]
        );
    }
    Ok(near_ties)
}

#[test]
fn matches_matmul_argmax() -> Result<()> {
    let mut near_ties = 0;
    let shapes = [
        (1, 1, 1),
        (7, 5, 3),
        (33, 130, 17),
        (37, 1024, 64),
        (1000, 1024, 64),
        (200, 33, 300),
    ];
    for (i, &(n, k, d)) in shapes.iter().enumerate() {
        let (z, c) = (unit(&[n, d], i as u64)?, unit(&[k, d], 100 + i as u64)?);
        near_ties += check(&z, &c, &format!("N={n} K={k} D={d}"))?;
    }
    // A near-tie at 1e-6 is rare on random data; many would mean a real difference.
    eprintln!("near-tie differences: {near_ties}");
    assert!(near_ties <= 2, "{near_ties} near-tie differences");
    Ok(())
}

#[test]
fn strided_inputs_match() -> Result<()> {
    let (n, k, d) = (45, 70, 19);
    // z and the codebook as transposes of (D, N) and (D, K), and narrowed from wider rows.
    let zt = unit(&[n, d], 1)?.t()?.contiguous()?.t()?;
    let ct = unit(&[k, d], 2)?.t()?.contiguous()?.t()?;
    assert!(!zt.is_contiguous() && !ct.is_contiguous());
    check(&zt, &ct, "transposed")?;
    let wide = unit(&[n, d + 4], 3)?.narrow(1, 2, d)?;
    let zn = wide.broadcast_div(&wide.sqr()?.sum_keepdim(1)?.sqrt()?)?;
    let zn = Tensor::cat(&[&zn, &zn], 1)?.narrow(1, d, d)?;
    assert!(!zn.is_contiguous());
    check(&zn, &ct, "narrowed")?;
    // Every other row of a larger batch.
    let zs = unit(&[2 * n, d], 4)?.reshape((n, 2, d))?.i((.., 1, ..))?;
    assert!(!zs.is_contiguous());
    check(&zs, &unit(&[k, d], 5)?, "row stride 2")?;
    Ok(())
}

#[test]
fn other_dtypes_agree_with_f32() -> Result<()> {
    let (z, c) = (unit(&[50, 24], 6)?, unit(&[90, 24], 7)?);
    for dt in [DType::BF16, DType::F16] {
        let (zh, ch) = (z.to_dtype(dt)?, c.to_dtype(dt)?);
        let (i, b) = nearest_code(&zh, &ch)?;
        let (iw, bw) = nearest_code(&zh.to_dtype(DType::F32)?, &ch.to_dtype(DType::F32)?)?;
        assert_eq!(i.to_vec1::<u32>()?, iw.to_vec1::<u32>()?, "{dt:?}");
        assert_eq!(b.to_vec1::<f32>()?, bw.to_vec1::<f32>()?, "{dt:?}");
    }
    let (i64_, b64) = nearest_code(&z.to_dtype(DType::F64)?, &c.to_dtype(DType::F64)?)?;
    assert_eq!(b64.dtype(), DType::F64);
    let want = z.matmul(&c.t()?)?.argmax(D::Minus1)?;
    assert_eq!(i64_.to_vec1::<u32>()?, want.to_vec1::<u32>()?, "f64");
    Ok(())
}

#[test]
fn ties_go_to_the_lowest_index_on_any_thread_count() -> Result<()> {
    // 130 distinct codes, then the same 130 twice more: the copies sit in other lanes, panels
    // and (for the last ones) partial panels. Some z rows equal a code exactly.
    let (n, k, d) = (300, 130, 16);
    let base = unit(&[k, d], 8)?;
    let c = Tensor::cat(&[&base, &base, &base], 0)?;
    let z = Tensor::cat(&[&unit(&[n - 20, d], 9)?, &base.narrow(0, 100, 20)?], 0)?;
    let run = || -> Result<(Vec<u32>, Vec<f32>)> {
        let (i, b) = nearest_code(&z, &c)?;
        Ok((i.to_vec1()?, b.to_vec1()?))
    };
    let pool = run()?;
    let want = z.matmul(&base.t()?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    assert_eq!(pool.0, want, "duplicates must give the first copy");
    for r in 0..20 {
        assert_eq!(
            pool.0[n - 20 + r],
            100 + r as u32,
            "exact match of code {}",
            100 + r
        );
    }
    for threads in [1, 3] {
        assert!(
            with_threads(threads, run)? == pool,
            "{threads} rayon threads differ"
        );
    }
    // All codes identical: index 0 everywhere.
    let same = unit(&[1, d], 10)?.broadcast_as((k, d))?;
    let (i, _) = nearest_code(&z, &same)?;
    assert!(i.to_vec1::<u32>()?.iter().all(|&i| i == 0));
    Ok(())
}

#[test]
fn histogram_counts_every_index() -> Result<()> {
    let (z, c) = (unit(&[1000, 8], 11)?, unit(&[37, 8], 12)?);
    let (idx, _) = nearest_code(&z, &c)?;
    let h = code_histogram(&idx, 37)?;
    assert_eq!(h.dims(), [37]);
    let h = h.to_vec1::<i64>()?;
    assert_eq!(h.iter().sum::<i64>(), 1000);
    let mut naive = vec![0i64; 37];
    for i in idx.to_vec1::<u32>()? {
        naive[i as usize] += 1;
    }
    assert_eq!(h, naive);
    // i64 indices, strided, and codes beyond the largest index counted as 0.
    let v = Tensor::new(&[[3i64, 0], [3, 9], [3, 1]], &Device::Cpu)?.i((.., 0))?;
    assert!(!v.is_contiguous());
    assert_eq!(code_histogram(&v, 5)?.to_vec1::<i64>()?, [0, 0, 0, 3, 0]);
    let err = code_histogram(&Tensor::new(&[1u32, 7, 2], &Device::Cpu)?, 5).unwrap_err();
    assert!(err.to_string().contains("index 7 at position 1"), "{err}");
    let err = code_histogram(&Tensor::new(&[-1i64], &Device::Cpu)?, 5).unwrap_err();
    assert!(err.to_string().contains("index -1"), "{err}");
    Ok(())
}

#[test]
fn bad_inputs_are_errors_naming_the_shapes() -> Result<()> {
    let z = unit(&[4, 8], 13)?;
    let msg = |r: Result<(Tensor, Tensor)>| r.map(|_| ()).unwrap_err().to_string();
    let e = msg(nearest_code(&z, &unit(&[5, 7], 14)?));
    assert!(e.contains("[4, 8]") && e.contains("[5, 7]"), "{e}");
    let e = msg(nearest_code(&z.unsqueeze(0)?, &unit(&[5, 8], 14)?));
    assert!(e.contains("[1, 4, 8]"), "{e}");
    let e = msg(nearest_code(
        &z,
        &Tensor::zeros((0, 8), DType::F32, &Device::Cpu)?,
    ));
    assert!(e.contains("[0, 8]"), "{e}");
    let e = msg(nearest_code(&z, &unit(&[5, 8], 14)?.to_dtype(DType::F64)?));
    assert!(e.contains("F32") && e.contains("F64"), "{e}");
    let e = msg(nearest_code(
        &z.to_dtype(DType::U32)?,
        &z.to_dtype(DType::U32)?,
    ));
    assert!(e.contains("U32"), "{e}");
    // N = 0 is fine: empty outputs.
    let (i, b) = nearest_code(&z.narrow(0, 0, 0)?, &z)?;
    assert_eq!((i.dims(), b.dims()), (&[0][..], &[0][..]));
    let e = code_histogram(&z, 3).unwrap_err().to_string();
    assert!(e.contains("[4, 8]"), "{e}");
    Ok(())
}
