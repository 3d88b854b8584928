// gemm.cu: the dense products, f32 accumulation.
//
// What it computes (reference: crates/cpu/src/ops/gemm.rs, matmul.rs)
//   linear_<w>   out[m, n] = act((sum_k x[m, k] * w[n, k]) * s[n] + bias[n])
//                x f32 [M, K]; w [N, K] (HF's [out, in]) as f32, f16, bf16 or int8;
//                s[n] = the int8 row scale (null for float weights: s = 1);
//                bias f32 [N] or null; act: apply_act's code (common.cuh),
//                ACT_IDENTITY for none. With `accumulate` (Backend::linear_add, the
//                residual epilogue) out[m, n] += that value: out holds the residual
//                on entry (store_linear). Either is bit for bit the unfused ops
//                (linear, then activation / add_assign). Tiled shared-memory GEMM,
//                any M, N, K.
//   gemv_<w>     the same for M <= 8 (decode steps): one warp per output column
//                streams its weight row once and serves all M rows of x.
//   linear_gated_<w>, gemv_gated_<w>  (Backend::linear_gated, a gated FFN's up projections)
//                out[m, n] = act(g[m, n]) * u[m, n], g = (sum_k x[m, k] * wg[n, k]) * sg[n],
//                u likewise with wu, su; wg, wu [N, K] of one type, sg/su their int8
//                row scales or null; no bias; act: apply_act's code (common.cuh).
//                Each sum is computed as linear_<w> / gemv_<w> compute it, and the
//                epilogue as elementwise.cu's gated_activation: bit for bit the two
//                linears then gated_activation, without the two [M, N] temporaries.
//   batched_matmul_f32  out[b, m, n] = sum_k a[b, m, k] * B[b, k, n]
//                a contiguous [batch, M, K]; B any strides (sb, sk, sn) in elements;
//                out contiguous [batch, M, N].
// Int8 weights are dequantised in registers (weight-only int8): the int8 value
// is widened to f32, multiplied with x, and the row scale applied once per
// output. (The CPU backend's VNNI path also quantises x; this does not.)
//
// Tiling (linear_*, batched_matmul_f32): block tile BM x BN = 64 x 64 outputs, K
// step BK = 16, 256 threads, each computing a 4 x 4 register tile at rows
// ty + 16 i and columns tx + 16 j (tx = tid % 16, ty = tid / 16) so that shared
// reads are broadcast / conflict-free. Out-of-range rows, columns and k are
// zero-filled on load, so every M, N, K is correct.
//   Launch shape: grid (ceil(N / 64), ceil(M / 64), batch), block 256, static
//   shared memory 2 * 16 * 68 * 4 B = 8.5 KiB.
// GEMV: grid ceil(N / 8), block 256 (8 warps, one output column each), lanes
// stride over k (coalesced weight reads); per-warp sums with shuffles.
// Gated: linear_gated_<w> tiles 64 rows x 32 output columns (B tile: 32 gate +
// 32 up rows), grid (ceil(N / 32), ceil(M / 64)), block 256, same shared memory;
// gemv_gated_<w> as the GEMV (grid ceil(N / 8), block 256), both rows per warp.
//
// Napkin math: linear reads M*K*4 + N*K*w_bytes and writes M*N*4 bytes and does
// 2*M*N*K flops; the GEMV is bandwidth bound (weights dominate).
#include "common.cuh"

#define BM 64
#define BN 64
#define BK 16
#define GEMM_THREADS 256
#define GEMV_MAX_M 8

// B(n, k) for linear: w[n * K + k] of weight type W.
template <class W>
struct LinearB {
    const typename W::T* w;
    i64 K;
    __device__ __forceinline__ float operator()(i64 n, i64 k) const { return W::load(w, n * K + k); }
};

// B(n, k) for batched matmul: b[k * sk + n * sn] (the batch offset already applied).
struct StridedB {
    const float* b;
    i64 sk, sn;
    __device__ __forceinline__ float operator()(i64 n, i64 k) const { return b[k * sk + n * sn]; }
};

