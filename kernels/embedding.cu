// embedding.cu: embedding gather.
//
// What it computes (reference: crates/cpu/src/ops/embedding.rs)
//   embedding_<dtype>  out[i, c] = table[ids[i], c] * scale           (f32, f16, bf16)
//   embedding_i8       out[i, c] = (q[ids[i], c] * row_scale[ids[i]]) * scale
// `scale` is applied only when != 1 (as the CPU op), so an unscaled gather is a
// bit-exact copy. The launcher has checked every id against the vocabulary on
// the host (ids are uploaded from the host, which keeps a copy).
//
// Layout: ids u32 [n_ids]; table [vocab, cols] row-major (f32 / f16 bits / bf16
// bits / int8 + f32 scale per row); out f32 [n_ids, cols], contiguous.
// Launch shape: one block per id (grid.x = n_ids), 256 threads striding over cols.
#include "common.cuh"

template <class W>
__device__ void gather_rows(const u32* ids, const typename W::T* table, const float* row_scales,
                            float* out, i64 cols, float scale) {
    const i64 i = blockIdx.x;
    const i64 id = ids[i];
    const typename W::T* src = table + id * cols;
    float* dst = out + i * cols;
    const float rs = row_scales ? row_scales[id] : 1.0f;
    for (i64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = W::load(src, c);
        if (row_scales) v *= rs;
        if (scale != 1.0f) v *= scale;
        dst[c] = v;
    }
}

extern "C" __global__ void embedding_f32(const u32* ids, const float* table, float* out, i64 cols,
                                         float scale) {
    gather_rows<WF32>(ids, table, nullptr, out, cols, scale);
}
extern "C" __global__ void embedding_f16(const u32* ids, const u16* table, float* out, i64 cols,
                                         float scale) {
    gather_rows<WF16>(ids, table, nullptr, out, cols, scale);
}
extern "C" __global__ void embedding_bf16(const u32* ids, const u16* table, float* out, i64 cols,
                                          float scale) {
    gather_rows<WBF16>(ids, table, nullptr, out, cols, scale);
}
extern "C" __global__ void embedding_i8(const u32* ids, const i8* table, const float* row_scales, float* out,
                                        i64 cols, float scale) {
    gather_rows<WI8>(ids, table, row_scales, out, cols, scale);
}
