// gemm.cu: the dense products, f32 accumulation.
//
// What it computes (reference: crates/cpu/src/ops/gemm.rs, matmul.rs)
//   linear_<w>   out[m, n] = act((sum_k x[m, k] * w[n, k]) * s[n] + bias[n])
//                x f32 [M, K]; w [N, K] (HF's [out, in]) as f32, f16, bf16 or int8;
//                s[n] = the int8 row scale (null for float weights: s = 1);
//                bias f32 [N] or null; act: apply_act's code (common.cuh),
//                ACT_IDENTITY for none; out [M, N] f32, f16 or bf16 (`out_dt`,
//                common.cuh's OUT_*: a half out receives the f32 result rounded to
//                nearest even, store_out, the bits of an f32 out then cast). With `accumulate` (Backend::linear_add, the
//                residual epilogue) out[m, n] += that value: out holds the residual
//                on entry (store_linear). Either is bit for bit the unfused ops
//                (linear, then activation / add_assign). Tiled shared-memory GEMM,
//                any M, N, K.
//   gemv_<w>     the same for M <= 8 (decode steps): one warp per output column
//                streams its weight row once and serves all M rows of x.
//   linear_gated_<w>, gemv_gated_<w>  (Backend::linear_gated, a gated FFN's up projections)
//                out[m, n] = act(g[m, n]) * u[m, n], g = (sum_k x[m, k] * wg[n, k]) * sg[n],
//                u likewise with wu, su; wg, wu [N, K] of one type, sg/su their int8
//                row scales or null; no bias; act: apply_act's code (common.cuh);
//                out f32, f16 or bf16 (`out_dt`, as above).
//                Each sum is computed as linear_<w> / gemv_<w> compute it, and the
//                epilogue as elementwise.cu's gated_activation: bit for bit the two
//                linears then gated_activation, without the two [M, N] temporaries.
//   batched_matmul_f32  out[b, m, n] = sum_k a[b, m, k] * B[b, k, n]
//                a contiguous [batch, M, K]; B any strides (sb, sk, sn) in elements;
//                out contiguous [batch, M, N].
// x is f32 in every kernel here: the launcher widens a half x into pooled
// scratch first (crates/cuda/src/ops/gemm.rs).
// Int8 weights are dequantised in registers (weight-only int8): the int8 value
// is widened to f32, multiplied with x, and the row scale applied once per
// output. (The CPU backend's VNNI path also quantises x; this does not.)
//
// Tiling (linear_*, linear_gated_*, batched_matmul_f32: one main loop, gemm_tile):
// block tile BM x BN = 64 rows of x x 64 rows of B, K step BK = 16, 256
// threads, each computing a 4 x 4 register tile at rows ty + 16 i and tile
// columns tx + 16 j (tx = tid % 16, ty = tid / 16) so that shared reads are
// broadcast / conflict-free. A kernel supplies a B loader (tile row -> weight
// row) and an epilogue (tile columns -> outputs). Out-of-range rows, columns
// and k are zero-filled on load, so every M, N, K is correct.
//   linear_<w>, batched_matmul_f32: tile column c is output column
//   blockIdx.x * 64 + c. Launch shape: grid (ceil(N / 64), ceil(M / 64), batch),
//   block 256, static shared memory 2 * 16 * 68 * 4 B = 8.5 KiB.
//   linear_gated_<w>: the block covers 32 output columns n0 = blockIdx.x * 32;
//   B tile rows 0-31 are gate rows n0.., rows 32-63 the same up rows, so thread
//   (tx, ty) holds gate / up of columns n0 + tx + 16 j in acc[i][j] / acc[i][j + 2],
//   j < 2. Launch shape: grid (ceil(N / 32), ceil(M / 64)), block 256, same
//   shared memory.
// GEMV (gemv_<w>, gemv_gated_<w>: one warp body, gemv_warp): grid ceil(N / 8),
// block 256 (8 warps, one output column each; gated: both weight rows), lanes
// stride over k (coalesced weight reads, 16 bytes per lane where K and the
// pointers allow); per-warp sums with shuffles.
//
// Napkin math: linear reads M*K*4 + N*K*w_bytes and writes M*N*4 bytes and does
// 2*M*N*K flops; the GEMV is bandwidth bound (weights dominate).
#include "common.cuh"

