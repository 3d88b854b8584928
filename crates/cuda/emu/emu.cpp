// emu.cpp: a CPU emulator of the CUDA execution model for kernels/*.cu.
//
// Built by scripts/build-cuda-emu.sh into libencdec_cuda_emu.so; the CUDA
// backend loads it when ENCDEC_CUDA_EMU=/path/to/lib is set
// (`CudaBackend::emulated`), so the conformance tests in crates/cuda/tests run
// the real kernel code, launched with the real argument lists, on the CPU.
//
// What it checks: indexing, reductions, barriers placed so that the result
// does not depend on the order threads run in between barriers (fibers run one
// after another, so a missing barrier shows only when that order matters),
// divergent warp shuffles and deadlocks (reported as errors), kernel
// signatures against the Rust argument lists (mismatches read garbage), the
// fragment layouts of ldmatrix / mma.sync m16n8k16 (f16/bf16) and m16n8k32
// (s8) and cp.async groups (see
// cuda_emu.h: a wait_group left out reads stale shared memory).
// What it does not: real concurrency and the memory model, shared-memory and
// register limits, tensor-core internal rounding, timing.
#include <stdio.h>
#include <stdlib.h>

#include <deque>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_emu.h"

emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

// Dynamic shared memory (`extern __shared__ float smem[]`; the build script
// rewrites `extern __shared__` to `extern`).
alignas(16) float smem[1 << 16];

#include "kernels_all.inc"

// A context switch without system calls (ucontext's swapcontext saves the
// signal mask with a syscall each time, which made the emulator ~50x slower):
// push the callee-saved registers, swap stack pointers, pop. x86-64 SysV only.
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");

