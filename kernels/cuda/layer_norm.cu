// LayerNorm over the last dim, with or without bias, and its backward (kernels/src/layer_norm.rs
// has the formulas). Rows are dense row-major (R, D); weight and bias are (D); eps arrives as a
// double and is rounded to the working precision, as the CPU path does.
//   forward:   x (R, D), w (D), b (D) or none -> y (R, D),   y = (x - mu) * r * w + b
//   grad x:    x, w, dy -> dx (R, D),   dx = r * (g - mean(g) - x^ * mean(g * x^)), g = dy * w
//   grad w, b: x, dy -> (2, D),         row 0: sum over rows of dy * x^,  row 1: sum of dy
// with mu = mean(x), r = 1 / sqrt(mean((x - mu)^2) + eps) (two passes), x^ = (x - mu) * r.
// Forward and grad x: one block per row. Grad w, b, deterministic in three launches: (mu, r)
// per row (layer_norm_stats), per-chunk column partials (layer_norm_dwb_partial, grid
// (2D/256, chunks)), and the chunk sums in order (layer_norm_dwb_finish).

// (mu, r) of one row, every thread of the block gets them.
template <typename S, typename T>
__device__ void ln_stats(const S* x, unsigned int d, T eps, T* shm, T* mu, T* r) {
    T s = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) s += widen(x[j]);
    const T m = block_sum(s, shm) / (T)d;
    T v = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        const T c = widen(x[j]) - m;
        v += c * c;
    }
    v = block_sum(v, shm) / (T)d;
    *mu = m;
    *r = (T)1 / xsqrt(v + eps);
}

// has_bias = 0: b is not read (the host passes w in its place).
template <typename S>
__device__ void ln_fwd_row(const S* x, const S* w, const S* b, int has_bias, S* y, unsigned int d, double eps) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const size_t base = (size_t)blockIdx.x * d;
    x += base;
    y += base;
    T mu, r;
    ln_stats(x, d, (T)eps, shm, &mu, &r);
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        const T bias = has_bias ? widen(b[j]) : (T)0;
        put(&y[j], (widen(x[j]) - mu) * r * widen(w[j]) + bias);
    }
}

template <typename S>
__device__ void ln_dx_row(const S* x, const S* w, const S* dy, S* dx, unsigned int d, double eps) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const size_t base = (size_t)blockIdx.x * d;
    x += base;
    dy += base;
    dx += base;
    T mu, r;
    ln_stats(x, d, (T)eps, shm, &mu, &r);
    T sg = 0, sgx = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        const T g = widen(dy[j]) * widen(w[j]);
        sg += g;
        sgx += g * (widen(x[j]) - mu);
    }
    const T mean_g = block_sum(sg, shm) / (T)d;
    const T mean_gx = r * block_sum(sgx, shm) / (T)d;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        const T g = widen(dy[j]) * widen(w[j]);
        put(&dx[j], r * (g - mean_g - (widen(x[j]) - mu) * r * mean_gx));
    }
}

// (mu, r) of each row: x (R, D) -> stats (R, 2), one block per row.
template <typename S>
__device__ void ln_stats_rows(const S* x, typename Work<S>::T* stats, unsigned int d, double eps) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    T mu, r;
    ln_stats(x + (size_t)blockIdx.x * d, d, (T)eps, shm, &mu, &r);
    if (threadIdx.x == 0) {
        stats[2 * (size_t)blockIdx.x] = mu;
        stats[2 * (size_t)blockIdx.x + 1] = r;
    }
}

// partial[c * 2D + j] = sum over rows of chunk c of dy * x^ (j < D) or dy (column j - D).
template <typename S>
__device__ void ln_dwb_partial(const S* x, const S* dy, const typename Work<S>::T* stats,
                               typename Work<S>::T* partial, unsigned int rows, unsigned int d,
                               unsigned int per_chunk) {
    typedef typename Work<S>::T T;
    const unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= 2 * d) return;
    const unsigned int r0 = blockIdx.y * per_chunk;
    const unsigned int r1 = min(rows, r0 + per_chunk);
    T acc = 0;
    if (j < d) {
        for (unsigned int i = r0; i < r1; ++i) {
            const size_t at = (size_t)i * d + j;
            acc += widen(dy[at]) * (widen(x[at]) - stats[2 * (size_t)i]) * stats[2 * (size_t)i + 1];
        }
    } else {
        for (unsigned int i = r0; i < r1; ++i) acc += widen(dy[(size_t)i * d + (j - d)]);
    }
    partial[(size_t)blockIdx.y * 2 * d + j] = acc;
}

#define LN_FWD(NAME, S)                                                                            \
    extern "C" __global__ void NAME(const S* x, const S* w, const S* b, int has_bias, S* y,        \
                                    unsigned int d, double eps) {                                  \
        ln_fwd_row<S>(x, w, b, has_bias, y, d, eps);                                               \
    }
#define LN_DX(NAME, S) ROW_NORM_DX(NAME, S, ln_dx_row)
#define LN_STATS(NAME, S) ROW_NORM_STATS(NAME, S, ln_stats_rows)
#define LN_DWB_PARTIAL(NAME, S) ROW_NORM_PARTIAL(NAME, S, ln_dwb_partial)

FOR_FLOATS(LN_FWD, layer_norm)
FOR_FLOATS(LN_DX, layer_norm_dx)
FOR_FLOATS(LN_STATS, layer_norm_stats)
FOR_FLOATS(LN_DWB_PARTIAL, layer_norm_dwb_partial)
FOR_FLOATS(COL_SUMS_FINISH, layer_norm_dwb_finish)
