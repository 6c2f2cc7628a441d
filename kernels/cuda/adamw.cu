// The AdamW update in place, elementwise (kernels/src/adamw.rs has the formula), f32 and f64:
//   adamw_moments: mv (2, N) = [m; v], g (N) -> mv advanced
//     g' = g k4,  m = k0 m + k1 g',  v = k2 v + k3 (g' g')
//     with k = [b1, 1 - b1, b2, 1 - b2, grad_scale]
//   adamw_apply:   p (N), mv (2, N) -> p advanced
//     p = p k0 - (k1 m) / (sqrt(v k2) + k3)
//     with k = [1 - lr wd, lr / (1 - b1^t), 1 / (1 - b2^t), eps]
// The constants come from the host, rounded as the CPU path rounds them. Every operation is
// an explicitly rounded intrinsic, in the CPU path's order: no multiply-add is fused (NVRTC
// fuses by default, Rust never does), and division and sqrt are IEEE. So the results are the
// CPU path's, bit for bit.

__device__ __forceinline__ float r_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double r_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float r_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double r_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float r_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double r_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float r_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double r_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float r_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double r_sqrt(double a) { return __dsqrt_rn(a); }

template <typename T>
__device__ void adamw_moments(T* mv, const T* g, unsigned long long n, T k0, T k1, T k2, T k3,
                              T k4) {
    GRID_STRIDE(i, n) {
        const T gs = r_mul(g[i], k4);
        mv[i] = r_add(r_mul(k0, mv[i]), r_mul(k1, gs));
        mv[n + i] = r_add(r_mul(k2, mv[n + i]), r_mul(k3, r_mul(gs, gs)));
    }
}

template <typename T>
__device__ void adamw_apply(T* p, const T* mv, unsigned long long n, T k0, T k1, T k2, T k3) {
    GRID_STRIDE(i, n) {
        const T den = r_add(r_sqrt(r_mul(mv[n + i], k2)), k3);
        p[i] = r_sub(r_mul(p[i], k0), r_div(r_mul(k1, mv[i]), den));
    }
}

#define ADAMW(S, SUFFIX)                                                                           \
    extern "C" __global__ void adamw_moments_##SUFFIX(S* mv, const S* g, unsigned long long n,     \
                                                      S k0, S k1, S k2, S k3, S k4) {              \
        adamw_moments<S>(mv, g, n, k0, k1, k2, k3, k4);                                            \
    }                                                                                              \
    extern "C" __global__ void adamw_apply_##SUFFIX(S* p, const S* mv, unsigned long long n, S k0, \
                                                    S k1, S k2, S k3) {                            \
        adamw_apply<S>(p, mv, n, k0, k1, k2, k3);                                                  \
    }

// Master weights only: f32 and f64 (the host rejects bf16 and f16, as the CPU path does).
ADAMW(float, f32)
ADAMW(double, f64)
