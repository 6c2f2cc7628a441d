// Fused scaled dot-product attention and its backward, flash-attention-2 style
// (kernels/src/attention.rs has the method and the formulas; kernels/src/cuda/attention.rs
// launches these). Inputs are dense row-major (the host compacts strided ones):
//   q (B, H, Tq, D), k, v (B, Hkv, Tk, D), query head h reads kv head h / (H / Hkv);
//   mask (mb, mh, mq, Tk) in the working precision, each of mb, mh, mq 1 (broadcast) or full;
//   L, Dl (B, H, Tq) in the working precision.
//   attention_fwd:   q, k, v, mask -> o (B, H, Tq, D), L,      L_i = log sum_j exp(S_ij)
//   attention_delta: o, dO -> Dl,                              Dl_i = dO_i . o_i
//   attention_dq:    q, k, v, dO, L, Dl, mask -> dq (B, H, Tq, D)
//   attention_dkdv:  q, k, v, dO, L, Dl, mask -> dk, dv (B, Hkv, Tk, D)
// with S_ij = (scale q_i) . k_j + M_ij, P_ij = exp(S_ij - L_i), dS_ij = P_ij (dO_i . v_j - Dl_i),
// dq_i = scale sum_j dS_ij k_j, dk_j = sum_i dS_ij (scale q_i), dv_j = sum_i P_ij dO_i.
// Hidden keys (causal, bottom-right aligned: key j is visible to row i iff j < Tk - Tq + i + 1)
// get P = 0 without forming a score, and a row with L = -inf (nothing visible) gets P = 0: o,
// dq, and its share of dk, dv are 0, never NaN.
//
// Shapes of the work: 128 threads (4 warps) per block, everything in the working precision.
//   forward, dq: a block takes 16 query rows of one (b, h), 4 per warp, and walks the visible
//     keys in tiles of 32 staged in shared memory: lane j forms the scores of key j with the
//     warp's 4 rows (one dot product per lane, no shuffles), the row statistics are warp
//     reductions, and for O += P V (dq += dS K) lane l owns elements l, l + 32, .. of the rows.
//   dk, dv: a block takes 32 keys of one (b, kv head), 8 per warp, and walks the query rows
//     of every query head of the group in tiles of 32: lane i forms the scores of row i with
//     the warp's 8 keys, and lane l owns elements l, l + 32, .. of the 8 dk and dv rows.
// Every sum has a fixed order that depends only on the shape (per-lane loops, butterfly warp
// reductions, which give every lane the same bits), and every output element has one writer:
// no atomics, results are identical run to run. D is at most 32 * ATT_DPL = 128 (the host
// checks); tiles keep rows of D + 1 where lanes read along a row, so no bank conflicts.

constexpr int ATT_THREADS = 128;
constexpr int ATT_NW = ATT_THREADS / 32;
// forward, dq: query rows per warp and per block, keys per tile (one per lane).
constexpr int ATT_RPW = 4;
constexpr int ATT_BQ = ATT_NW * ATT_RPW;
constexpr int ATT_BK = 32;
// dk, dv: keys per warp and per block, query rows per tile (one per lane).
constexpr int ATT_KPW = 8;
constexpr int ATT_BKB = ATT_NW * ATT_KPW;
constexpr int ATT_TQ = 32;
// Elements of a row of D per lane.
constexpr int ATT_DPL = 4;

// Sizes and flags of one call (kernels/src/cuda/attention.rs passes the same struct).
struct AttShape {
    unsigned int h, hkv, tq, tk, d;
    unsigned int mb, mh, mq; // mask dims; unused without a mask
    int causal;
    int has_mask; // 0: the mask pointer is a stand-in, never read
};

__device__ __forceinline__ float xlog(float v) { return logf(v); }
__device__ __forceinline__ double xlog(double v) { return log(v); }

// Keys 0..att_key_end(i) are visible to query row i.
__device__ __forceinline__ unsigned int att_key_end(const AttShape& s, unsigned int i) {
    if (!s.causal) return s.tk;
    const long long e = (long long)s.tk - (long long)s.tq + (long long)i + 1;
    return e <= 0 ? 0u : (e >= (long long)s.tk ? s.tk : (unsigned int)e);
}

// The first query row that sees key j (earlier rows do not).
__device__ __forceinline__ unsigned int att_first_row(const AttShape& s, unsigned int j) {
    if (!s.causal) return 0u;
    const long long r = (long long)j + (long long)s.tq - (long long)s.tk;
    return r <= 0 ? 0u : (unsigned int)r;
}

