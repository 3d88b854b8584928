// attention_tc.cu: flash attention (FA2 structure) on tensor cores, sm_80+.
// The AttentionPath::Auto choice for Tq > 1 (encoder, decoder prefill) when the
// model allows rounding q, k, v and the probabilities to f16/bf16
// (AttentionParams::operand_dtype) and head_dim is 64 or 128.
//
// What it computes: the op of attention.cu (reference: crates/cpu/src/ops/
// attention.rs, encdec_core::AttentionParams), per batch row b, head h, query
// row i, with r = kv_index[b] (or b) and h() = rounding to f16/bf16 (RNE):
//   s[j]   = scale * (h(q[b, i, h]) . h(k[r, j, h])) + (bias[h, i, j] + mask[r, j])
//            for j < limit(i), f32 accumulation on the tensor cores
//   out    = sum_j h(p[j]) v'[j] / sum_j p[j],  p = exp(s - running max), v' = h(v[r, j, h])
// bias is pos_bias [H, Tq, kv_len], or T5's relative bias from its bucket table
// (attn_rel_bucket in common.cuh, one bucket per relative offset of the tile:
// 127 per 64 x 64 tile, staged in shared memory); mask is key_mask [Bkv, Tcap].
// limit(i) = kv_len, or with causal min(kv_len, q_offset + i + 1). A fully
// masked row (every allowed score f32::MIN) is uniform over all kv_len keys,
// as the CPU op and HF: with limit = kv_len the online softmax gives that by
// itself (all p = 1); with a causal limit it is attn_uniform (exact f32 V).
// Differs from the f32 kernels only by the roundings h(); q is rounded before
// the scale (the scale multiplies the f32 dot product).
//
// Layout: AttnArgs (common.cuh): q [B, Tq, H*D], k/v [Bkv, Tcap, H*D] with any
// batch/time strides (last dim contiguous, heads interleaved), out [B, Tq, H*D]
// contiguous, written once, in a.out_dt (f32, or f16/bf16: the f32 value
// rounded at the store, half activations). attention_tc_<t>_d<D>: q, k, v f32.
// attention_tc_<t>_hx_d<D>: q, k, v all f16/bf16 of the operand type <t> (half
// activations) and copied into the tiles as they are: the roundings h() are
// already done, so the result is bit for bit the f32 kernel's on their
// widening. Other dtype mixes go to attention.cu (half K/V caches) or are
// widened by the host.
//
// Launch shape: grid (ceil(Tq / 64), H, B), 128 threads = 4 warps; warp w owns
// the 16 query rows 64 blockIdx.x + 16 w .. + 15. The block walks the keys in
// tiles of 64 up to the last limit of its rows (causal blocks stop early; a
// warp skips the math of tiles past its own rows' limit).
// Per tile:
//   1. cp.async.wait_group 0 + barrier: the f32 K/V tile is in the staging
//      area (16 B cp.async.cg per chunk, issued during the previous tile's
//      math; element-wise loads when a row is not 16 B aligned). _hx: the
//      half tile is in Kh/Vh stage (tile & 1) already (16 B = 8 halves per
//      cp.async, keys past the range zero-filled when issued).
//   2. All threads round it to f16/bf16 into Kh/Vh (rows padded to D + 8
//      halves: 16 B aligned rows, conflict-free ldmatrix), zero-filling keys
//      past the block's range (_hx: nothing to do); the key mask and the
//      relative bias of the tile go to shared memory too. Barrier.
//   3. The next tile's cp.async is issued (overlaps steps 4-6); _hx: into the
//      other Kh/Vh stage, whose tile every warp finished before step 1's barrier.
//   4. S (16 x 64 per warp) = Q K^T: mma.sync m16n8k16, A = Q fragments held in
//      registers for the whole kernel (ldmatrix once), B = K rows by the
//      non-transposed ldmatrix.x4 (K [key][d] is B "col").
//   5. Scale, bias + mask, limit in registers; online softmax in f32: a row's
//      16 x 4 values live in one quad (lanes 4g..4g+3: rows g and g + 8), so
//      the row max is two xor-shuffles; the row sum stays per lane until the end.
//      The running output is rescaled by exp(m_old - m_new).
//   6. O += P V: P from the S accumulators (the m16n8 accumulator layout of two
//      adjacent n-tiles is the m16k16 A layout), rounded to f16/bf16; V [key][d]
//      as the B operand by ldmatrix.x4.trans.
// End: row sums over the quad, out = O / l (f32), written once.
// Shared memory (dynamic): stage 2 * 64 * D * 4 + Kh/Vh 2 * 64 * (D + 8) * 2 +
// mask 64 * 4 + bias 128 * 4 bytes: 51968 (D = 64) / 101120 (D = 128), above
// the 48 KiB default: the launcher opts in. Q is staged in the Kh area once.
// _hx: no stage, two Kh/Vh stages, 4 * 64 * (D + 8) * 2 + 768 bytes: 37632
// (D = 64) / 70400 (D = 128); Q is staged in Kh's second stage.
// Registers: O 16 x D per warp (D / 2 f32 per thread), S 32, Q fragments D / 4;
// ptxas (NVRTC 13.5): 158 (f16) / 168 (bf16) at D = 64, 237 at D = 128 on sm_80,
// 130 / 213-217 on sm_90, no spills (scripts/kernel-resources.py). So 2-3 blocks
// (8-12 warps) per SM at D = 64 and 2 at D = 128 (1 on A100: 101 KB of shared).
// _hx (NVRTC 13.2): 159 (f16) / 167 (bf16) at D = 64, 255 / 237 at D = 128 on
// sm_80, 128 / 246 on sm_90, no spills; with 37.6 / 70.4 KB of shared memory,
// 3 blocks per SM at D = 64 and 2 at D = 128 also on A100.
//
// Napkin estimate (H100 SXM, ~990 dense f16 TFLOP/s = ~1024 flop/clk per SM
// sub-partition): per warp and 64-key tile the mma work is 4 * 16 * 64 * D flop
// = 256 clk at D = 64 (512 at D = 128) if mma.sync ran at peak, which on H100 it
// does not (no wgmma: ~60-70% at best). The softmax costs 32 accurate expf
// (no fast math) + scale/bias/mask/max per lane, ~1000 issue slots per warp
// per tile, and the f32 -> f16 staging of K/V another ~D / 2 * 3 per thread:
// the kernel is issue-bound on the FP32/ALU side, not on the tensor cores.
// Expected: ~15-20% of the tensor-core peak at D = 64, ~25-30% at D = 128
// (FA2 with ex2.approx on A100 reaches ~70%; FA2 on H100 ~35-40%). What limits
// it: accurate expf, the f32 K/V in global memory (2x the bytes of f16 and a
// shared-memory conversion pass), one stage, 2 barriers per tile. The _hx
// kernels (half activations, what f16/bf16 models run) drop the f32 bytes and
// the conversion pass and keep two tiles in flight; expf and the barriers
// remain. Never timed: no GPU has run it.
#include "common.cuh"

