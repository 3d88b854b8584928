// gemm_tc.cu: `linear` with f16/bf16 weights on tensor cores (sm_80+).
//
// What it computes (reference: crates/cpu/src/ops/gemm.rs)
//   linear_tc_<w>  out[m, n] = act(sum_k h(x[m, k]) * w[n, k] + bias[n])
//                  x f32 [M, K] row-major; w [N, K] row-major (HF's [out, in]) as
//                  f16 or bf16 bits; bias f32 [N] or null; out [M, N] row-major,
//                  f32, f16 or bf16 (`out_dt`, common.cuh's OUT_*: a half out
//                  receives the f32 value of the epilogue below rounded to nearest
//                  even, store_out: the bits of an f32 out then elementwise.cu's
//                  cast; every kernel and reduce here takes `out_dt`).
//                  h() rounds the activation to the weight's type (f16 or bf16,
//                  round to nearest even) when it is staged into shared memory;
//                  products and sums are f32 (tensor-core accumulation). So the
//                  result differs from the FP32-FMA `linear_<w>` of gemm.cu by the
//                  rounding of x: rel L2 2e-4 (f16) / 1.7e-3 (bf16) on random data (emulator).
//                  |x| > 65504 becomes inf in the f16 kernel (as in an all-f16 run).
//                  Any M, N, K (also odd K): out-of-range rows, columns and k are
//                  zero-filled in shared memory; the bias add and the activation
//                  (`act`: apply_act's code in common.cuh, ACT_IDENTITY for none;
//                  an FFN's up projection) are the fused epilogue: the same bits as
//                  linear then elementwise.cu's activation, one write of out less.
//                  With `accumulate` (Backend::linear_add, the residual epilogue)
//                  out[m, n] += that value instead: out holds the residual stream on
//                  entry (common.cuh's store_linear), the bits of linear + add_assign;
//                  out is then f32.
//   linear_tc_<w>_hx  the same with x [M, K] in the weight's half type (f16 x for
//                  linear_tc_f16_hx, bf16 x for linear_tc_bf16_hx; a model's half
//                  activations, Backend::activation_dtype). h() of x's exact f32
//                  widening is x itself, so the result is bit for bit linear_tc_<w>
//                  on the widened x; the kernel reads half the bytes and copies the
//                  tiles to shared memory as they are (cp.async, no conversion).
//                  (x of the other half type: the launcher widens it first.)
//
//   linear_gated_tc_<w>  out[m, n] = act(g[m, n]) * u[m, n] (Backend::linear_gated,
//                  a gated FFN's up projections): g and u are linear_tc_<w>'s sums
//                  (no bias) of the gate weight wg and the up weight wu, both [N, K]
//                  f16 or bf16. One block computes both for a 64 x 64 output tile:
//                  its 128 weight rows are, per warp column, 16 gate rows then the
//                  same 16 up rows, so every sum is accumulated exactly as in
//                  linear_tc_<w> and the epilogue is gated_activation's: bit for
//                  bit two linear_tc_<w> then elementwise.cu's gated_activation.
//   linear_gated_tc_<w>_hx  the same with x in the weight's half type, as
//                  linear_tc_<w>_hx (bit for bit linear_gated_tc_<w> on widened x).
//
//   Split-K (both kernels' last two arguments `int k_chunk, float* partial`):
//                  with partial == nullptr (k_chunk ignored) one block sums the
//                  whole K and applies the epilogue above. With partial set, block
//                  z = blockIdx.z sums k in [z k_chunk, min(K, (z + 1) k_chunk))
//                  (k_chunk a multiple of TC_BK = 32, so a chunk starts 16 B aligned
//                  whenever the fast paths below apply, and only the last chunk
//                  ends inside a K step) and writes its raw f32 sums, no bias,
//                  activation or accumulate: linear_tc_<w> to
//                  partial[(z M + m) N + n], linear_gated_tc_<w> the gate sum to
//                  partial[(z M + m) 2N + n] and the up sum to the same + N
//                  (out and out_dt unused).
//   splitk_reduce_f32(partial, bias, out, M, N, splits, act, accumulate, out_dt)
//                  out[m, n] = store_linear(sum_{z ascending} partial[z][m][n]
//                  + bias[n]) (bias may be null): linear_tc's epilogue on the
//                  summed chunks.
//   splitk_reduce_gated_f32(partial, out, M, N, splits, act, out_dt)
//                  out[m, n] = apply_act(act, sum_z gate[z][m][n]) * sum_z up[z][m][n],
//                  gated_activation's epilogue. Both: grid-stride over M N
//                  outputs, block 256, grid min(ceil(M N / 256), 65535).
//                  The launcher (crates/cuda/src/ops/gemm.rs `split_k`) splits
//                  when the output tiles are fewer than the SMs: splits =
//                  min(ceil(SMs / blocks), K / 256, 16) with blocks counted in
//                  linear_tc's 64 x 128 tiles for both kernels (so linear_gated
//                  splits as the two linears do and stays bit for bit their
//                  result), k_chunk = ceil(K / splits) rounded up to 32. The
//                  decision depends on M, N, K and the device only: linear_act,
//                  linear_add and linear then activation / add_assign run the
//                  same split and the same reduce, bit for bit as unsplit. Split
//                  results differ from unsplit ones by the f32 summation order.
//
// Instructions (inline PTX, no CUDA headers: NVRTC as the backend runs it has no
// include path, so <mma.h> and <cuda_pipeline.h> cannot be included; see
// kernels/README.md):
//   mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}  warp-wide 16x8x16 product,
//   ldmatrix.sync.aligned.m8n8.x4.shared.b16          fragments from shared memory,
//   cp.async.cg.shared.global (16 B) + commit_group / wait_group  weight tiles
//                                                     (and half activation tiles).
// The emulator (crates/cuda/emu/cuda_emu.h) implements the same five operations
// with the PTX ISA's fragment layouts, so the index arithmetic below is tested.
//
// Tiling: block tile BM x BN = 64 x 128 outputs, K step BK = 32, 256 threads =
// 8 warps as 2 (m) x 4 (n), each warp a 32 x 32 tile = 2 x 4 mma tiles of
// 16 x 8 (32 f32 accumulators per thread). Per BK step a warp issues 2 x 2
// ldmatrix.x4 and 2 x (2 x 4) mma.
// Pipeline: STAGES = 3 shared-memory stages. Weight tiles go global -> shared
// with cp.async (no registers); f32 activation tiles are loaded as float4 into
// registers before the mma work of the current stage and rounded + stored to
// shared memory after it, so both loads overlap the math; half activation
// tiles (_hx) go with cp.async in the weight tiles' commit group. One __syncthreads per
// K step: after it, the stage consumed in the previous step is free.
// Shared layout: rows of BK halves padded to LDS = 40 halves (80 B): 16 B
// aligned for cp.async/ldmatrix, and the 8 row addresses of one ldmatrix phase
// fall into 8 different 16 B bank groups (no conflicts).
// Launch shape: grid (ceil(N / 128), ceil(M / 64), splits), block 256, static
// shared memory 3 * (64 + 128) * 40 * 2 B = 45 KiB (under the 48 KiB static
// limit); linear_gated_tc_*: grid (ceil(N / 64), ceil(M / 64), splits), the same
// block and memory. splits = 1 (partial null) unless split-K (above).
// Fast paths: 16 B vector copies need K % 8 == 0 (weights, half activations) /
// K % 4 == 0 (f32 activations) and 16 B aligned base pointers; otherwise, and in
// edge chunks, elements are loaded one by one (same results).
//
// Napkin math (H100 SXM: ~990 dense f16/bf16 TFLOP/s, 3.35 TB/s): a block does
// 2 * 64 * 128 * 32 = 524k flop per K step and reads 64*32*4 + 128*32*2 = 16 KiB,
// 32 flop/B from L2/HBM (the _hx kernels: 64*32*2 + 128*32*2 = 12 KiB, 43
// flop/B); t5-large FFN (M = 1024, K = 1024, N = 4096) is 8.6 GFLOP and 17 MB:
// ~9 us at peak math, ~5 us of HBM (an f16 x and out halve their bytes).
// Never timed: no GPU has run it.
// Decode (M = 16 rows, batch 16 greedy or 4 beams x 4 sources), a 1024 x 1024
// f16 projection: 2 MiB of weights, 4 MFLOP, so the weight stream is the whole
// cost (0.6 us at 3.35 TB/s). Unsplit it is grid (8, 1) = 8 blocks: 8 of 132
// SMs stream 256 KiB each, a few percent of HBM bandwidth. Split: min(17, 4, 16)
// = 4 splits of 256 k, 32 blocks, each 64 KiB of weights; the partials (4 x 16
// x 1024 x 4 B = 256 KiB, written then read back by the reduce, in L2) add 12%
// of traffic and one launch. K = 4096 (an FFN down projection, N = 1024): 16
// splits, 128 blocks. The FFN up projection N = 4096, K = 1024: 32 blocks, 4
// splits (128). Never timed either.
#include "common.cuh"

