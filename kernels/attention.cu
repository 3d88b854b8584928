// attention.cu: multi-head attention with an online (flash-style) softmax, f32
// math, K/V read as f32, f16 or bf16 (half-precision KV caches).
// Used for the encoder, decoder prefill and any query tile (Tq > 1).
//
// What it computes (reference: crates/cpu/src/ops/attention.rs,
// encdec_core::AttentionParams), per batch row b, head h, query row i, with
// r = kv_index[b] (or b):
//   qs   = q[b, i, h] * scale                           (rounded to f32, as BART)
//   s[j] = qs . k[r, j, h] + (bias[h, i, j] + mask[r, j])   for j < limit(i)
//   out[b, i, h] = sum_j softmax(s)[j] v[r, j, h]
// bias[h, i, j] is pos_bias, or with rel_table T5's relative bias
// rel_table[bucket(j - (q_offset + i)), h], the bucket computed per (query, key)
// by attn_rel_bucket (common.cuh), the table read through the cache.
// limit(i) = kv_len, or with causal min(kv_len, q_offset + i + 1). Keys past the
// limit have weight 0, except in a fully masked row (every allowed score is
// f32::MIN), which is uniform over all kv_len keys, as HF's eager attention.
// Online softmax: running max m, running sum l and output o are rescaled by
// exp(m_old - m_new) per key tile; out = o / l at the end.
//
// With f16/bf16 K/V every element is widened exactly to f32 as it is staged, so
// the result is the f32 kernel's on the widened K/V (the CPU op's semantics).
// Layout: see AttnArgs in common.cuh. Heads are interleaved in the last dim, so
// head h of a row is the D elements at h * D.
// Launch shape: grid (ceil(Tq / W), H, B) with W = blockDim.x / 32 warps (the
// launcher uses 4: 128 threads); warp w owns query row blockIdx.x * W + w.
// The block walks the keys in tiles of 32: all threads stage K and V of the tile
// in shared memory as f32 (K rows padded to D + 1 floats against bank conflicts), then
// each warp scores the tile with one key per lane, updates its softmax state with
// warp shuffles, and accumulates P.V with D / 32 output dims per lane.
// Dynamic shared memory: (32 * (D + 1) + 32 * D + W * D) * 4 bytes (34 KiB at
// D = 128; D = 256 needs the opt-in above 48 KiB, which the launcher sets).
// Variants attention_{f32,kvf16,kvbf16}_d{32,64,128,256}: K/V dtype (q and out
// are f32 in all), D <= 32, 64, 128, 256 held in registers.
#include "common.cuh"

#define ATTN_TILE 32

