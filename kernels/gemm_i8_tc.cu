// gemm_i8_tc.cu: `linear` with int8 weights as a W8A8 GEMM on int8 tensor cores (sm_80+).
//
// What it computes (references: crates/cpu/src/ops/gemm.rs for the op's meaning,
// crates/cuda/tests/gemm_i8_tc.rs for the exact quantised one)
//   linear_i8_tc   out[m, n] = (sum_k qx[m, k] * w[n, k]) * sx[m] * sw[n] + bias[n]
//                  qx i8 [M, K] row-major and sx f32 [M]: the activations quantised
//                  per row (token) by `quantize_i8_<x>` of kernels/elementwise.cu
//                  (x f32, f16 or bf16, widened exactly: a half x gives the qx and
//                  sx of its f32 widening), which the launcher runs first into a
//                  scratch buffer:
//                  sx[m] = max_k |x[m, k]| / 127 (f32), qx = rint(x / sx) (round half
//                  to even) clamped to [-127, 127], qx = 0 for a zero/NaN sx;
//                  w i8 [N, K] row-major (HF's [out, in]) with f32 per-row scales
//                  sw [N]: the backend's int8 weight layout (`WeightPtr::I8`);
//                  bias f32 [N] or null; out [M, N] row-major, f32, f16 or bf16
//                  (`out_dt`: common.cuh's OUT_*; a half out receives the f32
//                  result rounded to nearest even, store_out).
//                  Products int8 x int8, sums in s32 (exact up to |sum| < 2^31, i.e.
//                  K < 133k at full scale); the s32 sum is converted to f32 (exact
//                  below 2^24: K <= 1040 at full scale) and scaled in the fused
//                  epilogue: act(f32(acc) * sx[m] * sw[n] + bias[n]) (`act`: apply_act's
//                  code in common.cuh, ACT_IDENTITY for none); with `accumulate`
//                  (Backend::linear_add) added to what out holds (store_linear).
//                  So it differs from the weight-only `linear_i8` of gemm.cu by the
//                  activation quantisation (rel L2 ~5e-3 on unit-normal data), and
//                  from the same math done exactly (f64 on the same qx) only by the
//                  f32 rounding of the epilogue.
//                  A row of zeros gives sx = 0, qx = 0: bias only (no NaN). NaN/inf in
//                  x are not propagated (the quantise kernel's fmaxf drops NaN from
//                  the absmax and clamps a NaN quotient to -127).
//                  Any M, N, K: out-of-range rows, columns and k are zero-filled in
//                  shared memory.
//   linear_gated_i8_tc  out[m, n] = act(g[m, n]) * u[m, n] (Backend::linear_gated,
//                  a gated FFN's up projections): g = f32(sum_k qx[m, k] * wg[n, k]) *
//                  sx[m] * sg[n], u likewise with wu, su (no bias); wg, wu int8
//                  [N, K] with their row scales. One block computes both for a 64 x 64
//                  output tile (its 128 weight rows: per warp column 16 gate rows
//                  then the same 16 up rows), so each sum and scaling is
//                  linear_i8_tc's and the epilogue gated_activation's: bit for bit
//                  two linear_i8_tc on one quantised x then gated_activation
//                  (out in `out_dt` as above).
//
// Instructions (inline PTX, no CUDA headers: see kernels/README.md):
//   mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32  warp-wide 16x8x32 int8 product,
//   ldmatrix.sync.aligned.m8n8.x4.shared.b16         fragments from shared memory: an
//                  8x8 b16 matrix is 8 rows of 16 bytes, i.e. 8 x 16 int8, and lane l
//                  gets bytes 4 (l % 4) .. +3 of row l / 4: exactly the m16n8k32 s8
//                  A/B fragment layout (4 consecutive k per register),
//   cp.async.cg.shared.global (16 B) + commit_group / wait_group  both operand tiles
//                  (the activations are int8 in global memory already).
// The emulator (crates/cuda/emu/cuda_emu.h) implements the same operations with
// the PTX ISA's fragment layouts, so the index arithmetic below is tested.
//
// Tiling: block tile BM x BN = 64 x 128 outputs, K step BK = 64 (bytes = int8),
// 256 threads = 8 warps as 2 (m) x 4 (n), each warp a 32 x 32 tile = 2 x 4 mma
// tiles of 16 x 8 (32 s32 accumulators per thread). Per BK step a warp issues
// 2 x (2 + 2) ldmatrix.x4 and 2 x 8 mma.
// Pipeline: STAGES = 3 shared-memory stages, filled by cp.async; tile kt + 2 is
// issued right after the barrier of step kt, so two tiles are in flight during
// the math. One __syncthreads per K step: after it, the stage consumed in the
// previous step is free.
// Shared layout: rows of BK = 64 bytes padded to LDS = 80 bytes: 16 B aligned
// for cp.async/ldmatrix, and the 8 row addresses of one ldmatrix phase fall into
// 8 different 16 B bank groups (no conflicts).
// Launch shape: grid (ceil(N / 128), ceil(M / 64)), block 256, static shared
// memory 3 * (64 + 128) * 80 B = 45 KiB (under the 48 KiB static limit);
// linear_gated_i8_tc: grid (ceil(N / 64), ceil(M / 64)), the same block and memory.
// Fast path: 16 B copies need K % 16 == 0 and 16 B aligned qx / w; otherwise,
// and in edge chunks, bytes are loaded one by one into a uint4 (same results).
//
// Napkin math (H100 SXM: ~1980 dense int8 TOP/s, 3.35 TB/s): a block does
// 2 * 64 * 128 * 64 = 1.05 M int ops per K step and reads (64 + 128) * 64 = 12 KiB,
// 85 op/B from L2/HBM; t5-large FFN (M = 1024, K = 1024, N = 4096) is 8.6 G op and
// 5.2 MB of int8 operands (+ 4 MB x f32 read and 1 MB qx written by the quantise
// pass, + 16 MB f32 out): ~4.4 us at peak math, ~8 us of HBM, so the f32 output
// and the separate quantise pass dominate. Never timed: no GPU has run it.
#include "common.cuh"