#define TC_BM 64
#define TC_BN 128
#define TC_BK 32
#define TC_STAGES 3
#define TC_THREADS 256
#define TC_LDS (TC_BK + 8)  // shared row stride in halves (80 B)

// cp.async and the bf16 mma need sm_80. Below it (a preload on a T4) the kernels
// compile to a trap; the launcher only picks them on compute capability >= 8.0.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define TC_ARCH_OK 0
#else
#define TC_ARCH_OK 1
#endif
#if TC_ARCH_OK

// shared_addr, ldmatrix_x4, cp_async_*, the mma wrappers and pack2 are in
// common.cuh (the emulator defines the PTX ones in cuda_emu.h).

// 8 halves of a tile row into shared memory: the first `valid` of src, zeros
// past them (rows past M/N, k past the chunk end); one 16 B cp.async when
// `vec` (16 B aligned rows, K % 8 == 0) and all 8 are valid.
__device__ __forceinline__ void tc_copy8(u16* dst, const u16* src, bool vec, int valid) {
    if (vec && valid >= 8) {
        cp_async_16(dst, src);
        return;
    }
    u32 h[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) h[e] = e < valid ? src[e] : 0u;
    uint4 v;
    v.x = h[0] | (h[1] << 16);
    v.y = h[2] | (h[3] << 16);
    v.z = h[4] | (h[5] << 16);
    v.w = h[6] | (h[7] << 16);
    *reinterpret_cast<uint4*>(dst) = v;
}