// KV: the loader of K/V's dtype (WF32, WF16, WBF16 in common.cuh).
template <class KV, int DCH>
__device__ __forceinline__ void attention_tiled(const AttnArgs& a) {
    extern __shared__ float smem[];
    const int D = a.head_dim, DP = D + 1;
    const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float* ks = smem;                 // [32][D + 1]
    float* vs = ks + ATTN_TILE * DP;  // [32][D]
    float* qs = vs + ATTN_TILE * D;   // [W][D], q * scale
    const int h = blockIdx.y, b = blockIdx.z;
    const int i0 = blockIdx.x * nw, i = i0 + warp;
    const bool active = i < a.tq;
    const int r = a.kv_index ? (int)a.kv_index[b] : b;
    typedef typename KV::T E;
    const E* kb = (const E*)a.k + (i64)r * a.k_sb + (i64)h * D;
    const E* vb = (const E*)a.v + (i64)r * a.v_sb + (i64)h * D;
    const AttnPos pos = attn_pos(a);
    const int lim = attn_limit(a, pos, i);
    const int qpos = pos.q_offset + i;
    // Keys any query of this block needs.
    const int kv_hi = attn_limit(a, pos, min(i0 + nw, a.tq) - 1);
    const float* mask_row = a.key_mask ? a.key_mask + (i64)r * a.tcap : nullptr;
    const float* bias_row = (a.pos_bias && active) ? a.pos_bias + ((i64)h * a.tq + i) * pos.kv_len : nullptr;

    if (active) {
        const float* qrow = a.q + (i64)b * a.q_sb + (i64)i * a.q_st + (i64)h * D;
        for (int d = lane; d < D; d += 32) qs[warp * D + d] = qrow[d] * a.scale;
    }
    float m = NEG_INF, l = 0.0f, o[DCH];
#pragma unroll
    for (int c = 0; c < DCH; ++c) o[c] = 0.0f;

    for (int j0 = 0; j0 < kv_hi; j0 += ATTN_TILE) {
        __syncthreads();  // everyone is done with the previous tile (and qs is written)
        for (int e = threadIdx.x; e < ATTN_TILE * D; e += blockDim.x) {
            const int jj = e / D, d = e - jj * D, j = j0 + jj;
            float kv = 0.0f, vv = 0.0f;
            if (j < kv_hi) {
                kv = KV::load(kb, (i64)j * a.k_st + d);
                vv = KV::load(vb, (i64)j * a.v_st + d);
            }
            ks[jj * DP + d] = kv;
            vs[jj * D + d] = vv;
        }
        __syncthreads();
        if (!active) continue;  // warp-uniform

        // One key per lane.
        const int j = j0 + lane;
        const bool valid = j < lim;
        float s = NEG_INF;
        if (valid) {
            const float* kr = ks + lane * DP;
            const float* qr = qs + warp * D;
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot = fmaf(qr[d], kr[d], dot);
            s = attn_score(a, dot, bias_row, mask_row, h, qpos, j);
        }
        const float tmax = warp_max(s);
        if (tmax == NEG_INF) continue;  // no usable key in this tile (warp-uniform)
        const float m_new = fmaxf(m, tmax);
        const float corr = expf(m - m_new);  // 0 on the first tile (m = -inf)
        const float p = valid ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int c = 0; c < DCH; ++c) o[c] *= corr;
        const int nj = min(ATTN_TILE, kv_hi - j0);
        for (int jj = 0; jj < nj; ++jj) {
            const float pj = __shfl_sync(FULL_MASK, p, jj);
#pragma unroll
            for (int c = 0; c < DCH; ++c) {
                const int d = lane + 32 * c;
                if (d < D) o[c] = fmaf(pj, vs[jj * D + d], o[c]);
            }
        }
        m = m_new;
    }
    if (!active) return;
    float* orow = a.out + (((i64)b * a.tq + i) * a.heads + h) * D;
    if (m == NEG_FLT_MAX && lim < pos.kv_len) {
        attn_uniform<KV>(a, pos, vb, orow, lane, 32);
        return;
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int c = 0; c < DCH; ++c) {
        const int d = lane + 32 * c;
        if (d < D) orow[d] = o[c] * inv;
    }
}

extern "C" __global__ void __launch_bounds__(128) attention_f32_d32(const AttnArgs a) { attention_tiled<WF32, 1>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_f32_d64(const AttnArgs a) { attention_tiled<WF32, 2>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_f32_d128(const AttnArgs a) { attention_tiled<WF32, 4>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_f32_d256(const AttnArgs a) { attention_tiled<WF32, 8>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvf16_d32(const AttnArgs a) { attention_tiled<WF16, 1>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvf16_d64(const AttnArgs a) { attention_tiled<WF16, 2>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvf16_d128(const AttnArgs a) { attention_tiled<WF16, 4>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvf16_d256(const AttnArgs a) { attention_tiled<WF16, 8>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvbf16_d32(const AttnArgs a) { attention_tiled<WBF16, 1>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvbf16_d64(const AttnArgs a) { attention_tiled<WBF16, 2>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvbf16_d128(const AttnArgs a) { attention_tiled<WBF16, 4>(a); }
extern "C" __global__ void __launch_bounds__(128) attention_kvbf16_d256(const AttnArgs a) { attention_tiled<WBF16, 8>(a); }
