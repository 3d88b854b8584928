// norm.cu: layer norm and T5's RMS norm over the last dim, plain and fused with
// the residual add.
//
// What it computes (reference: crates/cpu/src/ops/norm.rs), per row of n = cols:
//   layer_norm_f32      mean = sum(x)/n, var = sum((x - mean)^2)/n (biased, two passes),
//                       out = (x - mean) * (1/sqrt(var + eps)) * w + b      (b may be null)
//   rms_norm_f32        var = sum(x^2)/n, out = w * (x * (1/sqrt(var + eps)))  (HF T5LayerNorm)
//   add_layer_norm_f32  residual += x, then out = layer_norm(residual)
//   add_rms_norm_f32    residual += x, then out = rms_norm(residual)
//   <name>_to_{f16,bf16}  the same, out f16/bf16 (u16 bits): each f32 result
//                       rounded to nearest even as `cast` rounds (NaN stays NaN).
//                       A pre-LN block's normalised input, which the tensor-core
//                       GEMMs round to the weight dtype anyway (half activations,
//                       Backend::activation_dtype); x and residual stay f32.
// All arithmetic in f32 with f32 accumulation (per-thread partial sums, then
// warp-shuffle and block reductions). The fused variants write the updated
// residual in the first pass and read it back (each thread re-reads only the
// elements it wrote, so no barrier is needed between the passes for that).
//
// Layout: x, residual, out contiguous [rows, cols]; w, b f32 [cols] (the launcher
// converts f16/bf16 norm weights to f32 first).
// Launch shape: one block per row (grid.x = rows), blockDim.x a multiple of 32
// (the launcher uses 256, or 32 * ceil(cols / 32) when cols < 256).
#include "common.cuh"

// How a result is stored: f32 as is, or rounded to f16 / bf16 bits.
struct StoreF32 {
    typedef float T;
    __device__ static float conv(float v) { return v; }
};
struct StoreF16 {
    typedef u16 T;
    __device__ static u16 conv(float v) { return f32_to_f16(v); }
};
struct StoreBF16 {
    typedef u16 T;
    __device__ static u16 conv(float v) { return f32_to_bf16(v); }
};

template <class S>
__device__ __forceinline__ void layer_norm_row(const float* x, const float* w, const float* b,
                                               typename S::T* out, i64 cols, float eps, float* scratch) {
    float s = 0.0f;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) s += x[c];
    const float mean = block_sum(s, scratch) / (float)cols;
    float ss = 0.0f;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) {
        const float d = x[c] - mean;
        ss = fmaf(d, d, ss);
    }
    const float var = block_sum(ss, scratch) / (float)cols;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = (x[c] - mean) * rstd * w[c];
        if (b) v += b[c];
        out[c] = S::conv(v);
    }
}

template <class S>
__device__ __forceinline__ void rms_norm_row(const float* x, const float* w, typename S::T* out, i64 cols,
                                             float eps, float* scratch) {
    float ss = 0.0f;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) ss = fmaf(x[c], x[c], ss);
    const float var = block_sum(ss, scratch) / (float)cols;
    const float r = 1.0f / sqrtf(var + eps);
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) out[c] = S::conv(w[c] * (x[c] * r));
}

// residual[row] += x[row] (same thread -> same elements as the later passes).
__device__ __forceinline__ void add_into(const float* x, float* r, i64 cols) {
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) r[c] += x[c];
}

template <class S>
__device__ __forceinline__ void layer_norm(const float* x, const float* w, const float* b, typename S::T* out,
                                           i64 cols, float eps) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    layer_norm_row<S>(x + row * cols, w, b, out + row * cols, cols, eps, scratch);
}

template <class S>
__device__ __forceinline__ void rms_norm(const float* x, const float* w, typename S::T* out, i64 cols,
                                         float eps) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    rms_norm_row<S>(x + row * cols, w, out + row * cols, cols, eps, scratch);
}

template <class S>
__device__ __forceinline__ void add_layer_norm(const float* x, float* residual, const float* w,
                                               const float* b, typename S::T* out, i64 cols, float eps) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    float* r = residual + row * cols;
    add_into(x + row * cols, r, cols);
    layer_norm_row<S>(r, w, b, out + row * cols, cols, eps, scratch);
}

template <class S>
__device__ __forceinline__ void add_rms_norm(const float* x, float* residual, const float* w,
                                             typename S::T* out, i64 cols, float eps) {
    __shared__ float scratch[32];
    const i64 row = blockIdx.x;
    float* r = residual + row * cols;
    add_into(x + row * cols, r, cols);
    rms_norm_row<S>(r, w, out + row * cols, cols, eps, scratch);
}

extern "C" __global__ void __launch_bounds__(1024)
    layer_norm_f32(const float* x, const float* w, const float* b, float* out, i64 cols, float eps) {
    layer_norm<StoreF32>(x, w, b, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_f32(const float* x, const float* w, float* out, i64 cols, float eps) {
    rms_norm<StoreF32>(x, w, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024) add_layer_norm_f32(
    const float* x, float* residual, const float* w, const float* b, float* out, i64 cols, float eps) {
    add_layer_norm<StoreF32>(x, residual, w, b, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024) add_rms_norm_f32(
    const float* x, float* residual, const float* w, float* out, i64 cols, float eps) {
    add_rms_norm<StoreF32>(x, residual, w, out, cols, eps);
}

extern "C" __global__ void __launch_bounds__(1024)
    layer_norm_f32_to_f16(const float* x, const float* w, const float* b, u16* out, i64 cols, float eps) {
    layer_norm<StoreF16>(x, w, b, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_f32_to_f16(const float* x, const float* w, u16* out, i64 cols, float eps) {
    rms_norm<StoreF16>(x, w, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024) add_layer_norm_f32_to_f16(
    const float* x, float* residual, const float* w, const float* b, u16* out, i64 cols, float eps) {
    add_layer_norm<StoreF16>(x, residual, w, b, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024) add_rms_norm_f32_to_f16(
    const float* x, float* residual, const float* w, u16* out, i64 cols, float eps) {
    add_rms_norm<StoreF16>(x, residual, w, out, cols, eps);
}

extern "C" __global__ void __launch_bounds__(1024)
    layer_norm_f32_to_bf16(const float* x, const float* w, const float* b, u16* out, i64 cols, float eps) {
    layer_norm<StoreBF16>(x, w, b, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024)
    rms_norm_f32_to_bf16(const float* x, const float* w, u16* out, i64 cols, float eps) {
    rms_norm<StoreBF16>(x, w, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024) add_layer_norm_f32_to_bf16(
    const float* x, float* residual, const float* w, const float* b, u16* out, i64 cols, float eps) {
    add_layer_norm<StoreBF16>(x, residual, w, b, out, cols, eps);
}
extern "C" __global__ void __launch_bounds__(1024) add_rms_norm_f32_to_bf16(
    const float* x, float* residual, const float* w, u16* out, i64 cols, float eps) {
    add_rms_norm<StoreBF16>(x, residual, w, out, cols, eps);
}
