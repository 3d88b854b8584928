// elementwise.cu: pointwise ops, activations, dtype casts and int8 quantisation.
//
// What it computes (reference: crates/cpu/src/ops/{elementwise,activation,cast}.rs)
//   add_assign_f32      x[i] += y[i % ylen]          (ylen = len(x): same shape; ylen = cols: row broadcast)
//   mul_assign_f32      x[i] *= y[i % ylen]
//   scale_f32           x[i] *= s
//   scatter_fill_f32    x[idx[j]] = value          (j < n_idx; bans ids in search on the device)
//   repetition_penalty_f32  s = x[idx[j]]: s < 0 ? s * p : s / p  (distinct idx; 0xffffffff skipped)
//   activation_f32      x[i] = act(x[i])             in place
//   gated_activation_f32 out[i] = act(gate[i]) * up[i]
//   cast_<from>_<to>    f32 <-> f16 <-> bf16, round to nearest even
//   dequantize_i8_<to>  out[r, c] = q[r, c] * scale[r]   (to f32, f16, bf16; f16/bf16 via f32)
//   quantize_i8_<from>  per row: scale = absmax / 127, q = round_half_even(x / scale)
//                       clamped to [-127, 127]; a zero (or NaN) scale gives q = 0
//
// Activation codes (crates/cuda/src/ops/elementwise.rs passes them):
//   0 ReLU      max(x, 0)
//   1 GELU      (x * 0.5) * (1 + erf(x * (1/sqrt 2)))                  (HF "gelu")
//   2 GELU-tanh (0.5 * x) * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))   (HF "gelu_new")
//   3 SiLU      x / (1 + exp(-x))
//   4 identity
// erff/tanhf/expf are CUDA's full-precision versions (no --use_fast_math): within
// 2 ulp of the exact value, as the CPU backend's vector approximations are.
//
// Layout: every tensor contiguous; `n` elements, row length `cols` where it matters.
// Launch shape: pointwise kernels are grid-stride loops, 256 threads, any grid
// (the launcher uses min(ceil(n / 256), 65535) blocks); quantize_i8_* runs one
// block of 256 threads per row (block-wide absmax with warp shuffles).
#include "common.cuh"

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

extern "C" __global__ void add_assign_f32(float* x, const float* y, i64 n, i64 ylen) {
    GRID_STRIDE(i, n) { x[i] += y[ylen == n ? i : i % ylen]; }
}

extern "C" __global__ void mul_assign_f32(float* x, const float* y, i64 n, i64 ylen) {
    GRID_STRIDE(i, n) { x[i] *= y[ylen == n ? i : i % ylen]; }
}

extern "C" __global__ void scale_f32(float* x, i64 n, float s) {
    GRID_STRIDE(i, n) { x[i] *= s; }
}

extern "C" __global__ void scatter_fill_f32(float* x, const u32* idx, i64 n_idx, float value) {
    GRID_STRIDE(j, n_idx) { x[idx[j]] = value; }
}

// HF's RepetitionPenaltyLogitsProcessor at the positions idx[j] (distinct;
// 0xffffffff marks an unused slot). IEEE multiply / divide, as the CPU's.
extern "C" __global__ void repetition_penalty_f32(float* x, const u32* idx, i64 n_idx, float penalty) {
    GRID_STRIDE(j, n_idx) {
        const u32 i = idx[j];
        if (i == 0xffffffffu) continue;
        const float s = x[i];
        x[i] = s < 0.0f ? s * penalty : s / penalty;
    }
}

extern "C" __global__ void activation_f32(float* x, i64 n, int act) {
    GRID_STRIDE(i, n) { x[i] = apply_act(act, x[i]); }
}

extern "C" __global__ void gated_activation_f32(const float* gate, const float* up, float* out, i64 n,
                                                int act) {
    GRID_STRIDE(i, n) { out[i] = apply_act(act, gate[i]) * up[i]; }
}

// ---- casts -----------------------------------------------------------------------

extern "C" __global__ void cast_f32_f16(const float* src, u16* dst, i64 n) {
    GRID_STRIDE(i, n) { dst[i] = f32_to_f16(src[i]); }
}
extern "C" __global__ void cast_f32_bf16(const float* src, u16* dst, i64 n) {
    GRID_STRIDE(i, n) { dst[i] = f32_to_bf16(src[i]); }
}
extern "C" __global__ void cast_f16_f32(const u16* src, float* dst, i64 n) {
    GRID_STRIDE(i, n) { dst[i] = f16_to_f32(src[i]); }
}
extern "C" __global__ void cast_bf16_f32(const u16* src, float* dst, i64 n) {
    GRID_STRIDE(i, n) { dst[i] = bf16_to_f32(src[i]); }
}
extern "C" __global__ void cast_f16_bf16(const u16* src, u16* dst, i64 n) {
    GRID_STRIDE(i, n) { dst[i] = f32_to_bf16(f16_to_f32(src[i])); }
}
extern "C" __global__ void cast_bf16_f16(const u16* src, u16* dst, i64 n) {
    GRID_STRIDE(i, n) { dst[i] = f32_to_f16(bf16_to_f32(src[i])); }
}

// ---- int8 ------------------------------------------------------------------------

extern "C" __global__ void dequantize_i8_f32(const i8* q, const float* scales, float* dst, i64 n,
                                             i64 cols) {
    GRID_STRIDE(i, n) { dst[i] = (float)q[i] * scales[i / cols]; }
}
extern "C" __global__ void dequantize_i8_f16(const i8* q, const float* scales, u16* dst, i64 n,
                                             i64 cols) {
    GRID_STRIDE(i, n) { dst[i] = f32_to_f16((float)q[i] * scales[i / cols]); }
}
extern "C" __global__ void dequantize_i8_bf16(const i8* q, const float* scales, u16* dst, i64 n,
                                              i64 cols) {
    GRID_STRIDE(i, n) { dst[i] = f32_to_bf16((float)q[i] * scales[i / cols]); }
}

// One block per row of `cols`: absmax, then q = rint(x / scale) (rint rounds half
// to even, as Rust's round_ties_even). Division, not a reciprocal multiply, so q
// matches the CPU op bit for bit.
template <class W>
__device__ void quantize_row(const typename W::T* src, i8* q, float* scales, i64 cols) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    const typename W::T* x = src + row * cols;
    i8* qr = q + row * cols;
    float amax = 0.0f;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) amax = fmaxf(amax, fabsf(W::load(x, c)));
    amax = block_max(amax, scratch);
    const float s = amax / 127.0f;
    if (threadIdx.x == 0) scales[row] = s;
    const bool zero = s == 0.0f || s != s;  // zero or NaN scale
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = zero ? 0.0f : fminf(127.0f, fmaxf(-127.0f, rintf(W::load(x, c) / s)));
        qr[c] = (i8)(int)v;
    }
}

extern "C" __global__ void __launch_bounds__(256) quantize_i8_f32(const float* src, i8* q, float* scales,
                                                                  i64 cols) {
    quantize_row<WF32>(src, q, scales, cols);
}
extern "C" __global__ void __launch_bounds__(256) quantize_i8_f16(const u16* src, i8* q, float* scales,
                                                                  i64 cols) {
    quantize_row<WF16>(src, q, scales, cols);
}
extern "C" __global__ void __launch_bounds__(256) quantize_i8_bf16(const u16* src, i8* q, float* scales,
                                                                   i64 cols) {
    quantize_row<WBF16>(src, q, scales, cols);
}