#define BM 64
#define BN 64
#define BK 16
#define GEMM_THREADS 256
#define GEMV_MAX_M 8

// ---- tiled: the shared main loop ----------------------------------------------

// gemm_tile: the block's 64 x 64 tile of acc = A . B^T, then the epilogue.
//   A: f32 [M, K] rows of stride lda; the block covers A rows m0 .. m0 + 63,
//      m0 = blockIdx.y * BM.
//   bl(row, k): B element of tile-local row `row` (0..63) at k (k < K is
//      checked here); 0.0f for a row past the end of the weights.
//   ep(m, c, acc): for each row m < M of thread (tx, ty): acc[j] is tile column
//      c + 16 j (c = tx), j < 4; the epilogue maps tile columns to outputs and
//      checks them against N.
template <class BL, class EP>
__device__ __forceinline__ void gemm_tile(const float* A, i64 lda, int M, int K, const BL& bl, const EP& ep) {
    // +4 padding keeps the transposed stores from piling onto one bank.
    __shared__ float As[BK][BM + 4];
    __shared__ float Bs[BK][BN + 4];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * BM;
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
            const int m = m0 + row;
            As[kk][row] = (m < M && k < K) ? A[(i64)m * lda + k] : 0.0f;
            Bs[kk][row] = k < K ? bl(row, k) : 0.0f;
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
        if (m < M) ep(m, tx, acc[i]);
    }
}

// B loader of linear_<w>: tile row r is weight row n = n0 + r (w[n * K + k]).
template <class W>
struct LinearB {
    const typename W::T* w;
    i64 K;
    int N, n0;
    __device__ __forceinline__ float operator()(int row, int k) const {
        const int n = n0 + row;
        return n < N ? W::load(w, (i64)n * K + k) : 0.0f;
    }
};

// B loader of batched_matmul_f32: tile row r is column n = n0 + r of B,
// b[k * sk + n * sn] (the batch offset already applied).
struct StridedB {
    const float* b;
    i64 sk, sn;
    int N, n0;
    __device__ __forceinline__ float operator()(int row, int k) const {
        const i64 n = n0 + row;
        return n < N ? b[k * sk + n * sn] : 0.0f;
    }
};

// B loader of linear_gated_<w>: tile rows 0-31 are gate rows n0 .. n0 + 31,
// rows 32-63 the same up rows (n0 = blockIdx.x * 32).
template <class W>
struct GatedB {
    const typename W::T *wg, *wu;
    i64 K;
    int N, n0;
    __device__ __forceinline__ float operator()(int row, int k) const {
        const int n = n0 + (row & 31);
        return n < N ? W::load(row < 32 ? wg : wu, (i64)n * K + k) : 0.0f;
    }
};

// Epilogue of linear_<w> and batched_matmul_f32: tile column c + 16 j is output
// n0 + c + 16 j; out[m, n] (=/+=) act(acc * s[n] + bias[n]).
struct LinearEp {
    void* out;
    const float *scales, *bias;
    int N, n0, act, accumulate, out_dt;
    __device__ __forceinline__ void operator()(int m, int c, const float (&acc)[4]) const {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + c + 16 * j;
            if (n >= N) continue;
            float v = acc[j];
            if (scales) v *= scales[n];
            if (bias) v += bias[n];
            store_linear(out, (i64)m * N + n, v, act, accumulate, out_dt);
        }
    }
};

// Epilogue of linear_gated_<w>: tile columns c and c + 16 (j < 2) hold gate
// sums of outputs n0 + c + 16 j, columns c + 32 and c + 48 (j + 2) their up sums.
struct GatedEp {
    void* out;
    const float *sg, *su;
    int N, n0, act, out_dt;
    __device__ __forceinline__ void operator()(int m, int c, const float (&acc)[4]) const {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int n = n0 + c + 16 * j;
            if (n >= N) continue;
            float g = acc[j], u = acc[j + 2];
            if (sg) g *= sg[n];
            if (su) u *= su[n];
            store_out(out, (i64)m * N + n, apply_act(act, g) * u, out_dt);
        }
    }
};

