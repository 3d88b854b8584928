// common.cuh: helpers shared by every kernels/*.cu file.
//
// NVRTC has no include path here: crates/cuda hands this file to NVRTC as the
// header named "common.cuh" (nvrtcCreateProgram's header list), so each .cu file
// is self-contained apart from this one header. It needs no CUDA header either:
// f16/bf16 conversions are written with PTX `cvt` and bit operations, so the
// kernels compile with a bare libnvrtc (the pip wheel, or any toolkit).
//
// Contents
//   - fixed-width integer names (u8/i8/u16/u32/i64)
//   - f16 <-> f32 (PTX cvt, round to nearest even) and bf16 <-> f32 (bit
//     arithmetic, round to nearest even, NaN stays NaN), matching the `half` crate
//     the CPU backend uses
//   - warp_sum / warp_max (butterfly shuffles: every lane gets the result)
//   - block_sum / block_max for blockDim.x a multiple of 32 (<= 1024), f32
//   - weight loaders `load_w<T>` for the f32/f16/bf16/int8 weight dtypes
//   - AttnArgs and the attention helpers (bucket, limit, score, uniform row);
//     K/V may be f32, f16 or bf16, read through the loaders above
//   - pack2 (two f32 -> f16x2 / bf16x2) and, for sm_80+, PTX wrappers of
//     ldmatrix (.trans too), mma.sync m16n8k16 f16/bf16 and cp.async
//   - apply_act (activation codes) and the linear epilogues' stores
//     store_out / store_linear (out f32, f16 or bf16: OUT_* codes)
#pragma once

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu
// Largest finite f32 as a negative number: HF's additive padding mask value
// (torch.finfo(float32).min), the CPU backend's f32::MIN.
#define NEG_FLT_MAX (-3.402823466e+38f)
// Infinities without math headers.
#define POS_INF __uint_as_float(0x7f800000u)
#define NEG_INF __uint_as_float(0xff800000u)

// ---- dtype conversion --------------------------------------------------------

#ifndef ENCDEC_CUDA_EMU
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else
// The CPU emulator (crates/cuda/emu) has no PTX: the same conversions in software.
inline float f16_to_f32(u16 h) {
    const u32 sign = (u32)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24
        return sign ? -v : v;
    }
    if (e == 31) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}
inline u16 f32_to_f16(float f) {
    const u32 x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return (u16)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
    if (a >= 0x477ff000u) return (u16)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (a < 0x38800000u) return (u16)(sign | (u32)rintf(__uint_as_float(a) * 16777216.0f));  // subnormal
    const u32 r = a - 0x38000000u;  // rebias 127 -> 15
    return (u16)(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
}
#endif

__device__ __forceinline__ float bf16_to_f32(u16 b) {
    // bf16 is the high half of an f32: exact.
    return __uint_as_float(((u32)b) << 16);
}

__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        // NaN: keep the sign and top payload bits, force a quiet NaN (as `half`).
        return (u16)((u >> 16) | 0x0040u);
    }
    // Round to nearest, ties to even, on the 16 dropped bits.
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

// ---- weight element loaders --------------------------------------------------
// Weights arrive as raw bits: f32, f16 (u16 bits), bf16 (u16 bits) or int8 (the
// per-row scale is applied by the caller once per output, not per element).
// load: one element. unpack: the VEC elements of one 16-byte vector load (the
// GEMV's fast path), element i at the i-th lowest address (little endian).

