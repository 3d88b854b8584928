// decode_attention.cu: attention with the key axis split across blocks
// (flash-decoding), for few query rows (decode steps: Tq = 1) over long key
// ranges (a KV cache, or the cached encoder K/V of a 1024-token source), where
// one block per (row, head) would leave most of the GPU idle. f32 math; K/V read
// as f32, f16 or bf16 (half-precision KV caches), each element widened exactly
// to f32 in registers as it is loaded (the f32 result on the widened K/V).
//
// What it computes: exactly what attention.cu computes (same AttentionParams
// semantics: scale, causal + q_offset, kv_len < Tcap, key_mask per kv row,
// position_bias [H, Tq, kv_len] or T5's relative bias from its bucket table
// (attn_rel_bias, per (query, key)), kv_index so beams share encoder K/V, the
// uniform row when fully masked), in two kernels:
//   attention_split_{f32,kvf16,kvbf16}_d*  block (split s, head h, query row
//       (b, i)) runs an online softmax over keys
//       [s * keys_per_split, (s + 1) * keys_per_split) ∩ [0, limit(i)) and writes its partial state: running max m, sum l and
//       unnormalised output o[D] (m = -inf, l = 0, o = 0 for an empty range).
//   attention_combine_{f32,kvf16,kvbf16}   block (head h, query row (b, i))
//       merges the splits (its K/V dtype: it reads V for a fully masked row):
//       M = max m_s, L = sum l_s exp(m_s - M), out = sum o_s exp(m_s - M) / L;
//       a fully masked row (M = f32::MIN with limit < kv_len) gets the uniform
//       average of V over all kv_len keys instead.
// Partial buffers (f32): pm, pl [B * Tq * H * splits], po [B * Tq * H * splits * D],
// slot = ((b * Tq + i) * H + h) * splits + s.
//
// Launch shape:
//   split:   grid (splits, H, B * Tq), 128 threads (4 warps). Warp w takes the key
//            tiles w, w + 4, ... of the split, 32 keys per tile, one key per lane
//            (K read straight from global memory, q * scale from shared memory),
//            and P.V with D / 32 dims per lane; the 4 warp states are merged in
//            shared memory. Dynamic shared memory (D + 4 * D + 8) * 4 bytes.
//   combine: grid (H, B * Tq), 128 threads striding over D.
// Variants attention_split_{f32,kvf16,kvbf16}_d{32,64,128,256}: K/V dtype (q, out and
// the partial buffers are f32 in all), D <= 32, 64, 128, 256 held in registers.
#include "common.cuh"

// KV: the loader of K/V's dtype (WF32, WF16, WBF16 in common.cuh).
template <class KV, int DCH>
__device__ __forceinline__ void attention_split(const AttnArgs& a, int keys_per_split, float* pm, float* pl,
                                                float* po) {
    extern __shared__ float smem[];
    const int D = a.head_dim;
    const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int split = blockIdx.x, h = blockIdx.y;
    const int b = blockIdx.z / a.tq, i = blockIdx.z % a.tq;
    float* qs = smem;         // [D]
    float* wo = qs + D;       // [W][D]
    float* wm = wo + nw * D;  // [W]
    float* wl = wm + nw;      // [W]
    const int r = a.kv_index ? (int)a.kv_index[b] : b;
    typedef typename KV::T E;
    const E* kb = (const E*)a.k + (i64)r * a.k_sb + (i64)h * D;
    const E* vb = (const E*)a.v + (i64)r * a.v_sb + (i64)h * D;
    const AttnPos pos = attn_pos(a);
    const int lim = attn_limit(a, pos, i);
    const int qpos = pos.q_offset + i;
    const int j_begin = split * keys_per_split;
    const int j_end = min(lim, j_begin + keys_per_split);
    const float* mask_row = a.key_mask ? a.key_mask + (i64)r * a.tcap : nullptr;
    const float* bias_row = a.pos_bias ? a.pos_bias + ((i64)h * a.tq + i) * pos.kv_len : nullptr;

    const float* qrow = a.q + (i64)b * a.q_sb + (i64)i * a.q_st + (i64)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = qrow[d] * a.scale;
    __syncthreads();

    float m = NEG_INF, l = 0.0f, o[DCH];
#pragma unroll
    for (int c = 0; c < DCH; ++c) o[c] = 0.0f;
    for (int j0 = j_begin + warp * 32; j0 < j_end; j0 += nw * 32) {
        const int j = j0 + lane;
        const bool valid = j < j_end;
        float s = NEG_INF;
        if (valid) {
            const E* kr = kb + (i64)j * a.k_st;
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot = fmaf(qs[d], KV::load(kr, d), dot);
            s = attn_score(a, dot, bias_row, mask_row, h, qpos, j);
        }
        const float tmax = warp_max(s);
        if (tmax == NEG_INF) continue;  // warp-uniform
        const float m_new = fmaxf(m, tmax);
        const float corr = expf(m - m_new);
        const float p = valid ? expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int c = 0; c < DCH; ++c) o[c] *= corr;
        const int nj = min(32, j_end - j0);
        for (int jj = 0; jj < nj; ++jj) {
            const float pj = __shfl_sync(FULL_MASK, p, jj);
            const E* vr = vb + (i64)(j0 + jj) * a.v_st;
#pragma unroll
            for (int c = 0; c < DCH; ++c) {
                const int d = lane + 32 * c;
                if (d < D) o[c] = fmaf(pj, KV::load(vr, d), o[c]);
            }
        }
        m = m_new;
    }

    // Merge the warps' states.
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int c = 0; c < DCH; ++c) {
        const int d = lane + 32 * c;
        if (d < D) wo[warp * D + d] = o[c];
    }
    __syncthreads();
    float M = NEG_INF;
    for (int w = 0; w < nw; ++w) M = fmaxf(M, wm[w]);
    const i64 slot = (((i64)b * a.tq + i) * a.heads + h) * gridDim.x + split;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int w = 0; w < nw; ++w)
            if (wm[w] != NEG_INF) acc = fmaf(wo[w * D + d], expf(wm[w] - M), acc);
        po[slot * D + d] = acc;
    }
    if (threadIdx.x == 0) {
        float L = 0.0f;
        for (int w = 0; w < nw; ++w)
            if (wm[w] != NEG_INF) L = fmaf(wl[w], expf(wm[w] - M), L);
        pm[slot] = M;
        pl[slot] = L;
    }
}