#define ATC_BQ 64       // query rows per block (4 warps x 16)
#define ATC_BK 64       // keys per tile
#define ATC_THREADS 128
#define ATC_ZERO4 (uint4{0u, 0u, 0u, 0u})

// cp.async, ldmatrix and the bf16 mma need sm_80; below it the kernels compile
// to a trap, and the launcher only picks them on compute capability >= 8.0.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define ATC_ARCH_OK 0
#else
#define ATC_ARCH_OK 1
#endif
#if ATC_ARCH_OK

template <bool BF16>
__device__ __forceinline__ void atc_mma(float d[4], const u32 a[4], const u32 b0, const u32 b1) {
    const u32 b[2] = {b0, b1};
    if (BF16)
        mma_m16n8k16_bf16(d, a, b);
    else
        mma_m16n8k16_f16(d, a, b);
}

// AtcSel<C, A, B>::T is A if C else B (no <type_traits> under NVRTC).
template <bool C, class A, class B>
struct AtcSel {
    typedef A T;
};
template <class A, class B>
struct AtcSel<false, A, B> {
    typedef B T;
};

// Rounds 4 f32 to 4 halves and stores them (8 B) at dst.
template <bool BF16>
__device__ __forceinline__ void atc_store4(u16* dst, float x, float y, float z, float w) {
    uint2 v;
    v.x = pack2<BF16>(x, y);
    v.y = pack2<BF16>(z, w);
    *reinterpret_cast<uint2*>(dst) = v;
}

// The fully masked causal row of attn_uniform (exact f32 V, or half V widened),
// stored in out's dtype.
template <class KV>
__device__ __forceinline__ void atc_uniform(const AttnArgs& a, const AttnPos& p, const typename KV::T* vb,
                                            i64 out_row, int first_d, int step) {
    const float w = 1.0f / (float)p.kv_len;
    for (int d = first_d; d < a.head_dim; d += step) {
        float acc = 0.0f;
        for (int j = 0; j < p.kv_len; ++j) acc = fmaf(w, KV::load(vb, (i64)j * a.v_st + d), acc);
        store_out(a.out, out_row + d, acc, a.out_dt);
    }
}

