// Softmax over the last dim and its backward (kernels/src/softmax.rs has the formulas).
// One block per row; the host picks blockDim.x from D (a multiple of 32, at most 1024).
//   forward:  x: (R, D) -> y: (R, D),  y = exp(x - max) / sum(exp(x - max))
//   backward: y, dy: (R, D) -> dx: (R, D),  dx = y * (dy - sum(dy * y))
// Inputs are dense row-major (the host compacts strided ones).

template <typename S> __device__ void softmax_row(const S* x, S* y, unsigned int d) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const size_t base = (size_t)blockIdx.x * d;
    x += base;
    y += base;
    T m = neg_inf<T>();
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) m = max_of(m, widen(x[j]));
    m = block_max(m, shm);
    T s = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) s += xexp(widen(x[j]) - m);
    const T inv = (T)1 / block_sum(s, shm);
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) put(&y[j], xexp(widen(x[j]) - m) * inv);
}

template <typename S> __device__ void softmax_bwd_row(const S* y, const S* dy, S* dx, unsigned int d) {
    typedef typename Work<S>::T T;
    __shared__ T shm[32];
    const size_t base = (size_t)blockIdx.x * d;
    y += base;
    dy += base;
    dx += base;
    T s = 0;
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) s += widen(y[j]) * widen(dy[j]);
    s = block_sum(s, shm);
    for (unsigned int j = threadIdx.x; j < d; j += blockDim.x) {
        put(&dx[j], widen(y[j]) * (widen(dy[j]) - s));
    }
}

#define SOFTMAX(NAME, S)                                                                           \
    extern "C" __global__ void NAME(const S* x, S* y, unsigned int d) { softmax_row<S>(x, y, d); }
#define SOFTMAX_BWD(NAME, S)                                                                       \
    extern "C" __global__ void NAME(const S* y, const S* dy, S* dx, unsigned int d) {              \
        softmax_bwd_row<S>(y, dy, dx, d);                                                          \
    }

FOR_FLOATS(SOFTMAX, softmax)
FOR_FLOATS(SOFTMAX_BWD, softmax_bwd)
