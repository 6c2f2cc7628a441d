// RMSNorm over the last dim and its backward (kernels/src/rms_norm.rs has the formulas).
// Rows are dense row-major (R, D); weight is (D); eps arrives as a double and is rounded to
// the working precision, as the CPU path does.
//   forward:  x (R, D), w (D) -> y (R, D),       y = x * r * w,  r = 1 / sqrt(mean(x^2) + eps)
//   grad x:   x, w, dy -> dx (R, D),             dx = r * dy * w - x * r^3 * sum(dy * w * x) / D
//   grad w:   x, dy -> dw (D),                   dw = sum over rows of dy * x * r
// Forward and grad x: one block per row. Grad w, deterministic in three launches: r per row
// (rms_norm_rstd), per-chunk column partials (rms_norm_dw_partial, grid (D/256, chunks)), and
// the chunk sums in order (rms_norm_dw_finish).

template <typename S, typename T> __device__ T rms_rstd(const S* x, unsigned int d, T eps, T* shm) {
    T ss = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        const T v = widen(x[j]);
        ss += v * v;
    }
    ss = block_sum(ss, shm);
    return (T)1 / xsqrt(ss / (T)d + eps);
}

template <typename S> __device__ void rms_fwd_row(const S* x, const S* w, S* y, unsigned int d, double eps) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const size_t base = (size_t)blockIdx.x * d;
    x += base;
    y += base;
    const T r = rms_rstd(x, d, (T)eps, shm);
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) put(&y[j], widen(x[j]) * r * widen(w[j]));
}

template <typename S>
__device__ void rms_dx_row(const S* x, const S* w, const S* dy, S* dx, unsigned int d, double eps) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const size_t base = (size_t)blockIdx.x * d;
    x += base;
    dy += base;
    dx += base;
    const T r = rms_rstd(x, d, (T)eps, shm);
    T s = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) s += widen(dy[j]) * widen(w[j]) * widen(x[j]);
    s = block_sum(s, shm);
    const T c = r * r * r * s / (T)d;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        put(&dx[j], r * widen(dy[j]) * widen(w[j]) - widen(x[j]) * c);
    }
}

// r of each row: x (R, D) -> r (R), one block per row.
template <typename S> __device__ void rms_rstd_rows(const S* x, typename Work<S>::T* r, unsigned int d, double eps) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const T v = rms_rstd(x + (size_t)blockIdx.x * d, d, (T)eps, shm);
    if (threadIdx.x == 0) r[blockIdx.x] = v;
}

// partial[c * D + j] = sum over rows of chunk c of dy * x * r; thread per column j.
template <typename S>
__device__ void rms_dw_partial(const S* x, const S* dy, const typename Work<S>::T* r, typename Work<S>::T* partial,
                               unsigned int rows, unsigned int d, unsigned int per_chunk) {
    typedef typename Work<S>::T T;
    const unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    const unsigned int r0 = blockIdx.y * per_chunk;
    const unsigned int r1 = min(rows, r0 + per_chunk);
    T acc = 0;
    for (unsigned int i = r0; i < r1; ++i) {
        const size_t at = (size_t)i * d + j;
        acc += widen(dy[at]) * widen(x[at]) * r[i];
    }
    partial[(size_t)blockIdx.y * d + j] = acc;
}

#define RMS_FWD(NAME, S)                                                                           \
    extern "C" __global__ void NAME(const S* x, const S* w, S* y, unsigned int d, double eps) {    \
        rms_fwd_row<S>(x, w, y, d, eps);                                                           \
    }
#define RMS_DX(NAME, S) ROW_NORM_DX(NAME, S, rms_dx_row)
#define RMS_RSTD(NAME, S) ROW_NORM_STATS(NAME, S, rms_rstd_rows)
#define RMS_DW_PARTIAL(NAME, S) ROW_NORM_PARTIAL(NAME, S, rms_dw_partial)

FOR_FLOATS(RMS_FWD, rms_norm)
FOR_FLOATS(RMS_DX, rms_norm_dx)
FOR_FLOATS(RMS_RSTD, rms_norm_rstd)
FOR_FLOATS(RMS_DW_PARTIAL, rms_norm_dw_partial)
FOR_FLOATS(COL_SUMS_FINISH, rms_norm_dw_finish)
