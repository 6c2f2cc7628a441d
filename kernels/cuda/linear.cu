// The bias add and the bias gradient of the linear layer (kernels/src/linear.rs; its matmuls are
// candle's cuBLAS calls). Buffers are dense row-major; the bias is (O).
//   bias add:   y (R, O) += b, in place, grid-stride over R * O          linear_bias_add
//   bias grad:  dy (R, O) -> db (O) = sum over the rows of dy, deterministic in two launches:
//               per-chunk column partials (linear_db_partial, grid (O/256, chunks)), then the
//               chunk sums in order (linear_db_finish, common.cuh's col_sums_finish).

// Rounded once, as the CPU path: y = round(y + b) in the working precision.
template <typename S>
__device__ void lin_bias_add(S* y, const S* b, unsigned long long n, unsigned int out) {
    GRID_STRIDE(i, n) put(&y[i], widen(y[i]) + widen(b[i % out]));
}

// partial[c * O + j] = sum over the rows of chunk c of dy[., j]; one thread per column, so the
// threads of a warp read adjacent elements of a row.
template <typename S>
__device__ void lin_db_partial(const S* dy, typename Work<S>::T* partial, unsigned int rows,
                               unsigned int out, unsigned int per_chunk) {
    typedef typename Work<S>::T T;
    const unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= out) return;
    const unsigned int r0 = blockIdx.y * per_chunk;
    const unsigned int r1 = min(rows, r0 + per_chunk);
    T acc = 0;
    for (unsigned int i = r0; i < r1; ++i) acc += widen(dy[(size_t)i * out + j]);
    partial[(size_t)blockIdx.y * out + j] = acc;
}

#define LIN_BIAS_ADD(NAME, S)                                                                      \
    extern "C" __global__ void NAME(S* y, const S* b, unsigned long long n, unsigned int out) {    \
        lin_bias_add<S>(y, b, n, out);                                                             \
    }
#define LIN_DB_PARTIAL(NAME, S)                                                                    \
    extern "C" __global__ void NAME(const S* dy, Work<S>::T* partial, unsigned int rows,           \
                                    unsigned int out, unsigned int per_chunk) {                    \
        lin_db_partial<S>(dy, partial, rows, out, per_chunk);                                      \
    }

FOR_FLOATS(LIN_BIAS_ADD, linear_bias_add)
FOR_FLOATS(LIN_DB_PARTIAL, linear_db_partial)
FOR_FLOATS(COL_SUMS_FINISH, linear_db_finish)
