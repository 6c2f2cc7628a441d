// The prelude of every kernels/cuda/*.cu: kernels/src/cuda/nvrtc.rs (and scripts/nvrtc_check.py)
// compile `common.cuh + "#line 1 <file>" + <file>` as one NVRTC program, so no #include and no
// include path are needed. On purpose: NVRTC does not bundle cuda_fp16.h / cuda_bf16.h (they come
// with the toolkit), and a machine that runs the trainer needs only the driver and libnvrtc.
//
// Storage types and the precision kernels compute in (as the CPU path, kernels/src/cpu.rs):
//   float -> float, double -> double, bf16 -> float, f16 -> float.
// `widen` reads one element in its working precision, `put` rounds and stores one.

// bf16 and f16 as their bit patterns (same size and alignment as half::bf16 / half::f16).
struct bf16 {
    unsigned short bits;
};
struct f16 {
    unsigned short bits;
};

template <typename S> struct Work {
    typedef float T;
};
template <> struct Work<double> {
    typedef double T;
};

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }
__device__ __forceinline__ float widen(bf16 v) {
    return __uint_as_float(((unsigned int)v.bits) << 16);
}
__device__ __forceinline__ float widen(f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(double* p, double v) { *p = v; }
// Round to nearest, ties to even; NaN stays a quiet NaN: exactly half::bf16::from_f32.
__device__ __forceinline__ void put(bf16* p, float v) {
    unsigned int x = __float_as_uint(v);
    unsigned short h = (unsigned short)(x >> 16);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        h |= 0x0040u;
    } else if ((x & 0x8000u) != 0u && (x & 0x17fffu) != 0u) {
        h += 1;
    }
    p->bits = h;
}
// Round to nearest, ties to even (the hardware conversion), as half::f16::from_f32.
__device__ __forceinline__ void put(f16* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;
}

// Precise math in the working precision (no fast-math intrinsics).
__device__ __forceinline__ float xexp(float v) { return expf(v); }
__device__ __forceinline__ double xexp(double v) { return exp(v); }
__device__ __forceinline__ float xsqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double xsqrt(double v) { return sqrt(v); }

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

// The larger of a and b; a NaN in b is ignored, as the CPU path's `if v > m { v } else { m }`.
template <typename T> __device__ __forceinline__ T max_of(T a, T b) { return b > a ? b : a; }

// Block-wide reductions for one block per row. blockDim.x is a multiple of 32, at most 1024;
// `shm` holds 32 values. Every thread gets the result. The order of the additions depends
// only on blockDim.x, which the host picks from the row length alone: results are
// reproducible run to run.
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max_of(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <typename T> __device__ T block_sum(T v, T* shm) {
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // an earlier reduction may still be reading shm
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    return warp_sum(lane < (blockDim.x >> 5) ? shm[lane] : (T)0);
}

template <typename T> __device__ T block_max(T v, T* shm) {
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    return warp_max(lane < (blockDim.x >> 5) ? shm[lane] : neg_inf<T>());
}

// Second pass of a deterministic column sum: out[j] = sum over c of partial[c * width + j], in
// increasing c (partials come from fixed chunks of rows, so the result is reproducible).
// partial: (chunks, width) in the working precision -> out: (width) in the storage type.
template <typename S>
__device__ void col_sums_finish(const typename Work<S>::T* partial, S* out, unsigned int chunks,
                                unsigned int width) {
    typedef typename Work<S>::T T;
    const unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= width) return;
    T acc = 0;
    for (unsigned int c = 0; c < chunks; ++c) acc += partial[(size_t)c * width + j];
    put(&out[j], acc);
}

// for (i = this thread's first element; i < n; i += threads in the grid): any n, any grid.
#define GRID_STRIDE(i, n)                                                                          \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;  \
         i += (unsigned long long)gridDim.x * blockDim.x)

// Instantiates `NAME_f32`, `NAME_f64`, `NAME_bf16`, `NAME_f16` from a macro KERNEL(NAME, S)
// that defines one extern "C" kernel for storage type S (the suffixes are candle's dtype names).
#define FOR_FLOATS(KERNEL, NAME)                                                                   \
    KERNEL(NAME##_f32, float)                                                                      \
    KERNEL(NAME##_f64, double)                                                                     \
    KERNEL(NAME##_bf16, bf16)                                                                      \
    KERNEL(NAME##_f16, f16)

// The extern "C" kernel of col_sums_finish for storage type S: FOR_FLOATS(COL_SUMS_FINISH, NAME).
#define COL_SUMS_FINISH(NAME, S)                                                                   \
    extern "C" __global__ void NAME(const Work<S>::T* partial, S* out, unsigned int chunks,        \
                                    unsigned int width) {                                          \
        col_sums_finish<S>(partial, out, chunks, width);                                           \
    }

// The kernels the row norms (layer_norm.cu, rms_norm.cu) share the shape of: NAME for storage
// type S, passing its arguments on to the device function FN<S>.
//   ROW_NORM_DX:       x, w, dy (R, D) -> dx (R, D), one block per row
//   ROW_NORM_STATS:    x (R, D) -> the statistics of each row, one block per row
//   ROW_NORM_PARTIAL:  x, dy (R, D) and those statistics -> per-chunk column partials
#define ROW_NORM_DX(NAME, S, FN)                                                                   \
    extern "C" __global__ void NAME(const S* x, const S* w, const S* dy, S* dx, unsigned int d,    \
                                    double eps) {                                                  \
        FN<S>(x, w, dy, dx, d, eps);                                                               \
    }
#define ROW_NORM_STATS(NAME, S, FN)                                                                \
    extern "C" __global__ void NAME(const S* x, Work<S>::T* stats, unsigned int d, double eps) {   \
        FN<S>(x, stats, d, eps);                                                                   \
    }
#define ROW_NORM_PARTIAL(NAME, S, FN)                                                              \
    extern "C" __global__ void NAME(const S* x, const S* dy, const Work<S>::T* stats,              \
                                    Work<S>::T* partial, unsigned int rows, unsigned int d,        \
                                    unsigned int per_chunk) {                                      \
        FN<S>(x, dy, stats, partial, rows, d, per_chunk);                                          \
    }
