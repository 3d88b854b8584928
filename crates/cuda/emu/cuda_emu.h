// cuda_emu.h: just enough of CUDA C++ to run kernels/*.cu on the CPU, for
// checking kernel logic on machines without a GPU (see emu.cpp and
// scripts/build-cuda-emu.sh). Force-included before each kernel file.
//
// Model: one block at a time; its threads are fibers on one OS thread, run in
// turn until each reaches a barrier (__syncthreads, or a warp shuffle, which
// is two warp barriers: deposit, then read). Shared memory is plain static
// storage (one block at a time); dynamic shared memory is a NaN-filled buffer.
// f16 conversions are done in software (ENCDEC_CUDA_EMU branch of common.cuh).
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

using std::max;
using std::min;