template <class BL>
__device__ __forceinline__ void gemm_tile(const float* A, i64 lda, const BL bl, float* C, i64 ldc, int M, int N,
                                          int K, const float* col_scale, const float* bias, int act,
                                          int accumulate) {
    // +4 padding keeps the transposed stores from piling onto one bank.
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        // 64 x 16 elements of each operand, 4 per thread; consecutive threads read
        // consecutive k of one row (both operands are k-contiguous for linear).
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = tid + GEMM_THREADS * r;
            const int row = e / BK, kk = e % BK;
            const int k = k0 + kk;
            const int m = m0 + row, n = n0 + row;
            As[kk][row] = (m < M && k < K) ? A[(i64)m * lda + k] : 0.0f;
            Bs[kk][row] = (n < N && k < K) ? bl(n, k) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();  // the tiles are overwritten next iteration
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (col_scale) v *= col_scale[n];
            if (bias) v += bias[n];
            store_linear(C, (i64)m * ldc + n, v, act, accumulate);
        }
    }
}

template <class W>
__device__ __forceinline__ void linear_tiled(const float* x, const typename W::T* w, const float* scales,
                                             const float* bias, float* out, int M, int N, int K, int act,
                                             int accumulate) {
    LinearB<W> bl;
    bl.w = w;
    bl.K = K;
    gemm_tile(x, K, bl, out, N, M, N, K, scales, bias, act, accumulate);
}

#define LINEAR(NAME, W)                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                          \
        NAME(const float* x, const W::T* w, const float* scales, const float* bias, float* out, int M, \
             int N, int K, int act, int accumulate) {                                                   \
        linear_tiled<W>(x, w, scales, bias, out, M, N, K, act, accumulate);                             \
    }
LINEAR(linear_f32, WF32)
LINEAR(linear_f16, WF16)
LINEAR(linear_bf16, WBF16)
LINEAR(linear_i8, WI8)

template <class W>
__device__ __forceinline__ void gemv(const float* x, const typename W::T* w, const float* scales,
                                     const float* bias, float* out, int M, int N, int K, int act,
                                     int accumulate) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + warp;
    if (n >= N) return;  // whole warp leaves; there is no block barrier below
    const typename W::T* wr = w + (i64)n * K;
    float acc[GEMV_MAX_M];
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) acc[m] = 0.0f;
    for (int k = lane; k < K; k += 32) {
        const float wv = W::load(wr, k);
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m)
            if (m < M) acc[m] = fmaf(x[(i64)m * K + k], wv, acc[m]);
    }
    const float s = scales ? scales[n] : 1.0f;
    const float b = bias ? bias[n] : 0.0f;
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m >= M) break;  // M is uniform: the whole warp takes the same path
        float v = warp_sum(acc[m]);
        if (scales) v *= s;
        if (bias) v += b;
        if (lane == 0) store_linear(out, (i64)m * N + n, v, act, accumulate);
    }
}

#define GEMV(NAME, W)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                   \
        NAME(const float* x, const W::T* w, const float* scales, const float* bias, float* out, int M, \
             int N, int K, int act, int accumulate) {                                                   \
        gemv<W>(x, w, scales, bias, out, M, N, K, act, accumulate);                                     \
    }
GEMV(gemv_f32, WF32)
GEMV(gemv_f16, WF16)
GEMV(gemv_bf16, WBF16)
GEMV(gemv_i8, WI8)

// ---- gated: out = act(x . wg) * (x . wu) ---------------------------------------