namespace {

enum State { RUNNABLE, AT_SYNC, AT_WARP, DONE };

// One cp.async copy in flight: the 16 source bytes (read at issue) and where
// they land when a wait_group retires their group.
struct AsyncCopy {
    void* dst;
    unsigned char data[16];
};

struct Fiber {
    void* sp;
    std::vector<char> stack;
    State state;
    unsigned tid;
    std::vector<AsyncCopy> open;                   // issued, not yet committed
    std::deque<std::vector<AsyncCopy>> committed;  // oldest first
};

void* sched_sp;
std::vector<Fiber> fibers;
Fiber* cur = nullptr;
unsigned slots[32][32];  // [warp][lane] shuffle values
unsigned char xslots[32][32][32];  // [warp][lane] emu_warp_exchange deposits
int xop[32][32];                   // [warp][lane] the warp operation a lane is at
std::string launch_error;          // first emu_error of the current launch
std::function<void()> body;

void set_thread(const Fiber& f) {
    threadIdx.x = f.tid;
    threadIdx.y = 0;
    threadIdx.z = 0;
}

void yield_as(State s) {
    cur->state = s;
    emu_switch(&cur->sp, sched_sp);
    set_thread(*cur);  // restore after other fibers ran
}

// First code a fiber runs (entered by `ret` from emu_switch); never returns.
extern "C" void emu_entry() {
    body();
    cur->state = DONE;
    emu_switch(&cur->sp, sched_sp);
    __builtin_trap();  // a finished fiber is never resumed
}

// A fresh stack whose first switch "returns" into emu_entry with the ABI's
// alignment (rsp = 8 mod 16 at function entry).
void* fresh_stack(std::vector<char>& stack) {
    uintptr_t top = (uintptr_t)(stack.data() + stack.size()) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;                 // fake return address of emu_entry
    *--sp = (void*)&emu_entry;       // popped by `ret`
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    return sp;
}

// Runs one block; returns an error message or "".
std::string run_block(unsigned nthreads) {
    const size_t stack_size = 256 * 1024;
    if (fibers.size() != nthreads) fibers = std::vector<Fiber>(nthreads);
    for (unsigned t = 0; t < nthreads; ++t) {
        Fiber& f = fibers[t];
        if (f.stack.size() != stack_size) f.stack.resize(stack_size);
        f.sp = fresh_stack(f.stack);
        f.state = RUNNABLE;
        f.tid = t;
        f.open.clear();
        f.committed.clear();
    }
    const unsigned nwarps = (nthreads + 31) / 32;
    // ENCDEC_CUDA_EMU_ORDER=reverse runs warps and lanes last to first: a
    // missing barrier usually shows in one of the two orders.
    static const bool reverse = [] {
        const char* o = getenv("ENCDEC_CUDA_EMU_ORDER");
        return o && strcmp(o, "reverse") == 0;
    }();
    for (;;) {
        bool progressed = false;
        for (unsigned wi = 0; wi < nwarps; ++wi) {
            const unsigned w = reverse ? nwarps - 1 - wi : wi;
            const unsigned lo = w * 32, hi = std::min(nthreads, lo + 32);
            for (unsigned ti = lo; ti < hi; ++ti) {
                const unsigned t = reverse ? hi - 1 - (ti - lo) : ti;
                Fiber& f = fibers[t];
                if (f.state != RUNNABLE) continue;
                cur = &f;
                set_thread(f);
                emu_switch(&sched_sp, f.sp);
                progressed = true;
            }
            unsigned at_warp = 0, at_sync = 0, done = 0;
            for (unsigned t = lo; t < hi; ++t) {
                at_warp += fibers[t].state == AT_WARP;
                at_sync += fibers[t].state == AT_SYNC;
                done += fibers[t].state == DONE;
            }
            if (at_warp > 0) {
                if (at_warp != hi - lo) {
                    return "warp " + std::to_string(w) + ": a shuffle reached by " + std::to_string(at_warp) +
                           " lanes while " + std::to_string(at_sync) + " wait at __syncthreads and " +
                           std::to_string(done) + " have exited (divergent shuffle)";
                }
                for (unsigned t = lo; t < hi; ++t) fibers[t].state = RUNNABLE;
                progressed = true;
            }
        }
        unsigned at_sync = 0, done = 0, runnable = 0;
        for (auto& f : fibers) {
            at_sync += f.state == AT_SYNC;
            done += f.state == DONE;
            runnable += f.state == RUNNABLE;
        }
        if (done == nthreads) return "";
        if (runnable > 0) continue;
        if (at_sync + done == nthreads) {
            for (auto& f : fibers)
                if (f.state == AT_SYNC) f.state = RUNNABLE;
            continue;
        }
        if (!progressed) return "deadlock: threads wait at different barriers";
    }
}

template <class... A, size_t... I>
void call_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*reinterpret_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
void call(void (*f)(A...), void** args) {
    call_impl(f, args, std::index_sequence_for<A...>{});
}

// A launch recorded for a CUDA graph (emu_record): the kernel and a copy of
// each argument value, unpacked with the kernel's parameter types (the
// caller's argument values are temporaries that are gone by replay time).
struct Recorded {
    virtual ~Recorded() = default;
    virtual void invoke() = 0;
    unsigned gx = 0, gy = 0, gz = 0, block = 0, smem = 0;
    const char* name = nullptr;
};

template <class... A>
struct RecordedArgs final : Recorded {
    void (*f)(A...);
    std::tuple<std::remove_cv_t<std::remove_reference_t<A>>...> vals;
    RecordedArgs(void (*f)(A...), std::remove_cv_t<std::remove_reference_t<A>>... v) : f(f), vals(v...) {}
    void invoke() override { std::apply(f, vals); }
};

template <class... A, size_t... I>
Recorded* record_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    return new RecordedArgs<A...>(f, *reinterpret_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
Recorded* record(void (*f)(A...), void** args) {
    return record_impl(f, args, std::index_sequence_for<A...>{});
}

struct Entry {
    const char* name;
    void (*invoke)(void**);
    Recorded* (*record)(void**);
};

#define K(name) {#name, [](void** a) { call(&name, a); }, [](void** a) { return record(&name, a); }}
const Entry table[] = {
#include "kernels_table.inc"
};

}  // namespace

void emu_error(const char* what) {
    if (launch_error.empty()) launch_error = what;
}

// Every lane of warp `w` must be at operation `op` (called after the deposit barrier).
static void check_same_op(unsigned w, int op) {
    for (unsigned l = 0; l < 32; ++l)
        if (xop[w][l] != op) {
            emu_error("lanes of one warp at different warp-wide operations (divergent shuffle/ldmatrix/mma)");
            return;
        }
}

// Called by shuffles: deposit, wait for the warp, read, wait again.
unsigned emu_shfl(unsigned bits, int lane_arg, bool xor_mode) {
    const unsigned t = cur->tid, w = t / 32, lane = t % 32;
    slots[w][lane] = bits;
    xop[w][lane] = EMU_WARP_SHFL;
    yield_as(AT_WARP);
    check_same_op(w, EMU_WARP_SHFL);
    const unsigned src = xor_mode ? (lane ^ (unsigned)lane_arg) & 31u : (unsigned)lane_arg & 31u;
    const unsigned r = slots[w][src];
    yield_as(AT_WARP);
    return r;
}

void emu_warp_exchange(int op, const void* mine, unsigned bytes, void* all) {
    const unsigned t = cur->tid, w = t / 32, lane = t % 32;
    memcpy(xslots[w][lane], mine, bytes);
    xop[w][lane] = op;
    yield_as(AT_WARP);
    check_same_op(w, op);
    for (unsigned l = 0; l < 32; ++l) memcpy((unsigned char*)all + l * bytes, xslots[w][l], bytes);
    yield_as(AT_WARP);
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.f32 with the PTX ISA's
// fragment layouts; lane L = 4 g + t (g = groupID, t = thread in group):
//   a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..]   a[2] = A[g][2t+8..]   a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]       (lower k in the low 16 bits)
//   d[0..1] = D[g][2t..2t+1]   d[2..3] = D[g+8][2t..2t+1]
void emu_mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], bool bf16) {
    const unsigned mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    unsigned all[32][6];
    emu_warp_exchange(bf16 ? EMU_WARP_MMA_BF16 : EMU_WARP_MMA_F16, mine, sizeof(mine), all);
    auto cvt = [bf16](unsigned bits) { return bf16 ? bf16_to_f32((u16)bits) : f16_to_f32((u16)bits); };
    float A[16][16], B[16][8];
    for (unsigned L = 0; L < 32; ++L) {
        const unsigned g = L / 4, t = L % 4;
        const unsigned* r = all[L];
        for (unsigned e = 0; e < 2; ++e) {
            A[g][2 * t + e] = cvt(r[0] >> (16 * e));
            A[g + 8][2 * t + e] = cvt(r[1] >> (16 * e));
            A[g][2 * t + 8 + e] = cvt(r[2] >> (16 * e));
            A[g + 8][2 * t + 8 + e] = cvt(r[3] >> (16 * e));
            B[2 * t + e][g] = cvt(r[4] >> (16 * e));
            B[2 * t + 8 + e][g] = cvt(r[5] >> (16 * e));
        }
    }
    const unsigned lane = cur->tid % 32, g = lane / 4, t = lane % 4;
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float s = d[i];
        for (unsigned k = 0; k < 16; ++k) s = fmaf(A[row][k], B[k][col], s);
        d[i] = s;
    }
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 with the PTX ISA's fragment
// layouts; lane L = 4 g + t, each register 4 int8 with the lowest k in the low byte:
//   a[0] = A[g][4t..4t+3]   a[1] = A[g+8][4t..]   a[2] = A[g][4t+16..]   a[3] = A[g+8][4t+16..]
//   b[0] = B[4t..4t+3][g]   b[1] = B[4t+16..4t+19][g]
//   d[0..1] = D[g][2t..2t+1]   d[2..3] = D[g+8][2t..2t+1]   (s32)
// Products and sums are exact integers; the accumulator wraps modulo 2^32.
void emu_mma_m16n8k32_s8(int d[4], const unsigned a[4], const unsigned b[2]) {
    const unsigned mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    unsigned all[32][6];
    emu_warp_exchange(EMU_WARP_MMA_S8, mine, sizeof(mine), all);
    auto s8 = [](unsigned bits, unsigned e) { return (int)(signed char)(unsigned char)(bits >> (8 * e)); };
    int A[16][32], B[32][8];
    for (unsigned L = 0; L < 32; ++L) {
        const unsigned g = L / 4, t = L % 4;
        const unsigned* r = all[L];
        for (unsigned e = 0; e < 4; ++e) {
            A[g][4 * t + e] = s8(r[0], e);
            A[g + 8][4 * t + e] = s8(r[1], e);
            A[g][4 * t + 16 + e] = s8(r[2], e);
            A[g + 8][4 * t + 16 + e] = s8(r[3], e);
            B[4 * t + e][g] = s8(r[4], e);
            B[4 * t + 16 + e][g] = s8(r[5], e);
        }
    }
    const unsigned lane = cur->tid % 32, g = lane / 4, t = lane % 4;
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = g + 8 * (i / 2), col = 2 * t + i % 2;
        long long s = 0;
        for (unsigned k = 0; k < 32; ++k) s += (long long)A[row][k] * B[k][col];
        d[i] = (int)(unsigned)((unsigned long long)(unsigned)d[i] + (unsigned long long)s);
    }
}