// The mask row (Tk) of query row i of head h of batch b, broadcast where a dim is 1.
template <typename T>
__device__ __forceinline__ const T* att_mask_row(const T* mask, const AttShape& s, unsigned int b,
                                                 unsigned int h, unsigned int i) {
    const size_t r = ((size_t)(s.mb == 1 ? 0u : b) * s.mh + (s.mh == 1 ? 0u : h)) * s.mq +
                     (s.mq == 1 ? 0u : i);
    return mask + r * s.tk;
}

// The dynamic shared memory of the launch, in bytes.
__device__ __forceinline__ unsigned int att_dynamic_smem() {
    unsigned int r;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}

// Stops the kernel when the host gave less shared memory than the tiles take (the sizes are
// computed twice, here and in attention.rs): a clear failure instead of stray writes.
template <typename T> __device__ __forceinline__ void att_need_smem(size_t elems) {
    if ((size_t)att_dynamic_smem() < elems * sizeof(T)) __trap();
}

extern __shared__ __align__(16) unsigned char att_smem[];

// Forward: grid (B * H, ceil(Tq / 16)). Shared: qs (16, D) = scale * q, ks (32, D + 1),
// vs (32, D), ps (16, 32) the probabilities of the tile.
template <typename S>
__device__ void att_fwd(const S* __restrict__ q, const S* __restrict__ k, const S* __restrict__ v,
                        const typename Work<S>::T* __restrict__ mask, S* __restrict__ o,
                        typename Work<S>::T* __restrict__ lse, const AttShape s, double scale_d) {
    typedef typename Work<S>::T T;
    const unsigned int d = s.d, lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    att_need_smem<T>((size_t)ATT_BQ * d + (size_t)ATT_BK * (d + 1) + (size_t)ATT_BK * d +
                     (size_t)ATT_BQ * ATT_BK);
    T* qs = (T*)att_smem;
    T* ks = qs + ATT_BQ * d;
    T* vs = ks + ATT_BK * (d + 1);
    T* ps = vs + ATT_BK * d;

    const unsigned int bh = blockIdx.x, b = bh / s.h, hh = bh % s.h;
    const unsigned int g = hh / (s.h / s.hkv);
    const unsigned int i0 = blockIdx.y * ATT_BQ;
    const unsigned int rows = min((unsigned int)ATT_BQ, s.tq - i0);
    const size_t qrow0 = (size_t)bh * s.tq + i0;   // first row of the block in q, o, L
    const size_t krow0 = ((size_t)b * s.hkv + g) * s.tk; // first row of the kv head in k, v
    const T scale = (T)scale_d;

    for (unsigned int x = threadIdx.x; x < ATT_BQ * d; x += blockDim.x) {
        qs[x] = x / d < rows ? widen(q[qrow0 * d + x]) * scale : (T)0;
    }
    // The warp's rows: live (inside Tq) and their visible keys; dead rows see none.
    unsigned int kend[ATT_RPW];
    T m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][ATT_DPL];
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const unsigned int rr = warp * ATT_RPW + r;
        kend[r] = rr < rows ? att_key_end(s, i0 + rr) : 0u;
        m[r] = neg_inf<T>();
        l[r] = 0;
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) acc[r][c] = 0;
    }
    const unsigned int end = att_key_end(s, i0 + rows - 1);
    for (unsigned int j0 = 0; j0 < end; j0 += ATT_BK) {
        const unsigned int nk = min((unsigned int)ATT_BK, end - j0);
        __syncthreads(); // qs is staged; nobody reads the previous tile any more
        for (unsigned int x = threadIdx.x; x < nk * d; x += blockDim.x) {
            const unsigned int jj = x / d;
            const size_t at = (krow0 + j0) * d + x;
            ks[jj * (d + 1) + (x - jj * d)] = widen(k[at]);
            vs[x] = widen(v[at]);
        }
        __syncthreads();
        // Scores of key j0 + lane with the warp's rows.
        T sc[ATT_RPW];
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) sc[r] = 0;
        if (lane < nk) {
            const T* kr = ks + lane * (d + 1);
            const T* qr = qs + warp * ATT_RPW * d;
            for (unsigned int c = 0; c < d; ++c) {
                const T kc = kr[c];
#pragma unroll
                for (int r = 0; r < ATT_RPW; ++r) sc[r] += qr[r * d + c] * kc;
            }
        }
        const unsigned int j = j0 + lane;
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) {
            const bool vis = lane < nk && j < kend[r];
            T x = neg_inf<T>();
            if (vis) {
                x = sc[r];
                if (s.has_mask) x += att_mask_row(mask, s, b, hh, i0 + warp * ATT_RPW + r)[j];
            }
            // Online softmax; a row that has seen nothing yet keeps O = 0, l = 0 (and never
            // forms -inf - -inf).
            const T mnew = max_of(m[r], warp_max(x));
            const bool none = mnew == neg_inf<T>();
            const T sub = none ? (T)0 : mnew;
            const T alpha = none ? (T)1 : xexp(m[r] - mnew);
            const T p = vis ? xexp(x - sub) : (T)0;
            l[r] = l[r] * alpha + warp_sum(p);
#pragma unroll
            for (int c = 0; c < ATT_DPL; ++c) acc[r][c] *= alpha;
            m[r] = mnew;
            ps[(warp * ATT_RPW + r) * ATT_BK + lane] = p;
        }
        __syncwarp();
        // O += P V: lane owns elements lane + 32 c.
        for (unsigned int jj = 0; jj < nk; ++jj) {
            T vv[ATT_DPL];
#pragma unroll
            for (int c = 0; c < ATT_DPL; ++c) {
                const unsigned int e = lane + 32u * c;
                vv[c] = e < d ? vs[jj * d + e] : (T)0;
            }
#pragma unroll
            for (int r = 0; r < ATT_RPW; ++r) {
                const T p = ps[(warp * ATT_RPW + r) * ATT_BK + jj];
#pragma unroll
                for (int c = 0; c < ATT_DPL; ++c) acc[r][c] += p * vv[c];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const unsigned int rr = warp * ATT_RPW + r;
        if (rr >= rows) continue;
        const size_t row = qrow0 + rr;
        const T inv = l[r] > (T)0 ? (T)1 / l[r] : (T)0;
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) {
            const unsigned int e = lane + 32u * c;
            if (e < d) put(&o[row * d + e], acc[r][c] * inv);
        }
        if (lane == 0) lse[row] = l[r] > (T)0 ? m[r] + xlog(l[r]) : neg_inf<T>();
    }
}

