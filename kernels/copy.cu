// copy.cu: data movement; only the KV-cache writes into half caches round.
//
// What it computes (reference: crates/cpu/src/ops/copy.rs, Tensor::contiguous)
//   write_rows_b{2,4}      dst[b, start + t, c] = src[b, t, c]
//                          src [B, T, C] with C contiguous and element strides
//                          src_bs, src_ts of B and T (a fused QKV projection's
//                          K or V part: src_ts = 3C), dst [B, Tcap, C]
//                          contiguous (a decoder step written into a KV cache);
//                          start is start_at[0] when start_at is not null
//   write_rows_f32_to_{f16,bf16}
//                          the same rows, src f32, dst f16/bf16 (u16 bits), each
//                          rounded to nearest even as `cast` (and the `half`
//                          crate) rounds, NaN kept NaN: a half KV cache written
//                          from f32 projections without a cast tensor
//   index_select_b{1,2,4}  dst[i, :] = src[index[i], :], rows of `row` elements,
//                          index u32 [n] (beam reordering; int8 scales use b4)
//   gather_b{1,2,4}        dst[flat] = src[offset + sum_d idx_d * stride_d]: a strided
//                          view (rank <= 6, strides in elements) made contiguous
//                          in row-major order of the view
// `b1/b2/b4` is the element size in bytes: those kernels only move bits, so one
// kernel serves f32 and u32 (b4), f16 and bf16 (b2), int8 (b1).
//
// Launch shape: grid-stride loops over the destination elements (write_rows*:
// over the B*T*C source elements), 256 threads per block,
// min(ceil(n / 256), 65535) blocks. The View struct is passed by value.
#include "common.cuh"

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// start_at (u32 [1+] or null) replaces `start` when the kernel runs, so that a
// decode step recorded in a CUDA graph writes each replay's row; rows that
// would land past tcap are not written (the host checks `start` otherwise).
// Conv maps a source element to the stored one (bits, or a rounding).
template <class S, class D, class Conv>
__device__ void write_rows(const S* src, D* dst, i64 batch, i64 t, i64 tcap, i64 c, i64 src_bs,
                           i64 src_ts, i64 start, const u32* start_at, Conv conv) {
    if (start_at) start = (i64)start_at[0];
    const i64 n = batch * t * c;
    GRID_STRIDE(i, n) {
        const i64 ci = i % c;
        const i64 ti = (i / c) % t;
        const i64 bi = i / (c * t);
        if (start + ti < tcap) dst[(bi * tcap + start + ti) * c + ci] = conv(src[bi * src_bs + ti * src_ts + ci]);
    }
}

struct Bits {
    template <class T>
    __device__ T operator()(T x) const { return x; }
};
struct ToF16 {
    __device__ u16 operator()(float x) const { return f32_to_f16(x); }
};
struct ToBF16 {
    __device__ u16 operator()(float x) const { return f32_to_bf16(x); }
};

extern "C" __global__ void write_rows_b2(const u16* src, u16* dst, i64 batch, i64 t, i64 tcap, i64 c,
                                         i64 src_bs, i64 src_ts, i64 start, const u32* start_at) {
    write_rows(src, dst, batch, t, tcap, c, src_bs, src_ts, start, start_at, Bits());
}
extern "C" __global__ void write_rows_b4(const u32* src, u32* dst, i64 batch, i64 t, i64 tcap, i64 c,
                                         i64 src_bs, i64 src_ts, i64 start, const u32* start_at) {
    write_rows(src, dst, batch, t, tcap, c, src_bs, src_ts, start, start_at, Bits());
}
extern "C" __global__ void write_rows_f32_to_f16(const float* src, u16* dst, i64 batch, i64 t, i64 tcap,
                                                 i64 c, i64 src_bs, i64 src_ts, i64 start,
                                                 const u32* start_at) {
    write_rows(src, dst, batch, t, tcap, c, src_bs, src_ts, start, start_at, ToF16());
}
extern "C" __global__ void write_rows_f32_to_bf16(const float* src, u16* dst, i64 batch, i64 t,
                                                  i64 tcap, i64 c, i64 src_bs, i64 src_ts,
                                                  i64 start, const u32* start_at) {
    write_rows(src, dst, batch, t, tcap, c, src_bs, src_ts, start, start_at, ToBF16());
}

template <class T>
__device__ void index_select(const T* src, const u32* index, T* dst, i64 n_index, i64 row) {
    const i64 n = n_index * row;
    GRID_STRIDE(i, n) {
        const i64 r = i / row;
        dst[i] = src[(i64)index[r] * row + (i - r * row)];
    }
}

extern "C" __global__ void index_select_b1(const u8* src, const u32* index, u8* dst, i64 n_index, i64 row) {
    index_select<u8>(src, index, dst, n_index, row);
}
extern "C" __global__ void index_select_b2(const u16* src, const u32* index, u16* dst, i64 n_index,
                                           i64 row) {
    index_select<u16>(src, index, dst, n_index, row);
}
extern "C" __global__ void index_select_b4(const u32* src, const u32* index, u32* dst, i64 n_index,
                                           i64 row) {
    index_select<u32>(src, index, dst, n_index, row);
}

// A strided view: element (i_0, .., i_{rank-1}) is src[offset + sum i_d * strides[d]].
// Mirrors `GatherView` in crates/cuda/src/ops/copy.rs (#[repr(C)]).
struct View {
    i64 dims[6];
    i64 strides[6];
    i64 offset;
    i64 n;
    int rank;
};

template <class T>
__device__ void gather(const T* src, T* dst, const View v) {
    GRID_STRIDE(i, v.n) {
        i64 rest = i, pos = v.offset;
        for (int d = v.rank - 1; d >= 0; --d) {
            const i64 id = rest % v.dims[d];
            rest /= v.dims[d];
            pos += id * v.strides[d];
        }
        dst[i] = src[pos];
    }
}

extern "C" __global__ void gather_b1(const u8* src, u8* dst, const View v) { gather<u8>(src, dst, v); }
extern "C" __global__ void gather_b2(const u16* src, u16* dst, const View v) { gather<u16>(src, dst, v); }
extern "C" __global__ void gather_b4(const u32* src, u32* dst, const View v) { gather<u32>(src, dst, v); }
