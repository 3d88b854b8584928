// softmax.cu: row-wise softmax and log-softmax over the last dim, in place.
//
// What it computes (reference: crates/cpu/src/ops/softmax.rs), per row, in f32:
//   m = max(x), s = sum(exp(x - m))
//   softmax_f32      x = exp(x - m) * (1 / s)
//   log_softmax_f32  x = (x - m) - ln(s)
//   softmax_stats_f32  out[row] = (m, s), x untouched (search on the device:
//                      the chosen id's log-prob without fetching the row)
// A row of f32::MIN (HF's fully masked row) gives the uniform distribution; a
// row of -inf gives NaN, as in PyTorch. expf/logf are full precision.
//
// Layout: x contiguous [rows, cols]; out (softmax_stats) contiguous [rows, 2].
// Launch shape: one block per row (grid.x = rows), blockDim.x a multiple of 32
// (256, or 32 * ceil(cols / 32) when cols < 256); three passes over the row
// (max, sum, write), warp-shuffle + block reductions.
#include "common.cuh"

__device__ __forceinline__ void row_stats(const float* x, i64 cols, float* scratch, float* m_out,
                                          float* s_out) {
    float m = NEG_INF;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, x[c]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) s += expf(x[c] - m);
    s = block_sum(s, scratch);
    *m_out = m;
    *s_out = s;
}

extern "C" __global__ void __launch_bounds__(1024) softmax_f32(float* x, i64 cols) {
    __shared__ float scratch[32];
    float* r = x + (i64)blockIdx.x * cols;
    float m, s;
    row_stats(r, cols, scratch, &m, &s);
    const float inv = 1.0f / s;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) r[c] = expf(r[c] - m) * inv;
}

extern "C" __global__ void __launch_bounds__(1024) log_softmax_f32(float* x, i64 cols) {
    __shared__ float scratch[32];
    float* r = x + (i64)blockIdx.x * cols;
    float m, s;
    row_stats(r, cols, scratch, &m, &s);
    const float ls = logf(s);
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) r[c] = (r[c] - m) - ls;
}

extern "C" __global__ void __launch_bounds__(1024) softmax_stats_f32(const float* x, i64 cols, float* out) {
    __shared__ float scratch[32];
    const float* r = x + (i64)blockIdx.x * cols;
    float m, s;
    row_stats(r, cols, scratch, &m, &s);
    if (threadIdx.x == 0) {
        out[2 * (i64)blockIdx.x] = m;
        out[2 * (i64)blockIdx.x + 1] = s;
    }
}