#define LINEAR(NAME, W)                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                           \
        NAME(const float* x, const W::T* w, const float* scales, const float* bias, void* out, int M,    \
             int N, int K, int act, int accumulate, int out_dt) {                                        \
        const int n0 = blockIdx.x * BN;                                                                  \
        gemm_tile(x, K, M, K, LinearB<W>{w, K, N, n0},                                                   \
                  LinearEp{out, scales, bias, N, n0, act, accumulate, out_dt});                          \
    }
LINEAR(linear_f32, WF32)
LINEAR(linear_f16, WF16)
LINEAR(linear_bf16, WBF16)
LINEAR(linear_i8, WI8)

#define LINEAR_GATED(NAME, W)                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                             \
        NAME(const float* __restrict__ x, const W::T* __restrict__ wg, const float* __restrict__ sg,     \
             const W::T* __restrict__ wu, const float* __restrict__ su, void* __restrict__ out, int M, int N, \
             int K, int act, int out_dt) {                                                                 \
        const int n0 = blockIdx.x * (BN / 2);                                                              \
        gemm_tile(x, K, M, K, GatedB<W>{wg, wu, K, N, n0}, GatedEp{out, sg, su, N, n0, act, out_dt});      \
    }
LINEAR_GATED(linear_gated_f32, WF32)
LINEAR_GATED(linear_gated_f16, WF16)
LINEAR_GATED(linear_gated_bf16, WBF16)
LINEAR_GATED(linear_gated_i8, WI8)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    batched_matmul_f32(const float* a, const float* b, float* out, int M, int N, int K, i64 sb, i64 sk, i64 sn) {
    const i64 batch = blockIdx.z;
    const int n0 = blockIdx.x * BN;
    gemm_tile(a + batch * (i64)M * K, K, M, K, StridedB{b + batch * sb, sk, sn, N, n0},
              LinearEp{out + batch * (i64)M * N, nullptr, nullptr, N, n0, ACT_IDENTITY, 0, OUT_F32});
}

// ---- GEMV: the shared warp body ------------------------------------------------

// gemv_warp: warp `warp` of the block owns output column n; it streams row n of
// each of the R weight matrices w[r] ([N, K]) once and serves all M <= 8 rows of
// x. ep(m, n, lane, v) gets v[r] = the warp's sum sum_k x[m, k] * w[r][n, k]
// (every lane has it) and stores on lane 0.
// Fast path (K a multiple of W::VEC, x and every w[r] 16-byte aligned: real
// checkpoints' widths): each lane loads 16 bytes of a weight row at a time
// (VEC elements, k = lane * VEC + 32 * VEC * i) and issues GEMV_UNROLL of those
// loads before it uses one, so that a warp has up to 2 KiB per matrix in flight
// (one element per lane per load left the decode step far from the bandwidth
// floor); x is read as float4. Otherwise lanes stride over k one element at a
// time. Either way every sum is the lane partials (k ascending within a lane),
// then warp_sum: R = 1 and R = 2 add in the same order, so gemv_gated_<w> is bit
// for bit gemv_<w> twice.
#define GEMV_UNROLL 4

template <class W, int R, class EP>
__device__ __forceinline__ void gemv_warp(const float* x, const typename W::T* const (&w)[R], int M, int N, int K,
                                          const EP& ep) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = blockIdx.x * (blockDim.x >> 5) + warp;
    if (n >= N) return;  // whole warp leaves; there is no block barrier below
    const typename W::T* wr[R];
    bool vec = K % W::VEC == 0 && aligned16(x);