// Dl_i = dO_i . o_i: one warp per row, 8 rows per block of 256 threads.
template <typename S>
__device__ void att_delta(const S* __restrict__ o, const S* __restrict__ dout,
                          typename Work<S>::T* __restrict__ delta, unsigned long long rows,
                          unsigned int d) {
    typedef typename Work<S>::T T;
    const unsigned long long row = (unsigned long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return; // the whole warp: the shuffles below stay converged
    const unsigned int lane = threadIdx.x & 31u;
    T acc = 0;
    for (unsigned int c = lane; c < d; c += 32u) acc += widen(dout[row * d + c]) * widen(o[row * d + c]);
    acc = warp_sum(acc);
    if (lane == 0) delta[row] = acc;
}

// dq: grid (B * H, ceil(Tq / 16)). Shared: qs (16, D) = scale * q, dos (16, D), ks, vs
// (32, D + 1), dss (16, 32) dS of the tile.
template <typename S>
__device__ void att_dq(const S* __restrict__ q, const S* __restrict__ k, const S* __restrict__ v,
                       const S* __restrict__ dout, const typename Work<S>::T* __restrict__ lse,
                       const typename Work<S>::T* __restrict__ delta,
                       const typename Work<S>::T* __restrict__ mask, S* __restrict__ dq,
                       const AttShape s, double scale_d) {
    typedef typename Work<S>::T T;
    const unsigned int d = s.d, lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    att_need_smem<T>(2 * (size_t)ATT_BQ * d + 2 * (size_t)ATT_BK * (d + 1) +
                     (size_t)ATT_BQ * ATT_BK);
    T* qs = (T*)att_smem;
    T* dos = qs + ATT_BQ * d;
    T* ks = dos + ATT_BQ * d;
    T* vs = ks + ATT_BK * (d + 1);
    T* dss = vs + ATT_BK * (d + 1);

    const unsigned int bh = blockIdx.x, b = bh / s.h, hh = bh % s.h;
    const unsigned int g = hh / (s.h / s.hkv);
    const unsigned int i0 = blockIdx.y * ATT_BQ;
    const unsigned int rows = min((unsigned int)ATT_BQ, s.tq - i0);
    const size_t qrow0 = (size_t)bh * s.tq + i0;
    const size_t krow0 = ((size_t)b * s.hkv + g) * s.tk;
    const T scale = (T)scale_d;

    for (unsigned int x = threadIdx.x; x < ATT_BQ * d; x += blockDim.x) {
        const bool live = x / d < rows;
        qs[x] = live ? widen(q[qrow0 * d + x]) * scale : (T)0;
        dos[x] = live ? widen(dout[qrow0 * d + x]) : (T)0;
    }
    unsigned int kend[ATT_RPW];
    T lr[ATT_RPW], dl[ATT_RPW], acc[ATT_RPW][ATT_DPL];
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const unsigned int rr = warp * ATT_RPW + r;
        const bool live = rr < rows;
        lr[r] = live ? lse[qrow0 + rr] : neg_inf<T>();
        dl[r] = live ? delta[qrow0 + rr] : (T)0;
        // A row with nothing visible (L = -inf) takes no key.
        kend[r] = live && lr[r] != neg_inf<T>() ? att_key_end(s, i0 + rr) : 0u;
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) acc[r][c] = 0;
    }
    const unsigned int end = att_key_end(s, i0 + rows - 1);
    for (unsigned int j0 = 0; j0 < end; j0 += ATT_BK) {
        const unsigned int nk = min((unsigned int)ATT_BK, end - j0);
        __syncthreads();
        for (unsigned int x = threadIdx.x; x < nk * d; x += blockDim.x) {
            const unsigned int jj = x / d;
            const size_t at = (krow0 + j0) * d + x;
            const unsigned int to = jj * (d + 1) + (x - jj * d);
            ks[to] = widen(k[at]);
            vs[to] = widen(v[at]);
        }
        __syncthreads();
        // Scores and dP = dO . v of key j0 + lane with the warp's rows.
        T sc[ATT_RPW], dp[ATT_RPW];
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) sc[r] = dp[r] = 0;
        if (lane < nk) {
            const T* kr = ks + lane * (d + 1);
            const T* vr = vs + lane * (d + 1);
            const T* qr = qs + warp * ATT_RPW * d;
            const T* dr = dos + warp * ATT_RPW * d;
            for (unsigned int c = 0; c < d; ++c) {
                const T kc = kr[c], vc = vr[c];
#pragma unroll
                for (int r = 0; r < ATT_RPW; ++r) {
                    sc[r] += qr[r * d + c] * kc;
                    dp[r] += dr[r * d + c] * vc;
                }
            }
        }
        const unsigned int j = j0 + lane;
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) {
            T ds = 0;
            if (lane < nk && j < kend[r]) {
                T x = sc[r];
                if (s.has_mask) x += att_mask_row(mask, s, b, hh, i0 + warp * ATT_RPW + r)[j];
                ds = xexp(x - lr[r]) * (dp[r] - dl[r]);
            }
            dss[(warp * ATT_RPW + r) * ATT_BK + lane] = ds;
        }
        __syncwarp();
        // dq += dS K: lane owns elements lane + 32 c.
        for (unsigned int jj = 0; jj < nk; ++jj) {
            T kv[ATT_DPL];
#pragma unroll
            for (int c = 0; c < ATT_DPL; ++c) {
                const unsigned int e = lane + 32u * c;
                kv[c] = e < d ? ks[jj * (d + 1) + e] : (T)0;
            }
#pragma unroll
            for (int r = 0; r < ATT_RPW; ++r) {
                const T x = dss[(warp * ATT_RPW + r) * ATT_BK + jj];
#pragma unroll
                for (int c = 0; c < ATT_DPL; ++c) acc[r][c] += x * kv[c];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const unsigned int rr = warp * ATT_RPW + r;
        if (rr >= rows) continue;
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) {
            const unsigned int e = lane + 32u * c;
            if (e < d) put(&dq[(qrow0 + rr) * d + e], acc[r][c] * scale);
        }
    }
}