#define I8TC_BM 64
#define I8TC_BN 128
#define I8TC_BK 64
#define I8TC_STAGES 3
#define I8TC_THREADS 256
#define I8TC_LDS (I8TC_BK + 16)  // shared row stride in bytes (80 B)

// cp.async and mma.sync m16n8k32 s8 need sm_80. Below it the kernel compiles to
// a trap; the launcher only picks it on compute capability >= 8.0.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define I8TC_ARCH_OK 0
#else
#define I8TC_ARCH_OK 1
#endif
#if I8TC_ARCH_OK

// ---- mma wrapper (shared_addr, ldmatrix_x4, cp_async_* are in common.cuh; the
// emulator defines them all in cuda_emu.h) ----
#ifndef ENCDEC_CUDA_EMU
// d += A (16x32 s8, row) . B (32x8 s8, col), s32 accumulators (wrapping, no .satfinite).
__device__ __forceinline__ void mma_m16n8k32_s8(int d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// 16 bytes of row `r` (of `rows`) from byte `k` (of `K`) of a [rows, K] int8
// matrix into shared memory: cp.async when the whole chunk is in range and
// aligned (`vec`), else byte by byte with zeros outside.
__device__ __forceinline__ void i8tc_chunk(i8* dst, const i8* base, int r, int rows, int k, int K, bool vec) {
    const i8* src = base + (i64)r * K + k;
    if (vec && r < rows && k < K) {
        cp_async_16(dst, src);
    } else {
        u32 v[4] = {0u, 0u, 0u, 0u};
        if (r < rows) {
#pragma unroll
            for (int e = 0; e < 16; ++e)
                if (k + e < K) v[e >> 2] |= (u32)(u8)src[e] << (8 * (e & 3));
        }
        uint4 u;
        u.x = v[0];
        u.y = v[1];
        u.z = v[2];
        u.w = v[3];
        *reinterpret_cast<uint4*>(dst) = u;
    }
}

// GATED (linear_gated_i8_tc): w/sw are the gate weight, wu/su the up weight;
// the block's 128 B rows are, per warp column wn, 16 gate rows (tiles j = 0, 1)
// then the same 16 up rows (j = 2, 3): a thread holds gate and up of one output
// in acc[i][j] and acc[i][j + 2]. Otherwise wu, su are unused.
template <bool GATED>
__device__ __forceinline__ void linear_i8_tc_body(const i8* __restrict__ qx, const float* __restrict__ sx,
                                                  const i8* __restrict__ w, const float* __restrict__ sw,
                                                  const i8* __restrict__ wu, const float* __restrict__ su,
                                                  const float* __restrict__ bias, void* __restrict__ out, int M,
                                                  int N, int K, int act, int accumulate, int out_dt) {
    __shared__ __align__(16) i8 As[I8TC_STAGES][I8TC_BM * I8TC_LDS];
    __shared__ __align__(16) i8 Bs[I8TC_STAGES][I8TC_BN * I8TC_LDS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;  // warp tile origin: (32 wm, 32 wn)
    const int m0 = blockIdx.y * I8TC_BM, n0 = blockIdx.x * (GATED ? I8TC_BN / 2 : I8TC_BN);
    const int KT = (K + I8TC_BK - 1) / I8TC_BK;
    // Uniform over the block: may whole 16 B chunks be copied?
    const bool a_vec = (K & 15) == 0 && ((u64)qx & 15) == 0;
    const bool b_vec = (K & 15) == 0 && ((u64)w & 15) == 0 && (!GATED || ((u64)wu & 15) == 0);

    // Activation chunks: 64 rows x 4 chunks of 16 B = 256, one per thread;
    // weight chunks: 128 rows x 4 = 512, two per thread.
    auto load = [&](int kt, int stage) {
        {
            const int row = tid >> 2, kc = (tid & 3) * 16;
            i8tc_chunk(&As[stage][row * I8TC_LDS + kc], qx, m0 + row, M, kt * I8TC_BK + kc, K, a_vec);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = tid + I8TC_THREADS * i, row = c >> 2, kc = (c & 3) * 16;
            // Gated: row = 32 wn + 8 j + r (r < 8) holds output column
            // 16 wn + (row & 15), of wu when j >= 2.
            const i8* base = GATED && (row & 16) ? wu : w;
            const int n = n0 + (GATED ? ((row >> 5) << 4) + (row & 15) : row);
            i8tc_chunk(&Bs[stage][row * I8TC_LDS + kc], base, n, N, kt * I8TC_BK + kc, K, b_vec);
        }
    };

    int acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;

    // Prologue: tiles 0..STAGES-2, one commit group each (empty groups keep the
    // count uniform when K has fewer tiles).
#pragma unroll
    for (int s = 0; s < I8TC_STAGES - 1; ++s) {
        if (s < KT) load(s, s);
        cp_async_commit();
    }

    for (int kt = 0; kt < KT; ++kt) {
        // Tile kt's group is complete (STAGES - 2 newer ones may be in flight);
        // the barrier publishes it (and the byte-wise stores) to every warp, and
        // ends all reads of the stage consumed in step kt - 1, refilled below.
        cp_async_wait<I8TC_STAGES - 2>();
        __syncthreads();
        const int nk = kt + I8TC_STAGES - 1;
        if (nk < KT) load(nk, nk % I8TC_STAGES);
        cp_async_commit();

        const i8* as = As[kt % I8TC_STAGES];
        const i8* bs = Bs[kt % I8TC_STAGES];
#pragma unroll
        for (int kk = 0; kk < I8TC_BK; kk += 32) {
            u32 af[2][4], bf[4][2];
            // A 16x32: matrices (rows 0-7 | 8-15) x (k 0-15 | 16-31) -> a0, a1, a2, a3.
#pragma unroll
            for (int i = 0; i < 2; ++i)
                ldmatrix_x4(af[i], as + (wm * 32 + i * 16 + (lane & 15)) * I8TC_LDS + kk + (lane >> 4) * 16);
            // B: smem holds w rows ([n][k]), i.e. B col-major: the non-transposed
            // ldmatrix of rows n gives b0 (k 0-15) and b1 (k 16-31) directly.
            // Matrices: (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31).
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                u32 r[4];
                ldmatrix_x4(r, bs + (wn * 32 + j * 16 + (lane >> 4) * 8 + (lane & 7)) * I8TC_LDS + kk +
                                   ((lane >> 3) & 1) * 16);
                bf[2 * j][0] = r[0];
                bf[2 * j][1] = r[1];
                bf[2 * j + 1][0] = r[2];
                bf[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_m16n8k32_s8(acc[i][j], af[i], bf[j]);
        }
    }

    // Epilogue: lane (g, t) = (lane / 4, lane % 4) holds rows g, g + 8 and
    // columns 2t, 2t + 1 of each 16 x 8 tile; both scales and the bias fused.
    const int g = lane >> 2, t = lane & 3;
    if (GATED) {
        // Each sum scaled as linear_i8_tc scales it (no bias), then
        // elementwise.cu's gated_activation.
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int m = m0 + wm * 32 + i * 16 + g + 8 * h;
                if (m >= M) continue;
                const float sm = sx[m];
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    const int n = n0 + wn * 16 + j * 8 + 2 * t;
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (n + e >= N) continue;
                        const float gv = (float)acc[i][j][2 * h + e] * sm * sw[n + e];
                        const float uv = (float)acc[i][j + 2][2 * h + e] * sm * su[n + e];
                        store_out(out, (i64)m * N + n + e, apply_act(act, gv) * uv, out_dt);
                    }
                }
            }
    } else {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int m = m0 + wm * 32 + i * 16 + g + 8 * h;
                if (m >= M) continue;
                const float sm = sx[m];
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int n = n0 + wn * 32 + j * 8 + 2 * t;
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (n + e >= N) continue;
                        float v = (float)acc[i][j][2 * h + e] * sm * sw[n + e];
                        if (bias) v += bias[n + e];
                        store_linear(out, (i64)m * N + n + e, v, act, accumulate, out_dt);
                    }
                }
            }
    }
}

#define LINEAR_I8_TC_BODY \
    linear_i8_tc_body<false>(qx, sx, w, sw, nullptr, nullptr, bias, out, M, N, K, act, accumulate, out_dt)
#define LINEAR_GATED_I8_TC_BODY \
    linear_i8_tc_body<true>(qx, sx, wg, sg, wu, su, nullptr, out, M, N, K, act, 0, out_dt)
#else
#define LINEAR_I8_TC_BODY __trap()
#define LINEAR_GATED_I8_TC_BODY __trap()
#endif  // I8TC_ARCH_OK

extern "C" __global__ void __launch_bounds__(I8TC_THREADS, 2)
    linear_i8_tc(const i8* qx, const float* sx, const i8* w, const float* sw, const float* bias, void* out, int M,
                 int N, int K, int act, int accumulate, int out_dt) {
    LINEAR_I8_TC_BODY;
}

extern "C" __global__ void __launch_bounds__(I8TC_THREADS, 2)
    linear_gated_i8_tc(const i8* qx, const float* sx, const i8* wg, const float* sg, const i8* wu, const float* su,
                       void* out, int M, int N, int K, int act, int out_dt) {
    LINEAR_GATED_I8_TC_BODY;
}