// GATED (linear_gated_tc_*): w is the gate and wu the up weight; the block's
// 128 B rows are, per warp column wn, 16 gate rows (tiles j = 0, 1) then the
// same 16 up rows (j = 2, 3), so a thread holds gate and up of one output in
// acc[i][j] and acc[i][j + 2]. Otherwise wu is unused.
// XT: float (x f32, rounded to the weight type when staged) or u16 (x already
// in the weight's half type: copied to shared memory as is, which is what the
// rounding of its exact f32 widening gives, so the same bits).
template <bool BF16, bool GATED, class XT>
__device__ __forceinline__ void linear_tc(const XT* __restrict__ x, const u16* __restrict__ w,
                                          const u16* __restrict__ wu, const float* __restrict__ bias,
                                          void* __restrict__ out, int M, int N, int K, int act, int accumulate,
                                          int k_chunk, float* __restrict__ partial, int out_dt) {
    constexpr bool XH = sizeof(XT) == 2;
    __shared__ __align__(16) u16 As[TC_STAGES][TC_BM * TC_LDS];
    __shared__ __align__(16) u16 Bs[TC_STAGES][TC_BN * TC_LDS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;  // warp tile origin: (32 wm, 32 wn)
    const int m0 = blockIdx.y * TC_BM, n0 = blockIdx.x * (GATED ? TC_BN / 2 : TC_BN);
    // Split-K (partial set): this block sums k in [k0, k1), chunk blockIdx.z;
    // k_chunk is a multiple of TC_BK, so k0 and k1 (unless k1 == K) are too.
    const int k0 = partial ? (int)blockIdx.z * k_chunk : 0;
    const int k1 = partial ? min(K, k0 + k_chunk) : K;
    const int KT = (k1 - k0 + TC_BK - 1) / TC_BK;
    // Uniform over the block: may whole 16 B chunks be copied? With K % 4 == 0
    // (K % 8 == 0) k0 and k1 are multiples of 4 (8), so a chunk that starts
    // below k1 ends at or below it and every chunk start stays 16 B aligned.
    const bool a_vec = (K & (XH ? 7 : 3)) == 0 && ((u64)x & 15) == 0;
    const bool b_vec = (K & 7) == 0 && ((u64)w & 15) == 0 && (!GATED || ((u64)wu & 15) == 0);

    // f32 activation chunks: 64 rows x 8 float4 = 512 chunks, 2 per thread,
    // into registers (load_a), rounded into `stage` after the math (store_a).
    // Half activations (XH): 64 rows x 4 chunks of 8 halves = 256 chunks, one
    // per thread, straight into `stage` as the weights (load_a_half).
    float areg[2][4];
    auto load_a_half = [&](int kt, int stage) {
        const int row = tid >> 2, kc = (tid & 3) * 8;
        const int m = m0 + row, k = k0 + kt * TC_BK + kc;
        u16* dst = &As[stage][row * TC_LDS + kc];
        const u16* src = reinterpret_cast<const u16*>(x) + (i64)m * K + k;
        tc_copy8(dst, src, a_vec, m < M ? k1 - k : 0);
    };
    auto load_a = [&](int kt) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = tid + TC_THREADS * i, row = c >> 3, kc = (c & 7) * 4;
            const int m = m0 + row, k = k0 + kt * TC_BK + kc;
            const float* src = reinterpret_cast<const float*>(x) + (i64)m * K + k;
            if (a_vec && m < M && k < k1) {
                const float4 v = *reinterpret_cast<const float4*>(src);
                areg[i][0] = v.x;
                areg[i][1] = v.y;
                areg[i][2] = v.z;
                areg[i][3] = v.w;
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e) areg[i][e] = (m < M && k + e < k1) ? src[e] : 0.0f;
            }
        }
    };
    auto store_a = [&](int stage) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = tid + TC_THREADS * i, row = c >> 3, kc = (c & 7) * 4;
            uint2 v;
            v.x = pack2<BF16>(areg[i][0], areg[i][1]);
            v.y = pack2<BF16>(areg[i][2], areg[i][3]);
            *reinterpret_cast<uint2*>(&As[stage][row * TC_LDS + kc]) = v;
        }
    };
    // Weight chunks: 128 rows x 4 chunks of 8 halves = 512 chunks, 2 per thread.
    auto load_b = [&](int kt, int stage) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = tid + TC_THREADS * i, row = c >> 2, kc = (c & 3) * 8;
            // Gated: row = 32 wn + 8 j + r (r < 8) holds output column
            // 16 wn + 8 (j & 1) + r = 16 wn + (row & 15), of wu when j >= 2.
            const int n = n0 + (GATED ? ((row >> 5) << 4) + (row & 15) : row);
            const int k = k0 + kt * TC_BK + kc;
            u16* dst = &Bs[stage][row * TC_LDS + kc];
            const u16* src = (GATED && (row & 16) ? wu : w) + (i64)n * K + k;
            tc_copy8(dst, src, b_vec, n < N ? k1 - k : 0);
        }
    };

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // Prologue: tiles 0..STAGES-2, one commit group each (empty groups keep the
    // count uniform when K has fewer tiles).