#pragma unroll
    for (int r = 0; r < R; ++r) {
        wr[r] = w[r] + (i64)n * K;
        vec = vec && aligned16(wr[r]);
    }
    float acc[R][GEMV_MAX_M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m) acc[r][m] = 0.0f;
    if (vec) {
        constexpr int VEC = W::VEC, STEP = 32 * W::VEC;
        for (int k0 = lane * VEC; k0 < K; k0 += STEP * GEMV_UNROLL) {
            uint4 raw[GEMV_UNROLL][R];
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; ++u)
#pragma unroll
                for (int r = 0; r < R; ++r)
                    if (k0 + u * STEP < K) raw[u][r] = *reinterpret_cast<const uint4*>(wr[r] + k0 + u * STEP);
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; ++u) {
                if (k0 + u * STEP >= K) break;
                float wv[R][VEC];
#pragma unroll
                for (int r = 0; r < R; ++r) W::unpack(raw[u][r], wv[r]);
#pragma unroll
                for (int m = 0; m < GEMV_MAX_M; ++m)
                    if (m < M) {
                        const float* xm = x + (i64)m * K + k0 + u * STEP;
#pragma unroll
                        for (int e4 = 0; e4 < VEC / 4; ++e4) {
                            const float4 xv = *reinterpret_cast<const float4*>(xm + 4 * e4);
                            const float xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
                            for (int j = 0; j < 4; ++j)
#pragma unroll
                                for (int r = 0; r < R; ++r) acc[r][m] = fmaf(xs[j], wv[r][4 * e4 + j], acc[r][m]);
                        }
                    }
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            float wv[R];
#pragma unroll
            for (int r = 0; r < R; ++r) wv[r] = W::load(wr[r], k);
#pragma unroll
            for (int m = 0; m < GEMV_MAX_M; ++m)
                if (m < M) {
                    const float xv = x[(i64)m * K + k];
#pragma unroll
                    for (int r = 0; r < R; ++r) acc[r][m] = fmaf(xv, wv[r], acc[r][m]);
                }
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m >= M) break;  // M is uniform: the whole warp takes the same path
        float v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = warp_sum(acc[r][m]);
        ep(m, n, lane, v);
    }
}

// Epilogue of gemv_<w>: out[m, n] (=/+=) act(v * s[n] + bias[n]).
struct GemvEp {
    void* out;
    const float *scales, *bias;
    int N, act, accumulate, out_dt;
    __device__ __forceinline__ void operator()(int m, int n, int lane, const float (&v)[1]) const {
        float y = v[0];
        if (scales) y *= scales[n];
        if (bias) y += bias[n];
        if (lane == 0) store_linear(out, (i64)m * N + n, y, act, accumulate, out_dt);
    }
};

// Epilogue of gemv_gated_<w>: v = (gate sum, up sum); out[m, n] = act(g * sg[n]) * (u * su[n]).
struct GemvGatedEp {
    void* out;
    const float *sg, *su;
    int N, act, out_dt;
    __device__ __forceinline__ void operator()(int m, int n, int lane, const float (&v)[2]) const {
        float g = v[0], u = v[1];
        if (sg) g *= sg[n];
        if (su) u *= su[n];
        if (lane == 0) store_out(out, (i64)m * N + n, apply_act(act, g) * u, out_dt);
    }
};

#define GEMV(NAME, W)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                    \
        NAME(const float* x, const W::T* w, const float* scales, const float* bias, void* out, int M,    \
             int N, int K, int act, int accumulate, int out_dt) {                                        \
        const W::T* const ws[1] = {w};                                                                   \
        gemv_warp<W, 1>(x, ws, M, N, K, GemvEp{out, scales, bias, N, act, accumulate, out_dt});          \
    }
GEMV(gemv_f32, WF32)
GEMV(gemv_f16, WF16)
GEMV(gemv_bf16, WBF16)
GEMV(gemv_i8, WI8)

#define GEMV_GATED(NAME, W)                                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                                      \
        NAME(const float* __restrict__ x, const W::T* __restrict__ wg, const float* __restrict__ sg,     \
             const W::T* __restrict__ wu, const float* __restrict__ su, void* __restrict__ out, int M, int N, \
             int K, int act, int out_dt) {                                                                 \
        const W::T* const ws[2] = {wg, wu};                                                                \
        gemv_warp<W, 2>(x, ws, M, N, K, GemvGatedEp{out, sg, su, N, act, out_dt});                         \
    }
GEMV_GATED(gemv_gated_f32, WF32)
GEMV_GATED(gemv_gated_f16, WF16)
GEMV_GATED(gemv_gated_bf16, WBF16)
GEMV_GATED(gemv_gated_i8, WI8)
