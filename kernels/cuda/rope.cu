// Rotary position embedding and its transpose (the backward) (kernels/src/rope.rs has the
// formulas). x is read through its strides, so the common (B, T, H, D).transpose(1, 2) view
// needs no copy; cos and sin likewise.
//   x: (B, H, T, D), cos, sin: (T, D/2) -> y: (B, H, T, D) dense
// Block (X, Y): Y rows of x per block, X threads along the D/2 pairs of a row (looping when
// D/2 > X); the host picks X from D and Y = 256 / X. interleaved = 0: pairs (i, i + D/2);
// 1: pairs (2i, 2i + 1). transpose = 1 rotates by -sin (the exact transpose).

// Shapes, start offsets and strides, in elements (a #[repr(C)] struct of u64 on the host).
struct RopeArgs {
    unsigned long long b, h, t, d;
    unsigned long long x_off, x_sb, x_sh, x_st, x_sd;
    unsigned long long c_off, c_st, c_si;
    unsigned long long s_off, s_st, s_si;
};

template <typename S>
__device__ void rope_rows(const S* x, const S* cos, const S* sin, S* y, RopeArgs a, int interleaved,
                         int transpose) {
    typedef typename Work<S>::T T;
    // rows = B * H * T < 2^32 (checked by the host): 32-bit index arithmetic.
    const unsigned int row = blockIdx.x * blockDim.y + threadIdx.y;
    const unsigned int rows = (unsigned int)(a.b * a.h * a.t);
    if (row >= rows) return;
    const unsigned int t = row % (unsigned int)a.t, bh = row / (unsigned int)a.t;
    const unsigned int hh = bh % (unsigned int)a.h, bb = bh / (unsigned int)a.h;
    const unsigned long long xb = a.x_off + bb * a.x_sb + hh * a.x_sh + t * a.x_st;
    const unsigned long long cb = a.c_off + t * a.c_st, sb = a.s_off + t * a.s_st;
    S* out = y + (unsigned long long)row * a.d;
    const unsigned int half = (unsigned int)(a.d / 2);
    for (unsigned int i = threadIdx.x; i < half; i += blockDim.x) {
        const unsigned int j1 = interleaved ? 2 * i : i;
        const unsigned int j2 = interleaved ? 2 * i + 1 : i + half;
        const T x1 = widen(x[xb + j1 * a.x_sd]), x2 = widen(x[xb + j2 * a.x_sd]);
        const T c = widen(cos[cb + i * a.c_si]);
        T s = widen(sin[sb + i * a.s_si]);
        if (transpose) s = -s;
        if (interleaved) {
            put(&out[j1], x1 * c - x2 * s);
            put(&out[j2], x1 * s + x2 * c);
        } else {
            put(&out[j1], x1 * c - x2 * s);
            put(&out[j2], x2 * c + x1 * s);
        }
    }
}

#define ROPE(NAME, S)                                                                              \
    extern "C" __global__ void NAME(const S* x, const S* cos, const S* sin, S* y, RopeArgs a,      \
                                    int interleaved, int transpose) {                              \
        rope_rows<S>(x, cos, sin, y, a, interleaved, transpose);                                  \
    }

FOR_FLOATS(ROPE, rope)