// Min 6 blocks per SM: the host launches about 2 per SM, so occupancy is not
// what limits this kernel; the bound lets ptxas keep everything in registers
// (without one it picks 32 registers and spills on sm_90).
#define SPLIT(NAME, KV, DCH)                                                                      \
    extern "C" __global__ void __launch_bounds__(128, 6)                                          \
        NAME(const AttnArgs a, int keys_per_split, float* pm, float* pl, float* po) {            \
        attention_split<KV, DCH>(a, keys_per_split, pm, pl, po);                                 \
    }
SPLIT(attention_split_f32_d32, WF32, 1)
SPLIT(attention_split_f32_d64, WF32, 2)
SPLIT(attention_split_f32_d128, WF32, 4)
SPLIT(attention_split_f32_d256, WF32, 8)
SPLIT(attention_split_kvf16_d32, WF16, 1)
SPLIT(attention_split_kvf16_d64, WF16, 2)
SPLIT(attention_split_kvf16_d128, WF16, 4)
SPLIT(attention_split_kvf16_d256, WF16, 8)
SPLIT(attention_split_kvbf16_d32, WBF16, 1)
SPLIT(attention_split_kvbf16_d64, WBF16, 2)
SPLIT(attention_split_kvbf16_d128, WBF16, 4)
SPLIT(attention_split_kvbf16_d256, WBF16, 8)

template <class KV>
__device__ __forceinline__ void attention_combine(const AttnArgs& a, int splits, const float* pm, const float* pl,
                                                  const float* po) {
    const AttnPos pos = attn_pos(a);
    const int D = a.head_dim;
    const int h = blockIdx.x;
    const int b = blockIdx.y / a.tq, i = blockIdx.y % a.tq;
    const i64 slot0 = (((i64)b * a.tq + i) * a.heads + h) * splits;
    float* orow = a.out + (((i64)b * a.tq + i) * a.heads + h) * D;
    float M = NEG_INF;
    for (int s = 0; s < splits; ++s) M = fmaxf(M, pm[slot0 + s]);
    if (M == NEG_FLT_MAX && attn_limit(a, pos, i) < pos.kv_len) {
        const int r = a.kv_index ? (int)a.kv_index[b] : b;
        const typename KV::T* vb = (const typename KV::T*)a.v + (i64)r * a.v_sb + (i64)h * D;
        attn_uniform<KV>(a, pos, vb, orow, threadIdx.x, blockDim.x);
        return;
    }
    float L = 0.0f;
    for (int s = 0; s < splits; ++s)
        if (pm[slot0 + s] != NEG_INF) L = fmaf(pl[slot0 + s], expf(pm[slot0 + s] - M), L);
    const float inv = 1.0f / L;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < splits; ++s)
            if (pm[slot0 + s] != NEG_INF) acc = fmaf(po[(slot0 + s) * D + d], expf(pm[slot0 + s] - M), acc);
        orow[d] = acc * inv;
    }
}

extern "C" __global__ void __launch_bounds__(128)
    attention_combine_f32(const AttnArgs a, int splits, const float* pm, const float* pl, const float* po) {
    attention_combine<WF32>(a, splits, pm, pl, po);
}
extern "C" __global__ void __launch_bounds__(128)
    attention_combine_kvf16(const AttnArgs a, int splits, const float* pm, const float* pl, const float* po) {
    attention_combine<WF16>(a, splits, pm, pl, po);
}
extern "C" __global__ void __launch_bounds__(128)
    attention_combine_kvbf16(const AttnArgs a, int splits, const float* pm, const float* pl, const float* po) {
    attention_combine<WBF16>(a, splits, pm, pl, po);
}