struct WF32 {
    typedef float T;
    static constexpr int VEC = 4;
    static __device__ __forceinline__ float load(const float* p, i64 i) { return p[i]; }
    static __device__ __forceinline__ void unpack(const uint4& u, float (&v)[VEC]) {
        v[0] = __uint_as_float(u.x);
        v[1] = __uint_as_float(u.y);
        v[2] = __uint_as_float(u.z);
        v[3] = __uint_as_float(u.w);
    }
};
struct WF16 {
    typedef u16 T;
    static constexpr int VEC = 8;
    static __device__ __forceinline__ float load(const u16* p, i64 i) { return f16_to_f32(p[i]); }
    static __device__ __forceinline__ void unpack(const uint4& u, float (&v)[VEC]) {
        const u32 words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = f16_to_f32((u16)(words[i] & 0xffffu));
            v[2 * i + 1] = f16_to_f32((u16)(words[i] >> 16));
        }
    }
};
struct WBF16 {
    typedef u16 T;
    static constexpr int VEC = 8;
    static __device__ __forceinline__ float load(const u16* p, i64 i) { return bf16_to_f32(p[i]); }
    static __device__ __forceinline__ void unpack(const uint4& u, float (&v)[VEC]) {
        const u32 words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = bf16_to_f32((u16)(words[i] & 0xffffu));
            v[2 * i + 1] = bf16_to_f32((u16)(words[i] >> 16));
        }
    }
};
struct WI8 {
    typedef i8 T;
    static constexpr int VEC = 16;
    static __device__ __forceinline__ float load(const i8* p, i64 i) { return (float)p[i]; }
    static __device__ __forceinline__ void unpack(const uint4& u, float (&v)[VEC]) {
        const u32 words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int b = 0; b < 4; ++b) v[4 * i + b] = (float)(i8)((words[i] >> (8 * b)) & 0xffu);
    }
};

__device__ __forceinline__ bool aligned16(const void* p) { return ((u64)p & 15u) == 0; }

// ---- reductions ----------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 floats
// of shared memory. Contains __syncthreads: call from all threads of the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

// Max over the block; every thread gets the result. Same contract as block_sum.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : NEG_INF;
    return warp_max(t);
}

// ---- attention arguments ---------------------------------------------------------
// Shared by attention.cu and decode_attention.cu; mirrors `AttnArgs` in
// crates/cuda/src/ops/attention.rs (#[repr(C)], passed by value).
// q [B, Tq, H*D], k/v [Bkv, Tcap, H*D] (heads interleaved in the last dim, which
// is contiguous; batch/time strides in elements); q and out are f32, k and v
// f32, f16 or bf16 (both the same; the kernel's name says which, and it casts
// k/v to its element type); out [B, Tq, H*D] contiguous;
// key_mask f32 [Bkv, Tcap] or null; pos_bias f32 [H, Tq, kv_len] or null;
// kv_index u32 [B] or null (row b reads kv row b).
// rel_table f32 [rel_buckets, H] or null: T5's relative position bias, looked up
// per (query, key) (attn_rel_bias); rel_log_ratio is the f32
// ln(rel_max_distance / max_exact) of the host (encdec_core::backend::
// RelativeBiasSpec::log_ratio). Never together with pos_bias.
// positions u32 [2] or null: (q_offset, kv_len) read when the kernel runs, in
// place of the two fields (kv_len clamped to tcap), so that a decode step
// recorded once in a CUDA graph replays at every position (attn_pos); the host
// then plans the launch for kv_len = tcap. Never together with pos_bias.
struct AttnArgs {
    const float* q;
    const void* k;
    const void* v;
    float* out;
    const float* key_mask;
    const float* pos_bias;
    const u32* kv_index;
    const float* rel_table;
    const u32* positions;
    i64 q_sb, q_st, k_sb, k_st, v_sb, v_st;
    int batch, tq, heads, head_dim, tcap, kv_len, causal, q_offset;
    float scale;
    int rel_buckets, rel_max_distance, rel_bidirectional;
    float rel_log_ratio;
    // out's dtype (OUT_F32 / OUT_F16 / OUT_BF16, below): attention_tc.cu writes
    // any; the other attention kernels are launched with OUT_F32 only.
    int out_dt;
};

// The call's q_offset and kv_len: the fields, or read from a.positions (a
// recorded step). Read once per kernel and passed along (a modified copy of
// AttnArgs would go to local memory).
struct AttnPos {
    int q_offset, kv_len;
};
__device__ __forceinline__ AttnPos attn_pos(const AttnArgs& a) {
    if (a.positions) return {(int)min(a.positions[0], 0x7fffffffu), (int)min(a.positions[1], (u32)a.tcap)};
    return {a.q_offset, a.kv_len};
}

