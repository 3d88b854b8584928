// topk.cu: the k largest entries of each row, largest first, ties broken by the
// lower index; NaN ranks below every number (NaNs among themselves by index).
// Reference: crates/cpu/src/ops/topk.rs (`better`, `topk_reference`).
//
// Algorithm: selection in rounds over a chunk held in shared memory. With a total
// order on (value, index), round t picks the best entry that ranks after the
// entry picked in round t-1; k rounds give the exact sorted top-k. A row longer
// than one chunk runs in stages: stage 1 writes the top-k of every chunk as
// candidates (value, original index), the next stage selects from those
// candidates, until one chunk is left (each stage divides the length by
// TOPK_CHUNK / k >= 64).
//
// topk_stage_f32(vals, idx_in, row_len, in_stride, k, out_val, out_idx, out_stride)
//   vals     [rows, in_stride] f32, the first row_len entries of each row are used
//   idx_in   null (an entry's index is its position) or [rows, in_stride] u32
//            original indices; TOPK_NONE marks an empty candidate slot
//   out      [rows, out_stride]; chunk c writes k entries from column c * k;
//            a chunk of fewer than k real entries pads with TOPK_NONE
// Launch shape: grid (rows, ceil(row_len / TOPK_CHUNK)), 256 threads; static shared
// memory TOPK_CHUNK * 8 bytes (32 KiB) + reduction scratch. k <= 64 (the
// launcher sends larger k to the host).
#include "common.cuh"

#define TOPK_CHUNK 4096
#define TOPK_THREADS 256
#define TOPK_NONE 0xffffffffu

// Whether (va, ia) ranks before (vb, ib).
__device__ __forceinline__ bool better(float va, u32 ia, float vb, u32 ib) {
    const bool na = va != va, nb = vb != vb;
    if (na || nb) return (na && nb) ? ia < ib : nb;
    return va > vb || (va == vb && ia < ib);
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
    topk_stage_f32(const float* vals, const u32* idx_in, int row_len, i64 in_stride, int k, float* out_val,
                   u32* out_idx, i64 out_stride) {
    __shared__ float sv[TOPK_CHUNK];
    __shared__ u32 si[TOPK_CHUNK];
    __shared__ float wv[TOPK_THREADS / 32];
    __shared__ u32 wi[TOPK_THREADS / 32];
    __shared__ float prev_v;
    __shared__ u32 prev_i;

    const int row = blockIdx.x, chunk = blockIdx.y;
    const int start = chunk * TOPK_CHUNK;
    const int len = min(TOPK_CHUNK, row_len - start);
    const float* v = vals + (i64)row * in_stride + start;
    const u32* ix = idx_in ? idx_in + (i64)row * in_stride + start : nullptr;
    for (int t = threadIdx.x; t < TOPK_CHUNK; t += blockDim.x) {
        if (t < len) {
            sv[t] = v[t];
            si[t] = ix ? ix[t] : (u32)(start + t);
        } else {
            sv[t] = NEG_INF;
            si[t] = TOPK_NONE;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* ov = out_val + (i64)row * out_stride + (i64)chunk * k;
    u32* oi = out_idx + (i64)row * out_stride + (i64)chunk * k;
    __syncthreads();

    for (int round = 0; round < k; ++round) {
        // This thread's best eligible entry.
        float bv = NEG_INF;
        u32 bi = TOPK_NONE;
        for (int t = threadIdx.x; t < TOPK_CHUNK; t += blockDim.x) {
            const u32 i = si[t];
            if (i == TOPK_NONE) continue;
            const float x = sv[t];
            if (round > 0 && !better(prev_v, prev_i, x, i)) continue;  // already taken
            if (bi == TOPK_NONE || better(x, i, bv, bi)) {
                bv = x;
                bi = i;
            }
        }
        // Warp, then block arg-best (TOPK_NONE loses to anything real).
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov2 = __shfl_xor_sync(FULL_MASK, bv, o);
            const u32 oi2 = __shfl_xor_sync(FULL_MASK, bi, o);
            if (oi2 != TOPK_NONE && (bi == TOPK_NONE || better(ov2, oi2, bv, bi))) {
                bv = ov2;
                bi = oi2;
            }
        }
        if (lane == 0) {
            wv[warp] = bv;
            wi[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float best_v = wv[0];
            u32 best_i = wi[0];
            for (int w = 1; w < (int)(blockDim.x >> 5); ++w) {
                if (wi[w] != TOPK_NONE && (best_i == TOPK_NONE || better(wv[w], wi[w], best_v, best_i))) {
                    best_v = wv[w];
                    best_i = wi[w];
                }
            }
            ov[round] = best_v;
            oi[round] = best_i;
            prev_v = best_v;
            prev_i = best_i;
        }
        __syncthreads();
        if (prev_i == TOPK_NONE) {
            // Chunk exhausted: pad the remaining slots (thread 0 wrote this one).
            for (int t = round + 1 + threadIdx.x; t < k; t += blockDim.x) {
                ov[t] = NEG_INF;
                oi[t] = TOPK_NONE;
            }
            return;
        }
    }
}