// gemm_tile for linear_gated_<w>: the block's 64 B columns are 32 gate rows
// (tile columns 0-31) and the same 32 up rows (32-63), so thread (tx, ty)
// holds gate and up of output columns tx and tx + 16 in acc[i][j] / acc[i][j + 2].
// Loads, k loop and fmaf order are gemm_tile's: each sum has the bits of
// linear_<w>'s for that column.
template <class W>
__device__ __forceinline__ void linear_gated_tiled(const float* __restrict__ x, const typename W::T* __restrict__ wg,
                                                   const float* __restrict__ sg, const typename W::T* __restrict__ wu,
                                                   const float* __restrict__ su, float* __restrict__ out, int M,
                                                   int N, int K, int act) {
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * (BN / 2);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int e = tid + GEMM_THREADS * r;
            const int row = e / BK, kk = e % BK;
            const int k = k0 + kk;
            const int m = m0 + row, n = n0 + (row & 31);
            As[kk][row] = (m < M && k < K) ? x[(i64)m * K + k] : 0.0f;
            const typename W::T* wr = row < 32 ? wg : wu;
            Bs[kk][row] = (n < N && k < K) ? W::load(wr, (i64)n * K + k) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n >= N) continue;
            float g = acc[i][j], u = acc[i][j + 2];
            if (sg) g *= sg[n];
            if (su) u *= su[n];
            out[(i64)m * N + n] = apply_act(act, g) * u;
        }
    }
}

#define LINEAR_GATED(NAME, W)                                                                             \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                          \
        NAME(const float* x, const W::T* wg, const float* sg, const W::T* wu, const float* su, float* out, \
             int M, int N, int K, int act) {                                                             \
        linear_gated_tiled<W>(x, wg, sg, wu, su, out, M, N, K, act);                                     \
    }
LINEAR_GATED(linear_gated_f32, WF32)
LINEAR_GATED(linear_gated_f16, WF16)
LINEAR_GATED(linear_gated_bf16, WBF16)
LINEAR_GATED(linear_gated_i8, WI8)

// gemv for linear_gated_gemv_<w>: one warp per output column streams both
// weight rows once; each sum in gemv's order (the bits of gemv_<w>'s).
template <class W>
__device__ __forceinline__ void gemv_gated(const float* __restrict__ x, const typename W::T* __restrict__ wg,
                                           const float* __restrict__ sg, const typename W::T* __restrict__ wu,
                                           const float* __restrict__ su, float* __restrict__ out, int M, int N,
                                           int K, int act) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + warp;
    if (n >= N) return;  // whole warp leaves; there is no block barrier below
    const typename W::T* gr = wg + (i64)n * K;
    const typename W::T* ur = wu + (i64)n * K;
    float ag[GEMV_MAX_M], au[GEMV_MAX_M];
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) ag[m] = au[m] = 0.0f;
    for (int k = lane; k < K; k += 32) {
        const float gv = W::load(gr, k), uv = W::load(ur, k);
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m)
            if (m < M) {
                const float xv = x[(i64)m * K + k];
                ag[m] = fmaf(xv, gv, ag[m]);
                au[m] = fmaf(xv, uv, au[m]);
            }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m >= M) break;  // M is uniform: the whole warp takes the same path
        float g = warp_sum(ag[m]), u = warp_sum(au[m]);
        if (sg) g *= sg[n];
        if (su) u *= su[n];
        if (lane == 0) out[(i64)m * N + n] = apply_act(act, g) * u;
    }
}

#define GEMV_GATED(NAME, W)                                                                               \
    extern "C" __global__ void __launch_bounds__(256)                                                   \
        NAME(const float* x, const W::T* wg, const float* sg, const W::T* wu, const float* su, float* out, \
             int M, int N, int K, int act) {                                                             \
        gemv_gated<W>(x, wg, sg, wu, su, out, M, N, K, act);                                             \
    }
GEMV_GATED(gemv_gated_f32, WF32)
GEMV_GATED(gemv_gated_f16, WF16)
GEMV_GATED(gemv_gated_bf16, WBF16)
GEMV_GATED(gemv_gated_i8, WI8)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    batched_matmul_f32(const float* a, const float* b, float* out, int M, int N, int K, i64 sb, i64 sk, i64 sn) {
    const i64 batch = blockIdx.z;
    StridedB bl;
    bl.b = b + batch * sb;
    bl.sk = sk;
    bl.sn = sn;
    gemm_tile(a + batch * (i64)M * K, K, bl, out + batch * (i64)M * N, N, M, N, K, nullptr, nullptr,
              ACT_IDENTITY, 0);
}