#pragma unroll
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < KT) {
            load_b(s, s);
            if (XH) {
                load_a_half(s, s);
            } else {
                load_a(s);
                store_a(s);
            }
        }
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        // Tile kt's group is complete (STAGES - 2 newer ones may be in flight);
        // the barrier publishes it and the activation stores to every warp, and
        // ends all reads of the stage consumed in step kt - 1, refilled below.
        cp_async_wait<TC_STAGES - 2>();
        __syncthreads();
        const int nk = kt + TC_STAGES - 1, ns = nk % TC_STAGES;
        if (nk < KT) {
            load_b(nk, ns);
            if (XH)
                load_a_half(nk, ns);
            else
                load_a(nk);  // into registers; stored after the math
        }
        cp_async_commit();

        const u16* as = As[kt % TC_STAGES];
        const u16* bs = Bs[kt % TC_STAGES];
#pragma unroll
        for (int kk = 0; kk < TC_BK; kk += 16) {
            u32 af[2][4], bf[4][2];
            // A 16x16: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) -> a0a1, a2a3, a4a5, a6a7.
#pragma unroll
            for (int i = 0; i < 2; ++i)
                ldmatrix_x4(af[i], as + (wm * 32 + i * 16 + (lane & 15)) * TC_LDS + kk + (lane >> 4) * 8);
            // B: smem holds w rows ([n][k]), i.e. B col-major: the non-transposed
            // ldmatrix of rows n gives b0b1 (k 0-7) and b2b3 (k 8-15) directly.
            // Matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                u32 r[4];
                ldmatrix_x4(r,
                            bs + (wn * 32 + j * 16 + (lane >> 4) * 8 + (lane & 7)) * TC_LDS + kk + ((lane >> 3) & 1) * 8);
                bf[2 * j][0] = r[0];
                bf[2 * j][1] = r[1];
                bf[2 * j + 1][0] = r[2];
                bf[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (BF16)
                        mma_m16n8k16_bf16(acc[i][j], af[i], bf[j]);
                    else
                        mma_m16n8k16_f16(acc[i][j], af[i], bf[j]);
                }
        }
        if (!XH && nk < KT) store_a(ns);
    }

    // Epilogue: lane (g, t) = (lane / 4, lane % 4) holds rows g, g + 8 and
    // columns 2t, 2t + 1 of each 16 x 8 tile; bias fused, out in `out_dt`.
    const int g = lane >> 2, t = lane & 3;
    if (partial) {
        // Split-K: the raw f32 sums of chunk z, no epilogue (the reduce applies
        // it). Plane z holds [M, N] (gated: [M, 2N], gate sums then up sums).
        const int ld = GATED ? 2 * N : N;
        float* p = partial + (i64)blockIdx.z * M * ld;
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < (GATED ? 2 : 4); ++j) {
                const int n = n0 + wn * (GATED ? 16 : 32) + j * 8 + 2 * t;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int m = m0 + wm * 32 + i * 16 + g + 8 * h;
                    if (m >= M) continue;
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (n + e >= N) continue;
                        p[(i64)m * ld + n + e] = acc[i][j][2 * h + e];
                        if (GATED) p[(i64)m * ld + N + n + e] = acc[i][j + 2][2 * h + e];
                    }
                }
            }
    } else if (GATED) {
        // As elementwise.cu's gated_activation on the two sums (no bias).
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const int n = n0 + wn * 16 + j * 8 + 2 * t;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int m = m0 + wm * 32 + i * 16 + g + 8 * h;
                    if (m >= M) continue;
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (n + e >= N) continue;
                        const float v = apply_act(act, acc[i][j][2 * h + e]) * acc[i][j + 2][2 * h + e];
                        store_out(out, (i64)m * N + n + e, v, out_dt);
                    }
                }
            }
    } else {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int n = n0 + wn * 32 + j * 8 + 2 * t;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int m = m0 + wm * 32 + i * 16 + g + 8 * h;
                    if (m >= M) continue;
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (n + e >= N) continue;
                        float v = acc[i][j][2 * h + e];
                        if (bias) v += bias[n + e];
                        store_linear(out, (i64)m * N + n + e, v, act, accumulate, out_dt);
                    }
                }
            }
    }
}

