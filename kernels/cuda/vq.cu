// Vector quantisation (kernels/src/vq.rs has the method): the nearest codebook entry by dot
// product, and codebook usage counts.
//
// nearest_code: z (N, D), codebook (K, D), dense -> idx (N) u32, best (N) in the working
// precision. Tiled like a matrix product with an argmax epilogue, never writing the (N, K)
// scores: a block owns BM rows of z and walks its share of the codebook in tiles of BK codes;
// per tile, DC dims at a time of the rows and of the codes are staged in shared memory, and
// each of the 16 x 16 threads accumulates a 4 x 4 block of (row, code) scores, then folds
// them into its running best per row. The 16 threads of a row then merge by shuffles.
// Grid (ceil(N / BM), splits): with splits > 1 each split covers `per_split` codes and writes
// a partial (best, index) per row that nearest_code_merge combines in split order.
//
// Exactness: each score is the sequential sum over d = 0..D-1 of z*c with the multiply and
// the add rounded separately (no fused multiply-add), the CPU path's arithmetic, so scores are
// bit-identical to it. A thread visits its codes in increasing order and only a strictly
// larger score replaces its best; merges take the larger score, or the lower index of equal
// ones: ties go to the lowest index, as on the CPU. NaN scores never win; a row with no
// winner gets index 0 and a NaN score.

#define BM 64
#define BK 64
#define DC 16
#define NO_CODE 0xffffffffu

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