void emu_cp_async_16(void* dst, const void* src) {
    if (((uintptr_t)dst | (uintptr_t)src) & 15) emu_error("cp.async: 16 B copy with an unaligned address");
    AsyncCopy c;
    c.dst = dst;
    memcpy(c.data, src, 16);
    cur->open.push_back(c);
}

void emu_cp_async_commit() {
    cur->committed.push_back(std::move(cur->open));
    cur->open.clear();
}

// Retires (writes) all but the newest n committed groups of this thread.
void emu_cp_async_wait(int n) {
    while (cur->committed.size() > (size_t)std::max(n, 0)) {
        for (const AsyncCopy& c : cur->committed.front()) memcpy(c.dst, c.data, 16);
        cur->committed.pop_front();
    }
}

void __syncthreads() { yield_as(AT_SYNC); }

namespace {

// The kernel `name` and the launch shape checked, or an error message.
const Entry* find_kernel(const char* name, unsigned block, unsigned smem_bytes, std::string& why) {
    const Entry* e = nullptr;
    for (const auto& x : table)
        if (strcmp(x.name, name) == 0) e = &x;
    if (!e)
        why = "no such kernel in the emulator";
    else if (block == 0 || block > 1024 || block % 32 != 0)
        why = "block size " + std::to_string(block);
    else if (smem_bytes > sizeof(smem))
        why = "dynamic shared memory " + std::to_string(smem_bytes);
    else
        return e;
    return nullptr;
}

// Runs the grid, one block at a time, each block's threads running `run`.
template <class F>
int run_grid(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned block, unsigned smem_bytes,
             F&& run, char* err, size_t errlen) {
    gridDim = {gx, gy, gz};
    blockDim = {block, 1, 1};
    launch_error.clear();
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                blockIdx = {x, y, z};
                // Poison dynamic shared memory: reads before writes give NaN.
                const float nan = __uint_as_float(0x7fc00000u);
                std::fill(smem, smem + smem_bytes / 4, nan);
                // Captures one reference: fits std::function's inline storage (no allocation).
                body = [&run] { run(); };
                std::string m = run_block(block);
                if (m.empty() && !launch_error.empty()) m = launch_error;
                if (!m.empty()) {
                    m = "block (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + "): " + m;
                    snprintf(err, errlen, "%s: %s", name, m.c_str());
                    return 1;
                }
            }
    return 0;
}

}  // namespace

extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned block,
                          unsigned smem_bytes, void** args, char* err, size_t errlen) {
    std::string why;
    const Entry* e = find_kernel(name, block, smem_bytes, why);
    if (!e) {
        snprintf(err, errlen, "%s: %s", name, why.c_str());
        return 1;
    }
    return run_grid(name, gx, gy, gz, block, smem_bytes, [&] { e->invoke(args); }, err, errlen);
}

// Records a launch instead of running it: checks the kernel and shape as
// emu_launch does, copies the argument values, and returns a handle for
// emu_run_recorded / emu_free_recorded (null on error, with `err` set).
extern "C" void* emu_record(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned block,
                            unsigned smem_bytes, void** args, char* err, size_t errlen) {
    std::string why;
    const Entry* e = find_kernel(name, block, smem_bytes, why);
    if (!e) {
        snprintf(err, errlen, "%s: %s", name, why.c_str());
        return nullptr;
    }
    Recorded* r = e->record(args);
    r->name = e->name;
    r->gx = gx;
    r->gy = gy;
    r->gz = gz;
    r->block = block;
    r->smem = smem_bytes;
    return r;
}

// Runs a recorded launch (any number of times).
extern "C" int emu_run_recorded(void* handle, char* err, size_t errlen) {
    Recorded* r = static_cast<Recorded*>(handle);
    return run_grid(r->name, r->gx, r->gy, r->gz, r->block, r->smem, [r] { r->invoke(); }, err, errlen);
}

extern "C" void emu_free_recorded(void* handle) { delete static_cast<Recorded*>(handle); }