#define LINEAR_TC_BODY(BF16) \
    linear_tc<BF16, false>(x, w, nullptr, bias, out, M, N, K, act, accumulate, k_chunk, partial, out_dt)
#define LINEAR_GATED_TC_BODY(BF16) \
    linear_tc<BF16, true>(x, wg, wu, nullptr, out, M, N, K, act, 0, k_chunk, partial, out_dt)
#else
#define LINEAR_TC_BODY(BF16) __trap()
#define LINEAR_GATED_TC_BODY(BF16) __trap()
#endif  // TC_ARCH_OK

// XT: x's element type, float or u16 (the weight's half type: the _hx kernels).
#define LINEAR_TC(NAME, BF16, XT)                                                                              \
    extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)                                               \
        NAME(const XT* x, const u16* w, const float* bias, void* out, int M, int N, int K, int act,           \
             int accumulate, int k_chunk, float* partial, int out_dt) {                                       \
        LINEAR_TC_BODY(BF16);                                                                                 \
    }
LINEAR_TC(linear_tc_f16, false, float)
LINEAR_TC(linear_tc_bf16, true, float)
LINEAR_TC(linear_tc_f16_hx, false, u16)
LINEAR_TC(linear_tc_bf16_hx, true, u16)

#define LINEAR_GATED_TC(NAME, BF16, XT)                                                                        \
    extern "C" __global__ void __launch_bounds__(TC_THREADS, 2)                                               \
        NAME(const XT* x, const u16* wg, const u16* wu, void* out, int M, int N, int K, int act, int k_chunk,  \
             float* partial, int out_dt) {                                                                    \
        LINEAR_GATED_TC_BODY(BF16);                                                                           \
    }