// HF T5Attention._relative_position_bucket of rel = key - query position, the
// steps of encdec_core::backend::relative_position_bucket: exact offsets below
// max_exact, then trunc(logf(n / max_exact) / log_ratio * (nb - max_exact)) in f32
// (IEEE division and logf: no fast math), clamped to the last bucket.
__device__ __forceinline__ int attn_rel_bucket(const AttnArgs& a, int rel) {
    int nb = a.rel_buckets, bucket = 0, n;
    if (a.rel_bidirectional) {
        nb /= 2;
        if (rel > 0) bucket += nb;
        n = rel < 0 ? -rel : rel;
    } else {
        n = rel < 0 ? -rel : 0;
    }
    const int max_exact = nb / 2;
    if (n < max_exact) return bucket + n;
    float x = logf((float)n / (float)max_exact) / a.rel_log_ratio * (float)(nb - max_exact);
    // Rust's `as` saturates (NaN -> 0); the result is clamped to [0, nb - 1] anyway.
    x = (x != x) ? 0.0f : fminf(fmaxf(x, -1073741824.0f), 1073741824.0f);
    int large = max_exact + (int)x;
    large = max(0, min(large, nb - 1));
    return bucket + large;
}

// The relative bias of the query at absolute position qpos (row i: q_offset + i), key j, head h.
__device__ __forceinline__ float attn_rel_bias(const AttnArgs& a, int h, int qpos, int j) {
    return a.rel_table[(i64)attn_rel_bucket(a, j - qpos) * a.heads + h];
}

// Keys query row i may attend to: kv_len, or with causal min(kv_len, q_offset + i + 1).
__device__ __forceinline__ int attn_limit(const AttnArgs& a, const AttnPos& p, int i) {
    return a.causal ? min(p.kv_len, p.q_offset + i + 1) : p.kv_len;
}

// scale * q.k is computed by the caller; this adds (bias + mask) in the CPU
// op's order: bias + mask first, then added to the dot product. The bias of
// (query at absolute position qpos, key j, head h) is bias_row[j] (pos_bias),
// or with a.rel_table the table entry of its bucket (the same f32 value).
__device__ __forceinline__ float attn_score(const AttnArgs& a, float dot, const float* bias_row,
                                            const float* mask_row, int h, int qpos, int j) {
    const bool has_bias = bias_row != nullptr || a.rel_table != nullptr;
    const float bias = bias_row ? bias_row[j] : (a.rel_table ? attn_rel_bias(a, h, qpos, j) : 0.0f);
    if (has_bias && mask_row) return dot + (bias + mask_row[j]);
    if (has_bias) return dot + bias;
    if (mask_row) return dot + mask_row[j];
    return dot;
}

// HF's fully masked row: every allowed score is f32::MIN, so HF's scores are all
// f32::MIN and its softmax is uniform over all kv_len keys (also those past the
// causal limit). Writes that mean of V for the D dims this lane owns. KV is the
// loader of V's dtype (WF32, WF16 or WBF16; vb is not deduced: WF32 by default).
template <class KV = WF32>
__device__ __forceinline__ void attn_uniform(const AttnArgs& a, const AttnPos& p, const typename KV::T* vb, float* orow,
                                             int first_d, int step) {
    const float w = 1.0f / (float)p.kv_len;
    for (int d = first_d; d < a.head_dim; d += step) {
        float acc = 0.0f;
        for (int j = 0; j < p.kv_len; ++j) acc = fmaf(w, KV::load(vb, (i64)j * a.v_st + d), acc);
        orow[d] = acc;
    }
}

// Two f32 -> one register of two f16 or bf16 (round to nearest even), lo in the low half.
template <bool BF16>
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    const u32 a = BF16 ? f32_to_bf16(lo) : f32_to_f16(lo);
    const u32 b = BF16 ? f32_to_bf16(hi) : f32_to_f16(hi);
    return a | (b << 16);
}