// HX: q, k, v are already f16/bf16 (the operand type: half activations) and
// are copied into the tiles as they are; else they are f32, rounded when staged.
template <bool BF16, int D, bool HX>
__device__ __forceinline__ void attention_tc(const AttnArgs& a) {
    constexpr int LDS = D + 8;                                // halves per Qh/Kh/Vh row (16 B pad)
    constexpr int C4 = D / 4;                                 // 16 B chunks per f32 row
    constexpr int CHUNKS = ATC_BK * C4 / ATC_THREADS;         // per thread per K (or V) tile
    constexpr int C8 = D / 8;                                 // 16 B chunks per half row
    constexpr int CHUNKS8 = ATC_BK * C8 / ATC_THREADS;
    extern __shared__ float smem[];
    // f32 inputs: one f32 stage [BK][D] each for K and V, one half tile each.
    // Half inputs: no stage; two half tiles each (tile it + 1 lands in the
    // other while tile it is used).
    float* kst = smem;
    float* vst = kst + ATC_BK * D;
    u16* kh = HX ? reinterpret_cast<u16*>(smem) : reinterpret_cast<u16*>(vst + ATC_BK * D);  // [stages][BK][LDS]
    u16* vh = kh + (HX ? 2 : 1) * ATC_BK * LDS;                                             // [stages][BK][LDS]
    float* mask_s = reinterpret_cast<float*>(vh + (HX ? 2 : 1) * ATC_BK * LDS);  // [BK] key mask of the tile
    float* rel_s = mask_s + ATC_BK;                           // [BQ + BK - 1] bias by offset
    // Q is staged once before the first tile: in the Kh area (f32 inputs, the
    // tile is converted after the first wait) or in Kh's second stage (half
    // inputs: tile 0 is copied into the first meanwhile).
    u16* qh = HX ? kh + ATC_BK * LDS : kh;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;  // mma fragment row group, thread in group
    const int h = blockIdx.y, b = blockIdx.z;
    const int q0 = blockIdx.x * ATC_BQ;
    const int r = a.kv_index ? (int)a.kv_index[b] : b;
    // f32 K/V, or half K/V of the operand type (HX; the host sends other half
    // K/V to attention.cu).
    typedef typename AtcSel<HX, u16, float>::T In;
    const In* kb = (const In*)a.k + (i64)r * a.k_sb + (i64)h * D;
    const In* vb = (const In*)a.v + (i64)r * a.v_sb + (i64)h * D;
    const float* mask_row = a.key_mask ? a.key_mask + (i64)r * a.tcap : nullptr;
    // Keys any row of the block needs (limit() grows with i).
    const AttnPos pos = attn_pos(a);
    const int kv_hi = attn_limit(a, pos, min(q0 + ATC_BQ, a.tq) - 1);
    const int ntiles = (kv_hi + ATC_BK - 1) / ATC_BK;
    // Block-uniform: may K/V rows be copied in 16 B chunks (4 f32 or 8 halves)?
    const bool kv_vec = (((u64)kb | (u64)vb) & 15) == 0 && ((a.k_st | a.v_st) & (HX ? 7 : 3)) == 0;

    // Issues the copy of keys j0 .. j0 + 63 (those < kv_hi) and commits it as
    // one group: f32 inputs into the f32 stage (rows past kv_hi are not read;
    // zero-filled at conversion); half inputs straight into tile `stage`
    // (rows past kv_hi zero-filled here: p = 0 there, and 0 * NaN is NaN).
    auto load_kv = [&](int j0, int stage) {
        if (HX) {
            u16* kd0 = kh + stage * ATC_BK * LDS;
            u16* vd0 = vh + stage * ATC_BK * LDS;
#pragma unroll
            for (int c0 = 0; c0 < CHUNKS8; ++c0) {
                const int c = tid + ATC_THREADS * c0, row = c / C8, col = (c - row * C8) * 8;
                u16* kd = kd0 + row * LDS + col;
                u16* vd = vd0 + row * LDS + col;
                if (j0 + row >= kv_hi) {
                    *reinterpret_cast<uint4*>(kd) = ATC_ZERO4;
                    *reinterpret_cast<uint4*>(vd) = ATC_ZERO4;
                    continue;
                }
                const u16* ks = reinterpret_cast<const u16*>(kb) + (i64)(j0 + row) * a.k_st + col;
                const u16* vs = reinterpret_cast<const u16*>(vb) + (i64)(j0 + row) * a.v_st + col;
                if (kv_vec) {
                    cp_async_16(kd, ks);
                    cp_async_16(vd, vs);
                } else {
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        kd[e] = ks[e];
                        vd[e] = vs[e];
                    }
                }
            }
        } else {
#pragma unroll
            for (int c0 = 0; c0 < CHUNKS; ++c0) {
                const int c = tid + ATC_THREADS * c0, row = c / C4, col = (c - row * C4) * 4;
                if (j0 + row >= kv_hi) continue;
                const float* ks = reinterpret_cast<const float*>(kb) + (i64)(j0 + row) * a.k_st + col;
                const float* vs = reinterpret_cast<const float*>(vb) + (i64)(j0 + row) * a.v_st + col;
                float* kd = kst + row * D + col;
                float* vd = vst + row * D + col;
                if (kv_vec) {
                    cp_async_16(kd, ks);
                    cp_async_16(vd, vs);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        kd[e] = ks[e];
                        vd[e] = vs[e];
                    }
                }
            }
        }
        cp_async_commit();
    };

    if (ntiles > 0) load_kv(0, 0);

    // Q: 64 rows, rounded (not scaled) to the operand type (or copied, half
    // inputs); rows past Tq are 0.
    if (HX) {
        const u16* qb = reinterpret_cast<const u16*>(a.q) + (i64)b * a.q_sb + (i64)h * D;
        const bool q_vec = ((u64)qb & 15) == 0 && (a.q_st & 7) == 0;
#pragma unroll
        for (int c0 = 0; c0 < ATC_BQ * C8 / ATC_THREADS; ++c0) {
            const int c = tid + ATC_THREADS * c0, row = c / C8, col = (c - row * C8) * 8;
            u16* dst = qh + row * LDS + col;
            if (q0 + row >= a.tq) {
                *reinterpret_cast<uint4*>(dst) = ATC_ZERO4;
                continue;
            }
            const u16* src = qb + (i64)(q0 + row) * a.q_st + col;
            if (q_vec) {
                *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) dst[e] = src[e];
            }
        }
    } else {
        const float* qb = a.q + (i64)b * a.q_sb + (i64)h * D;
        const bool q_vec = ((u64)qb & 15) == 0 && (a.q_st & 3) == 0;
#pragma unroll
        for (int c0 = 0; c0 < ATC_BQ * C4 / ATC_THREADS; ++c0) {
            const int c = tid + ATC_THREADS * c0, row = c / C4, col = (c - row * C4) * 4;
            float f[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (q0 + row < a.tq) {
                const float* src = qb + (i64)(q0 + row) * a.q_st + col;
                if (q_vec) {
                    const float4 v = *reinterpret_cast<const float4*>(src);
                    f[0] = v.x;
                    f[1] = v.y;
                    f[2] = v.z;
                    f[3] = v.w;
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) f[e] = src[e];
                }
            }
            atc_store4<BF16>(qh + row * LDS + col, f[0], f[1], f[2], f[3]);
        }
    }
    __syncthreads();
    // A fragments of this warp's 16 rows, k-step kk: matrices (rows 0-7 | 8-15) x
    // (d 0-7 | 8-15) of the step -> a0a1, a2a3, a4a5, a6a7.
    u32 qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], qh + (warp * 16 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);

    // This lane's two rows (g and g + 8 of the warp's 16); rows past Tq have
    // limit 0 (no key, never written).
    const int wrow = q0 + warp * 16;
    int lim[2];
    const float* bias_r[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int i = wrow + g + 8 * hr;
        lim[hr] = i < a.tq ? attn_limit(a, pos, i) : 0;
        bias_r[hr] = (a.pos_bias && i < a.tq) ? a.pos_bias + ((i64)h * a.tq + i) * pos.kv_len : nullptr;
    }
    // Keys this warp needs (0 for a warp entirely past Tq).
    const int warp_hi = wrow < a.tq ? attn_limit(a, pos, min(wrow + 15, a.tq - 1)) : 0;

    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[dt][e] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};

    for (int it = 0; it < ntiles; ++it) {
        const int j0 = it * ATC_BK;
        // Tile it has landed; every warp is done with Kh/Vh of tile it - 1 (and
        // with the Q staging).
        cp_async_wait<0>();
        __syncthreads();
        // The tiles of tile it: half inputs alternate between two stages.
        const u16* kt = kh + (HX ? (it & 1) * ATC_BK * LDS : 0);
        const u16* vt = vh + (HX ? (it & 1) * ATC_BK * LDS : 0);
#pragma unroll
        for (int c0 = 0; c0 < (HX ? 0 : CHUNKS); ++c0) {
            const int c = tid + ATC_THREADS * c0, row = c / C4, col = (c - row * C4) * 4;
            if (j0 + row < kv_hi) {
                const float4 kf = *reinterpret_cast<const float4*>(kst + row * D + col);
                const float4 vf = *reinterpret_cast<const float4*>(vst + row * D + col);
                atc_store4<BF16>(kh + row * LDS + col, kf.x, kf.y, kf.z, kf.w);
                atc_store4<BF16>(vh + row * LDS + col, vf.x, vf.y, vf.z, vf.w);
            } else {
                // Past the range: zeros (p = 0 there, and 0 * NaN would be NaN).
                atc_store4<BF16>(kh + row * LDS + col, 0.0f, 0.0f, 0.0f, 0.0f);
                atc_store4<BF16>(vh + row * LDS + col, 0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
        if (tid < ATC_BK) mask_s[tid] = (mask_row && j0 + tid < kv_hi) ? mask_row[j0 + tid] : 0.0f;
        if (a.rel_table && tid < ATC_BQ + ATC_BK - 1) {
            // Offset x = jl - il + 63 of (local row il, local key jl): relative
            // position j - (q_offset + i) = j0 - (q_offset + q0) + x - 63.
            const int rel = j0 - (pos.q_offset + q0) + tid - (ATC_BQ - 1);
            rel_s[tid] = a.rel_table[(i64)attn_rel_bucket(a, rel) * a.heads + h];
        }
        __syncthreads();  // Kh/Vh/mask/bias ready; the stage (half: tile it - 1's) is free
        if (it + 1 < ntiles) load_kv(j0 + ATC_BK, (it + 1) & 1);  // lands while the math below runs
        if (j0 >= warp_hi) continue;  // warp-uniform: no row of this warp reaches the tile

        // S = Q K^T: n-tile nt = keys 8 nt .. 8 nt + 7 of the tile. K rows [key][d]
        // are B col-major; matrices (keys 0-7, d 0-7), (0-7, 8-15), (8-15, 0-7),
        // (8-15, 8-15) of a 16-key pair -> b0b1 of n-tile 2 jp, b0b1 of 2 jp + 1.
        float s[ATC_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < ATC_BK / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
            for (int jp = 0; jp < ATC_BK / 16; ++jp) {
                u32 kr[4];
                ldmatrix_x4(kr, kt + (jp * 16 + (lane >> 4) * 8 + (lane & 7)) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
                atc_mma<BF16>(s[2 * jp], qf[kk], kr[0], kr[1]);
                atc_mma<BF16>(s[2 * jp + 1], qf[kk], kr[2], kr[3]);
            }
        }

        // Scores: s[nt][e] is row g + 8 (e / 2), key 8 nt + 2 t + (e % 2).
        float tmax[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < ATC_BK / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int hr = e >> 1, il = warp * 16 + g + 8 * hr, jl = nt * 8 + 2 * t + (e & 1), j = j0 + jl;
                float v = NEG_INF;
                if (j < lim[hr]) {
                    const float bias =
                        a.rel_table ? rel_s[jl - il + ATC_BQ - 1] : (bias_r[hr] ? bias_r[hr][j] : 0.0f);
                    // The CPU op's order: dot + (bias + mask).
                    v = a.scale * s[nt][e] + (bias + mask_s[jl]);
                }
                s[nt][e] = v;
                tmax[hr] = fmaxf(tmax[hr], v);
            }
        // Online softmax per row; the quad (t = 0..3) holds the row.
        float corr[2], ms[2];
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            tmax[hr] = fmaxf(tmax[hr], __shfl_xor_sync(FULL_MASK, tmax[hr], 1));
            tmax[hr] = fmaxf(tmax[hr], __shfl_xor_sync(FULL_MASK, tmax[hr], 2));
            const float m_new = fmaxf(m[hr], tmax[hr]);
            // No key yet (m_new = -inf): subtract 0, so exp gives 0, not NaN.
            ms[hr] = m_new == NEG_INF ? 0.0f : m_new;
            corr[hr] = expf(m[hr] - ms[hr]);  // 0 on the first keys (m = -inf)
            m[hr] = m_new;
            l[hr] *= corr[hr];
        }
#pragma unroll
        for (int nt = 0; nt < ATC_BK / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = expf(s[nt][e] - ms[e >> 1]);
                s[nt][e] = p;
                l[e >> 1] += p;
            }
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[dt][e] *= corr[e >> 1];

        // O += P V, k-step kk = keys 16 kk .. 16 kk + 15: A = P from n-tiles 2 kk
        // and 2 kk + 1 (a0a1 = row g keys 2t.., a2a3 = row g + 8, a4..a7 = keys + 8).
        // V [key][d] by ldmatrix.trans: matrices (keys 0-7, d 0-7), (keys 8-15,
        // d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15) -> b0, b1 of d-tile
        // 2 dp, then of 2 dp + 1.
#pragma unroll
        for (int kk = 0; kk < ATC_BK / 16; ++kk) {
            const u32 pa[4] = {pack2<BF16>(s[2 * kk][0], s[2 * kk][1]), pack2<BF16>(s[2 * kk][2], s[2 * kk][3]),
                               pack2<BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                               pack2<BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                u32 vr[4];
                ldmatrix_x4_trans(vr, vt + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + dp * 16 + (lane >> 4) * 8);
                atc_mma<BF16>(o[2 * dp], pa, vr[0], vr[1]);
                atc_mma<BF16>(o[2 * dp + 1], pa, vr[2], vr[3]);
            }
        }
    }

    // Row sums over the quad; o[dt][e] is row g + 8 (e / 2), dims 8 dt + 2 t + (e % 2).
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        l[hr] += __shfl_xor_sync(FULL_MASK, l[hr], 1);
        l[hr] += __shfl_xor_sync(FULL_MASK, l[hr], 2);
    }
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int i = wrow + g + 8 * hr;
        if (i >= a.tq) continue;
        const i64 orow = (((i64)b * a.tq + i) * a.heads + h) * D;
        if (m[hr] == NEG_FLT_MAX && lim[hr] < pos.kv_len) {
            // fully masked causal row (rare)
            typedef typename AtcSel<HX, typename AtcSel<BF16, WBF16, WF16>::T, WF32>::T VL;
            atc_uniform<VL>(a, pos, reinterpret_cast<const typename VL::T*>(vb), orow, t, 4);
            continue;
        }
        const float inv = 1.0f / l[hr];
        if (a.out_dt == OUT_F32) {
            float* o32 = reinterpret_cast<float*>(a.out) + orow;
#pragma unroll
            for (int dt = 0; dt < D / 8; ++dt) {
                o32[dt * 8 + 2 * t] = o[dt][2 * hr] * inv;
                o32[dt * 8 + 2 * t + 1] = o[dt][2 * hr + 1] * inv;
            }
        } else {
            // A half out (half activations): the same f32 values, rounded.
            u16* o16 = reinterpret_cast<u16*>(a.out) + orow;
            const bool bf16_out = a.out_dt == OUT_BF16;
#pragma unroll
            for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float x = o[dt][2 * hr + e] * inv;
                    o16[dt * 8 + 2 * t + e] = bf16_out ? f32_to_bf16(x) : f32_to_f16(x);
                }
        }
    }
}

#define ATTN_TC_BODY(BF16, D, HX) attention_tc<BF16, D, HX>(a)
#else
#define ATTN_TC_BODY(BF16, D, HX) __trap()
#endif  // ATC_ARCH_OK

extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_f16_d64(const AttnArgs a) {
    ATTN_TC_BODY(false, 64, false);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_f16_d128(const AttnArgs a) {
    ATTN_TC_BODY(false, 128, false);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_bf16_d64(const AttnArgs a) {
    ATTN_TC_BODY(true, 64, false);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_bf16_d128(const AttnArgs a) {
    ATTN_TC_BODY(true, 128, false);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_f16_hx_d64(const AttnArgs a) {
    ATTN_TC_BODY(false, 64, true);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_f16_hx_d128(const AttnArgs a) {
    ATTN_TC_BODY(false, 128, true);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_bf16_hx_d64(const AttnArgs a) {
    ATTN_TC_BODY(true, 64, true);
}
extern "C" __global__ void __launch_bounds__(ATC_THREADS) attention_tc_bf16_hx_d128(const AttnArgs a) {
    ATTN_TC_BODY(true, 128, true);
}
