// Elementwise activations and their backward (kernels/src/activation.rs has the formulas):
// SiLU, GELU with the tanh approximation, SwiGLU. All buffers are dense, n elements; a
// grid-stride loop covers any n.
//   silu_gelu:        x -> y = x * s,     s = sigma(x) (act 0) or sigma(2u) (act 1)
//   silu_gelu_grad:   x, dy -> dx = dy * act'(x)
//   swiglu:           gate, up -> y = silu(gate) * up
//   swiglu_dgate:     gate, up, dy -> d gate = dy * up * silu'(gate)
// with u = sqrt(2/pi) (x + 0.044715 x^3). Each expression is written in the order of the CPU
// code so the two differ only by fused multiply-adds and the exp routine.

// (sigma(z), 1 - sigma(z)), both accurate at either tail: from e = exp(-|z|) <= 1.
template <typename T> __device__ __forceinline__ void sigmoid_pair(T z, T* s, T* sc) {
    const bool pos = z > (T)0;
    const T e = xexp(pos ? -z : z);
    const T q = (T)1 / ((T)1 + e);
    const T eq = e * q;
    *s = pos ? q : eq;
    *sc = pos ? eq : q;
}

// (s, 1 - s) of the tanh-GELU at x: s = sigma(2u).
template <typename T> __device__ __forceinline__ void gelu_s(T x, T* s, T* sc) {
    const T c2 = (T)(2.0 * 0.7978845608028654), a = (T)0.044715;
    sigmoid_pair(c2 * (x + a * x * x * x), s, sc);
}

template <typename S> __device__ void act_fwd(const S* x, S* y, unsigned long long n, int act) {
    typedef typename Work<S>::T T;
    GRID_STRIDE(i, n) {
        const T v = widen(x[i]);
        T s, sc;
        if (act == 0) sigmoid_pair(v, &s, &sc);
        else gelu_s(v, &s, &sc);
        put(&y[i], v * s);
    }
}

template <typename S>
__device__ void act_grad(const S* x, const S* dy, S* dx, unsigned long long n, int act) {
    typedef typename Work<S>::T T;
    const T c2 = (T)(2.0 * 0.7978845608028654), a3 = (T)(3.0 * 0.044715);
    GRID_STRIDE(i, n) {
        const T v = widen(x[i]), g = widen(dy[i]);
        T s, sc;
        if (act == 0) {
            sigmoid_pair(v, &s, &sc);
            put(&dx[i], g * s * ((T)1 + v * sc));
        } else {
            gelu_s(v, &s, &sc);
            put(&dx[i], g * (s + v * s * sc * c2 * ((T)1 + a3 * v * v)));
        }
    }
}

template <typename S> __device__ void swiglu_fwd(const S* gate, const S* up, S* y, unsigned long long n) {
    typedef typename Work<S>::T T;
    GRID_STRIDE(i, n) {
        const T g = widen(gate[i]);
        T s, sc;
        sigmoid_pair(g, &s, &sc);
        put(&y[i], g * s * widen(up[i]));
    }
}

template <typename S>
__device__ void swiglu_dgate_fwd(const S* gate, const S* up, const S* dy, S* dx, unsigned long long n) {
    typedef typename Work<S>::T T;
    GRID_STRIDE(i, n) {
        const T g = widen(gate[i]);
        T s, sc;
        sigmoid_pair(g, &s, &sc);
        put(&dx[i], widen(dy[i]) * widen(up[i]) * s * ((T)1 + g * sc));
    }
}

#define ACT(NAME, S)                                                                               \
    extern "C" __global__ void NAME(const S* x, S* y, unsigned long long n, int act) {             \
        act_fwd<S>(x, y, n, act);                                                                  \
    }
#define ACT_GRAD(NAME, S)                                                                          \
    extern "C" __global__ void NAME(const S* x, const S* dy, S* dx, unsigned long long n,          \
                                    int act) {                                                     \
        act_grad<S>(x, dy, dx, n, act);                                                            \
    }
#define SWIGLU(NAME, S)                                                                            \
    extern "C" __global__ void NAME(const S* gate, const S* up, S* y, unsigned long long n) {      \
        swiglu_fwd<S>(gate, up, y, n);                                                             \
    }
#define SWIGLU_DGATE(NAME, S)                                                                      \
    extern "C" __global__ void NAME(const S* gate, const S* up, const S* dy, S* dx,                \
                                    unsigned long long n) {                                        \
        swiglu_dgate_fwd<S>(gate, up, dy, dx, n);                                                  \
    }

FOR_FLOATS(ACT, silu_gelu)
FOR_FLOATS(ACT_GRAD, silu_gelu_grad)
FOR_FLOATS(SWIGLU, swiglu)
FOR_FLOATS(SWIGLU_DGATE, swiglu_dgate)