// dk, dv: grid (B * Hkv, ceil(Tk / 32)). Shared: kt, vt (32, D) the block's keys (read as
// broadcasts), qs (32, D + 1) = scale * q and dos (32, D + 1) of a query tile, pw, dsw (32, 32)
// P and dS of the tile (key-major), ls, dls (32) L and Dl of the tile's rows.
template <typename S>
__device__ void att_dkdv(const S* __restrict__ q, const S* __restrict__ k,
                         const S* __restrict__ v, const S* __restrict__ dout,
                         const typename Work<S>::T* __restrict__ lse,
                         const typename Work<S>::T* __restrict__ delta,
                         const typename Work<S>::T* __restrict__ mask, S* __restrict__ dk,
                         S* __restrict__ dv, const AttShape s, double scale_d) {
    typedef typename Work<S>::T T;
    const unsigned int d = s.d, lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    att_need_smem<T>(2 * (size_t)ATT_BKB * d + 2 * (size_t)ATT_TQ * (d + 1) +
                     2 * (size_t)ATT_BKB * ATT_TQ + 2 * (size_t)ATT_TQ);
    T* kt = (T*)att_smem;
    T* vt = kt + ATT_BKB * d;
    T* qs = vt + ATT_BKB * d;
    T* dos = qs + ATT_TQ * (d + 1);
    T* pw = dos + ATT_TQ * (d + 1);
    T* dsw = pw + ATT_BKB * ATT_TQ;
    T* ls = dsw + ATT_BKB * ATT_TQ;
    T* dls = ls + ATT_TQ;

    const unsigned int bg = blockIdx.x, b = bg / s.hkv, g = bg % s.hkv;
    const unsigned int group = s.h / s.hkv;
    const unsigned int j0 = blockIdx.y * ATT_BKB;
    const unsigned int nkeys = min((unsigned int)ATT_BKB, s.tk - j0);
    const size_t krow0 = (size_t)bg * s.tk + j0; // first key of the block in k, v, dk, dv
    const T scale = (T)scale_d;

    for (unsigned int x = threadIdx.x; x < ATT_BKB * d; x += blockDim.x) {
        const bool live = x / d < nkeys;
        kt[x] = live ? widen(k[krow0 * d + x]) : (T)0;
        vt[x] = live ? widen(v[krow0 * d + x]) : (T)0;
    }
    T ak[ATT_KPW][ATT_DPL], av[ATT_KPW][ATT_DPL];
#pragma unroll
    for (int kk = 0; kk < ATT_KPW; ++kk) {
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) ak[kk][c] = av[kk][c] = 0;
    }
    const T* kw = kt + warp * ATT_KPW * d;
    const T* vw = vt + warp * ATT_KPW * d;
    const unsigned int jw = j0 + warp * ATT_KPW; // the warp's first key
    // Rows before the first that sees key j0 see no key of the block.
    const unsigned int first = att_first_row(s, j0) / ATT_TQ * ATT_TQ;
    for (unsigned int hi = 0; hi < group; ++hi) {
        const unsigned int hh = g * group + hi;
        const size_t qbase = ((size_t)b * s.h + hh) * s.tq;
        for (unsigned int i0 = first; i0 < s.tq; i0 += ATT_TQ) {
            const unsigned int nr = min((unsigned int)ATT_TQ, s.tq - i0);
            __syncthreads(); // nobody reads the previous tile any more
            for (unsigned int x = threadIdx.x; x < ATT_TQ * d; x += blockDim.x) {
                const unsigned int ii = x / d;
                const unsigned int to = ii * (d + 1) + (x - ii * d);
                const bool live = ii < nr;
                qs[to] = live ? widen(q[(qbase + i0) * d + x]) * scale : (T)0;
                dos[to] = live ? widen(dout[(qbase + i0) * d + x]) : (T)0;
            }
            if (threadIdx.x < ATT_TQ) {
                const bool live = threadIdx.x < nr;
                ls[threadIdx.x] = live ? lse[qbase + i0 + threadIdx.x] : neg_inf<T>();
                dls[threadIdx.x] = live ? delta[qbase + i0 + threadIdx.x] : (T)0;
            }
            __syncthreads();
            // Scores and dP of row i0 + lane with the warp's keys.
            T sc[ATT_KPW], dp[ATT_KPW];
#pragma unroll
            for (int kk = 0; kk < ATT_KPW; ++kk) sc[kk] = dp[kk] = 0;
            const T* qr = qs + lane * (d + 1);
            const T* dr = dos + lane * (d + 1);
            for (unsigned int c = 0; c < d; ++c) {
                const T qc = qr[c], oc = dr[c];
#pragma unroll
                for (int kk = 0; kk < ATT_KPW; ++kk) {
                    sc[kk] += qc * kw[kk * d + c];
                    dp[kk] += oc * vw[kk * d + c];
                }
            }
            const unsigned int i = i0 + lane;
            const T lr = ls[lane], dl = dls[lane];
            // Dead rows and rows with nothing visible (L = -inf) take no key.
            const unsigned int kend = lane < nr && lr != neg_inf<T>() ? att_key_end(s, i) : 0u;
            const T* mrow = s.has_mask && kend > 0 ? att_mask_row(mask, s, b, hh, i) : mask;
#pragma unroll
            for (int kk = 0; kk < ATT_KPW; ++kk) {
                const unsigned int j = jw + kk;
                T p = 0, ds = 0;
                if (j < kend) {
                    T x = sc[kk];
                    if (s.has_mask) x += mrow[j];
                    p = xexp(x - lr);
                    ds = p * (dp[kk] - dl);
                }
                pw[(warp * ATT_KPW + kk) * ATT_TQ + lane] = p;
                dsw[(warp * ATT_KPW + kk) * ATT_TQ + lane] = ds;
            }
            __syncwarp();
            // dv += P^T dO, dk += dS^T (scale q): lane owns elements lane + 32 c.
            for (unsigned int ii = 0; ii < nr; ++ii) {
                T qv[ATT_DPL], ov[ATT_DPL];
#pragma unroll
                for (int c = 0; c < ATT_DPL; ++c) {
                    const unsigned int e = lane + 32u * c;
                    qv[c] = e < d ? qs[ii * (d + 1) + e] : (T)0;
                    ov[c] = e < d ? dos[ii * (d + 1) + e] : (T)0;
                }
#pragma unroll
                for (int kk = 0; kk < ATT_KPW; ++kk) {
                    const T p = pw[(warp * ATT_KPW + kk) * ATT_TQ + ii];
                    const T ds = dsw[(warp * ATT_KPW + kk) * ATT_TQ + ii];
#pragma unroll
                    for (int c = 0; c < ATT_DPL; ++c) {
                        av[kk][c] += p * ov[c];
                        ak[kk][c] += ds * qv[c];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int kk = 0; kk < ATT_KPW; ++kk) {
        const unsigned int jj = warp * ATT_KPW + kk;
        if (jj >= nkeys) continue;
#pragma unroll
        for (int c = 0; c < ATT_DPL; ++c) {
            const unsigned int e = lane + 32u * c;
            if (e < d) {
                put(&dk[(krow0 + jj) * d + e], ak[kk][c]);
                put(&dv[(krow0 + jj) * d + e], av[kk][c]);
            }
        }
    }
}

#define ATT_FWD(NAME, S)                                                                           \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS)                                      \
        NAME(const S* q, const S* k, const S* v, const Work<S>::T* mask, S* o, Work<S>::T* lse,    \
             AttShape s, double scale) {                                                           \
        att_fwd<S>(q, k, v, mask, o, lse, s, scale);                                               \
    }
#define ATT_DELTA(NAME, S)                                                                         \
    extern "C" __global__ void NAME(const S* o, const S* dout, Work<S>::T* delta,                  \
                                    unsigned long long rows, unsigned int d) {                     \
        att_delta<S>(o, dout, delta, rows, d);                                                     \
    }
#define ATT_DQ(NAME, S)                                                                            \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS)                                      \
        NAME(const S* q, const S* k, const S* v, const S* dout, const Work<S>::T* lse,             \
             const Work<S>::T* delta, const Work<S>::T* mask, S* dq, AttShape s, double scale) {   \
        att_dq<S>(q, k, v, dout, lse, delta, mask, dq, s, scale);                                  \
    }
#define ATT_DKDV(NAME, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS)                                      \
        NAME(const S* q, const S* k, const S* v, const S* dout, const Work<S>::T* lse,             \
             const Work<S>::T* delta, const Work<S>::T* mask, S* dk, S* dv, AttShape s,            \
             double scale) {                                                                       \
        att_dkdv<S>(q, k, v, dout, lse, delta, mask, dk, dv, s, scale);                            \
    }

FOR_FLOATS(ATT_FWD, attention_fwd)
FOR_FLOATS(ATT_DELTA, attention_delta)
FOR_FLOATS(ATT_DQ, attention_dq)
FOR_FLOATS(ATT_DKDV, attention_dkdv)