__device__ __forceinline__ float quiet_nan(float) { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double quiet_nan(double) { return __longlong_as_double(0x7ff8000000000000LL); }

// Folds (s, i) into (bs, bi): the larger score, the lower index among equal scores.
template <typename T> __device__ __forceinline__ void merge_best(T s, unsigned int i, T* bs, unsigned int* bi) {
    if (s > *bs || (s == *bs && i < *bi)) {
        *bs = s;
        *bi = i;
    }
}

template <typename T>
__device__ __forceinline__ void write_final(T* best, unsigned int* idx, unsigned int row, T bs, unsigned int bi) {
    if (bi == NO_CODE) {
        idx[row] = 0;
        best[row] = quiet_nan(bs);
    } else {
        idx[row] = bi;
        best[row] = bs;
    }
}

// final_out = 1: write the results; 0: write partials at [blockIdx.y * N + row] as they are.
template <typename S>
__device__ void nearest_tiles(const S* z, const S* c, typename Work<S>::T* best, unsigned int* idx, unsigned int n,
                              unsigned int k, unsigned int d, unsigned int per_split, int final_out) {
    typedef typename Work<S>::T T;
    __shared__ T zs[DC][BM + 1];
    __shared__ T cs[DC][BK + 1];
    const unsigned int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const unsigned int row0 = blockIdx.x * BM;
    const unsigned int code_begin = blockIdx.y * per_split;
    const unsigned int code_end = min(k, code_begin + per_split);
    T bs[4];
    unsigned int bi[4];
    for (int i = 0; i < 4; ++i) {
        bs[i] = neg_inf<T>();
        bi[i] = NO_CODE;
    }
    for (unsigned int c0 = code_begin; c0 < code_end; c0 += BK) {
        T acc[4][4];
        for (int i = 0; i < 4; ++i)
            for (int l = 0; l < 4; ++l) acc[i][l] = (T)0;
        for (unsigned int d0 = 0; d0 < d; d0 += DC) {
            for (unsigned int q = tid; q < BM * DC; q += blockDim.x) {
                const unsigned int r = q / DC, j = q % DC, gr = row0 + r, gj = d0 + j;
                zs[j][r] = (gr < n && gj < d) ? widen(z[(size_t)gr * d + gj]) : (T)0;
            }
            for (unsigned int q = tid; q < BK * DC; q += blockDim.x) {
                const unsigned int r = q / DC, j = q % DC, gc = c0 + r, gj = d0 + j;
                cs[j][r] = (gc < code_end && gj < d) ? widen(c[(size_t)gc * d + gj]) : (T)0;
            }
            __syncthreads();
            // Only the real dims: each score is exactly the CPU's sequential sum.
            const unsigned int jn = min((unsigned int)DC, d - d0);
            for (unsigned int j = 0; j < jn; ++j) {
                T a[4], b[4];
                for (int i = 0; i < 4; ++i) a[i] = zs[j][ty + 16 * i];
                for (int l = 0; l < 4; ++l) b[l] = cs[j][tx + 16 * l];
                for (int i = 0; i < 4; ++i)
                    for (int l = 0; l < 4; ++l) acc[i][l] = add_rn(acc[i][l], mul_rn(a[i], b[l]));
            }
            __syncthreads();
        }
        // Codes tx, tx + 16, ... of the tile, in increasing order; strictly larger replaces.
        for (int l = 0; l < 4; ++l) {
            const unsigned int code = c0 + tx + 16 * l;
            if (code >= code_end) continue;
            for (int i = 0; i < 4; ++i) {
                if (acc[i][l] > bs[i]) {
                    bs[i] = acc[i][l];
                    bi[i] = code;
                }
            }
        }
    }
    // The 16 threads of a row (lanes differing in their low 4 bits) merge.
    for (int i = 0; i < 4; ++i) {
        for (int o = 8; o > 0; o >>= 1) {
            const T s = __shfl_xor_sync(0xffffffffu, bs[i], o);
            const unsigned int ix = __shfl_xor_sync(0xffffffffu, bi[i], o);
            merge_best(s, ix, &bs[i], &bi[i]);
        }
    }
    if (tx != 0) return;
    for (int i = 0; i < 4; ++i) {
        const unsigned int row = row0 + ty + 16 * i;
        if (row >= n) continue;
        if (final_out) {
            write_final(best, idx, row, bs[i], bi[i]);
        } else {
            const size_t at = (size_t)blockIdx.y * n + row;
            best[at] = bs[i];
            idx[at] = bi[i];
        }
    }
}

// Partials (splits, N) -> results (N), splits merged in order; one thread per row.
template <typename T>
__device__ void merge_splits(const T* pbest, const unsigned int* pidx, T* best, unsigned int* idx, unsigned int n,
                             unsigned int splits) {
    GRID_STRIDE(r, n) {
        T bs = neg_inf<T>();
        unsigned int bi = NO_CODE;
        for (unsigned int s = 0; s < splits; ++s) merge_best(pbest[(size_t)s * n + r], pidx[(size_t)s * n + r], &bs, &bi);
        write_final(best, idx, (unsigned int)r, bs, bi);
    }
}

// counts[i] += 1 for every index i in 0..k; *first_bad = the lowest position of an index
// outside 0..k (left as is when there is none). Integer atomics: the counts are exact.
template <typename I>
__device__ void histogram(const I* indices, long long* counts, unsigned long long* first_bad, unsigned long long n,
                          unsigned long long k) {
    GRID_STRIDE(p, n) {
        const long long v = (long long)indices[p];
        if (v >= 0 && (unsigned long long)v < k) {
            atomicAdd((unsigned long long*)&counts[v], 1ull);
        } else {
            atomicMin(first_bad, p);
        }
    }
}

#define NEAREST(NAME, S)                                                                           \
    extern "C" __global__ void NAME(const S* z, const S* c, Work<S>::T* best, unsigned int* idx,   \
                                    unsigned int n, unsigned int k, unsigned int d,                \
                                    unsigned int per_split, int final_out) {                       \
        nearest_tiles<S>(z, c, best, idx, n, k, d, per_split, final_out);                          \
    }
#define MERGE(NAME, S)                                                                             \
    extern "C" __global__ void NAME(const Work<S>::T* pbest, const unsigned int* pidx,             \
                                    Work<S>::T* best, unsigned int* idx, unsigned int n,           \
                                    unsigned int splits) {                                         \
        merge_splits<Work<S>::T>(pbest, pidx, best, idx, n, splits);                               \
    }

FOR_FLOATS(NEAREST, nearest_code)
FOR_FLOATS(MERGE, nearest_code_merge)

extern "C" __global__ void code_histogram_u32(const unsigned int* indices, long long* counts,
                                              unsigned long long* first_bad, unsigned long long n,
                                              unsigned long long k) {
    histogram<unsigned int>(indices, counts, first_bad, n, k);
}
extern "C" __global__ void code_histogram_i64(const long long* indices, long long* counts,
                                              unsigned long long* first_bad, unsigned long long n,
                                              unsigned long long k) {
    histogram<long long>(indices, counts, first_bad, n, k);
}
