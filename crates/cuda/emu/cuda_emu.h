// cuda_emu.h: just enough of CUDA C++ to run kernels/*.cu on the CPU, for
// checking kernel logic on machines without a GPU (see emu.cpp and
// scripts/build-cuda-emu.sh). Force-included before each kernel file.
//
// Model: one block at a time; its threads are fibers on one OS thread, run in
// turn until each reaches a barrier (__syncthreads, or a warp shuffle, which
// is two warp barriers: deposit, then read). Shared memory is plain static
// storage (one block at a time); dynamic shared memory is a NaN-filled buffer.
// f16 conversions are done in software (ENCDEC_CUDA_EMU branch of common.cuh).
//
// Tensor-core kernels (kernels/gemm_tc.cu, gemm_i8_tc.cu, attention_tc.cu): the
// PTX instructions they wrap are emulated with the PTX ISA's fragment layouts,
// as warp-collective operations (every lane deposits its operands at a warp
// barrier, then computes its own results from the whole warp's), so a kernel's fragment index arithmetic is
// checked, not assumed:
//   ldmatrix_x4        ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8j..8j+7
//                      give the row addresses of matrix j (16 B aligned, checked);
//                      lane l gets elements (l/4, 2(l%4)+{0,1}) of matrix j in r[j].
//                      It moves bits only, so the `const i8*` overload (gemm_i8_tc.cu)
//                      is the same instruction on int8 data: a matrix is 8 rows of
//                      16 bytes and lane l gets bytes 4(l%4)..+3 of row l/4.
//   ldmatrix_x4_trans  the same with .trans: lane l gets elements (2(l%4)+{0,1}, l/4)
//                      of matrix j in r[j] (attention_tc.cu loads V with it).
//   mma_m16n8k16_{f16,bf16}  mma.sync.aligned.m16n8k16.row.col.f32.X.X.f32: A, B
//                      rebuilt from the lanes' fragments, f32 products summed in f32
//                      in k order onto the accumulators.
//   mma_m16n8k32_s8    mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32: A (16x32),
//                      B (32x8) rebuilt from 4 / 2 registers of 4 int8 each (PTX ISA
//                      layout, see emu.cpp), exact integer products and sums onto
//                      the s32 accumulators (wrapping, as without .satfinite).
//   cp_async_16 / cp_async_commit / cp_async_wait<N>   cp.async.cg 16 B + groups:
//                      the source is read at issue, but the destination is written
//                      only when a wait_group retires its group, so a missing wait
//                      reads stale shared memory as on a GPU (alignment checked).
// A warp-wide operation reached by only some lanes, or by lanes at different
// operations (a shuffle here, an mma there), is reported as an error.
// Not checked: the tensor cores' own numerics beyond "operands rounded to
// f16/bf16, f32 accumulation" (their internal summation order and rounding;
// the int8 mma is exact, so there is nothing to model),
// the memory model (cp.async copies land in program order), shared-memory bank
// conflicts, occupancy and timing. The instructions' architecture
// requirements (sm_80) are checked only by scripts/check-kernels.sh.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>

#define ENCDEC_CUDA_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))

// CUDA's vector types (the members the kernels use; alignment as in CUDA).
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

struct emu_dim3 {
    unsigned x, y, z;
};
extern emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

void __syncthreads();
unsigned emu_shfl(unsigned bits, int src_lane, bool xor_mode);

inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline float __shfl_xor_sync(unsigned, float v, int m) { return __uint_as_float(emu_shfl(__float_as_uint(v), m, true)); }
inline unsigned __shfl_xor_sync(unsigned, unsigned v, int m) { return emu_shfl(v, m, true); }
inline float __shfl_sync(unsigned, float v, int src) { return __uint_as_float(emu_shfl(__float_as_uint(v), src, false)); }
inline unsigned __shfl_sync(unsigned, unsigned v, int src) { return emu_shfl(v, src, false); }

// ---- PTX instruction shims (kernels/gemm_tc.cu, gemm_i8_tc.cu; see the header comment) ----
enum EmuWarpOp {
    EMU_WARP_SHFL = 1,
    EMU_WARP_LDMATRIX,
    EMU_WARP_MMA_F16,
    EMU_WARP_MMA_BF16,
    EMU_WARP_MMA_S8,
    EMU_WARP_LDMATRIX_TRANS
};
// Deposits `bytes` (<= 32) of this lane at a warp barrier and copies all 32
// lanes' deposits into `all` (lane-major); `op` must be the same in every lane.
void emu_warp_exchange(int op, const void* mine, unsigned bytes, void* all);
// Records the first error of a launch (reported by emu_launch).
void emu_error(const char* what);
void emu_mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], bool bf16);
void emu_mma_m16n8k32_s8(int d[4], const unsigned a[4], const unsigned b[2]);
void emu_cp_async_16(void* dst, const void* src);
void emu_cp_async_commit();
void emu_cp_async_wait(int n);

inline void ldmatrix_x4(unsigned r[4], const unsigned short* p) {
    if ((uintptr_t)p & 15) emu_error("ldmatrix: row address not 16 B aligned");
    const unsigned char* rows[32];
    emu_warp_exchange(EMU_WARP_LDMATRIX, &p, sizeof(p), rows);
    const unsigned lane = threadIdx.x & 31;
    for (int j = 0; j < 4; ++j) memcpy(&r[j], rows[j * 8 + lane / 4] + (lane % 4) * 4, 4);
}
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 (attention_tc.cu, V as the B
// operand): lane l gets elements (2(l%4), l/4) (low half) and (2(l%4)+1, l/4)
// (high half) of matrix j in r[j], i.e. the fragment of the transposed matrix.
inline void ldmatrix_x4_trans(unsigned r[4], const unsigned short* p) {
    if ((uintptr_t)p & 15) emu_error("ldmatrix.trans: row address not 16 B aligned");
    const unsigned char* rows[32];
    emu_warp_exchange(EMU_WARP_LDMATRIX_TRANS, &p, sizeof(p), rows);
    const unsigned lane = threadIdx.x & 31;
    for (int j = 0; j < 4; ++j) {
        unsigned short lo, hi;
        memcpy(&lo, rows[j * 8 + 2 * (lane % 4)] + (lane / 4) * 2, 2);
        memcpy(&hi, rows[j * 8 + 2 * (lane % 4) + 1] + (lane / 4) * 2, 2);
        r[j] = (unsigned)lo | ((unsigned)hi << 16);
    }
}
// ldmatrix on int8 data (gemm_i8_tc.cu): the same b16 instruction, bits moved as they are.
inline void ldmatrix_x4(unsigned r[4], const signed char* p) {
    ldmatrix_x4(r, reinterpret_cast<const unsigned short*>(p));
}
inline void mma_m16n8k32_s8(int d[4], const unsigned a[4], const unsigned b[2]) { emu_mma_m16n8k32_s8(d, a, b); }
inline void mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma_m16n8k16(d, a, b, false);
}
inline void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma_m16n8k16(d, a, b, true);
}
inline void cp_async_16(void* dst_shared, const void* src_global) { emu_cp_async_16(dst_shared, src_global); }
inline void cp_async_commit() { emu_cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
    emu_cp_async_wait(N);
}

using std::max;
using std::min;