LINEAR_GATED_TC(linear_gated_tc_f16, false, float)
LINEAR_GATED_TC(linear_gated_tc_bf16, true, float)
LINEAR_GATED_TC(linear_gated_tc_f16_hx, false, u16)
LINEAR_GATED_TC(linear_gated_tc_bf16_hx, true, u16)

// Split-K reduces (plain f32 code, every architecture): the sums over z in
// ascending order, then the fused epilogue of linear_tc_* / linear_gated_tc_*
// (store_linear / apply_act: the same bits as the unsplit kernel's epilogue on
// the same sums).
extern "C" __global__ void splitk_reduce_f32(const float* partial, const float* bias, void* out, int M, int N,
                                             int splits, int act, int accumulate, int out_dt) {
    const i64 plane = (i64)M * N;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < plane; i += (i64)gridDim.x * blockDim.x) {
        float v = partial[i];
        for (int z = 1; z < splits; ++z) v += partial[z * plane + i];
        if (bias) v += bias[i % N];
        store_linear(out, i, v, act, accumulate, out_dt);
    }
}

extern "C" __global__ void splitk_reduce_gated_f32(const float* partial, void* out, int M, int N, int splits,
                                                   int act, int out_dt) {
    const i64 plane = (i64)M * 2 * N;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)M * N; i += (i64)gridDim.x * blockDim.x) {
        const i64 gi = (i / N) * 2 * N + i % N;
        float gsum = partial[gi], usum = partial[gi + N];
        for (int z = 1; z < splits; ++z) {
            gsum += partial[z * plane + gi];
            usum += partial[z * plane + gi + N];
        }
        store_out(out, i, apply_act(act, gsum) * usum, out_dt);
    }
}