// ---- PTX wrappers of the tensor-core kernels (gemm_tc.cu, gemm_i8_tc.cu, attention_tc.cu) ----
// cp.async needs sm_80; the emulator defines the same functions in cuda_emu.h.
#if !defined(ENCDEC_CUDA_EMU) && (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800)
__device__ __forceinline__ u32 shared_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// Four 8x8 b16 matrices (for int8 data: four 8-row x 16-byte blocks); lanes
// 8j..8j+7 give the row addresses of matrix j, and lane l receives in r[j] the
// 4 bytes at 4 (l % 4) of row l / 4 of matrix j (b16: elements 2 (l % 4) + {0, 1}).
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_addr(p)));
}

// The same with .trans: lane l receives in r[j] the elements (2 (l % 4) + {0, 1}, l / 4)
// of matrix j (a column pair), i.e. the fragment of the transposed matrix; this
// gives the "col" B operand of mma from a row-major [k][n] tile (V in attention_tc.cu).
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_addr(p)));
}

// d += A (16x16, row) . B (16x8, col); f16 or bf16 operands, f32 accumulators.
__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// 16 bytes global -> shared, asynchronous (L1 bypassed); both addresses 16 B aligned.
__device__ __forceinline__ void cp_async_16(void* dst_shared, const void* src_global) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_addr(dst_shared)), "l"(src_global)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#endif

// ---- activations ------------------------------------------------------------
// Codes as crates/cuda/src/ops/elementwise.rs `act_code` passes them; shared by
// elementwise.cu (activation, gated_activation) and the GEMM epilogues, so a
// fused activation gives the same bits as the separate kernel.
#define ACT_RELU 0
#define ACT_GELU 1
#define ACT_GELU_TANH 2
#define ACT_SILU 3
#define ACT_IDENTITY 4

__device__ __forceinline__ float apply_act(int act, float x) {
    switch (act) {
        case ACT_RELU:
            return fmaxf(x, 0.0f);
        case ACT_GELU:
            return (x * 0.5f) * (1.0f + erff(x * 0.70710678118654752f));
        case ACT_GELU_TANH: {
            const float c = 0.7978845608028654f;  // sqrt(2/pi)
            return (0.5f * x) * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
        }
        case ACT_SILU:
            return x / (1.0f + expf(-x));
        default:
            return x;
    }
}

// Output dtypes of the linear kernels (`out_dt`; crates/cuda/src/ops/gemm.rs
// `out_code`): a half out receives the f32 result rounded to nearest even by
// the helpers above, the bits of an f32 out then elementwise.cu's cast.
#define OUT_F32 0
#define OUT_F16 1
#define OUT_BF16 2

// out[i] = v in out's dtype. Not inlined: inlined, the optimiser threads the
// fully unrolled epilogues' stores on out_dt into one copy of the whole
// epilogue (apply_act's erff/tanhf/expf included) per dtype, which made
// gemm.cu's PTX 2.6x (4.2 -> 11 MB) and NVRTC 3x slower; a call per stored
// element costs little next to the GEMM.
#ifdef ENCDEC_CUDA_EMU
inline void store_out(void* out, i64 i, float v, int out_dt) {
#else
__device__ __noinline__ void store_out(void* out, i64 i, float v, int out_dt) {
#endif
    if (out_dt == OUT_F16)
        static_cast<u16*>(out)[i] = f32_to_f16(v);
    else if (out_dt == OUT_BF16)
        static_cast<u16*>(out)[i] = f32_to_bf16(v);
    else
        static_cast<float*>(out)[i] = v;
}

// The linear kernels' last step: out[i] = act(v) (in out's dtype), or with
// accumulate (Backend::linear_add, the residual epilogue; out is then f32)
// out[i] += act(v), which is elementwise.cu's add_assign on the same value:
// the same bits as the unfused ops.
__device__ __forceinline__ void store_linear(void* out, i64 i, float v, int act, int accumulate, int out_dt) {
    v = apply_act(act, v);
    if (accumulate) {
        float* o = static_cast<float*>(out);
        o[i] = o[i] + v;
    } else {
        store_out(out, i, v, out_dt);
    }
}
