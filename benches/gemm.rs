//! CPU GEMM benches: encdec's `gemm` / `gemm_packed` beside the `gemm` crate
//! and `matrixmultiply` (f32), in GFLOP/s ("elem/s" below is FLOP/s), plus
//! the FMA peak of this machine and the M = 1 GEMV in GB/s of weights streamed.
//!
//! Groups (filter with `cargo bench --bench gemm -- <group>`):
//! - `peak`: a tight FMA loop (12 independent zmm chains), 1 and all threads.
//! - `gemv_m1`: M = 1, weights cache-warm (bytes/s = weight bytes).
//! - `gemv_cold`: M = 1 rotating over 512 MiB of weights (DRAM-bound).
//! - `decode_m4`, `decode_m16`: M = 4, 16.
//! - `encode`: M = 128..1024, K = N in {512, 1024, 2048}.
//!
//! Shapes in ids are `m x k x n` (out = a[m,k] · w[n,k]^T).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use encdec_core::{bf16, f16};
use encdec_cpu::ops::gemm::{gemm, gemm_packed, PackedWeights, Weights};
use std::hint::black_box;
use std::time::Duration;

const DECODE_KN: [(usize, usize); 5] = [
    (512, 512),
    (512, 2048),
    (1024, 1024),
    (1024, 4096),
    (4096, 1024),
];

/// Deterministic values in [-1, 1) without the cost of a RNG per element.
fn fill(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

struct Ws {
    f32: Vec<f32>,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
    i8: Vec<i8>,
    scales: Vec<f32>,
}

fn weights(n: usize, k: usize) -> Ws {
    let f32 = fill(n * k, 7);
    let bf16 = f32.iter().map(|&x| bf16::from_f32(x)).collect();
    let f16 = f32.iter().map(|&x| f16::from_f32(x)).collect();
    let i8 = f32.iter().map(|&x| (x * 127.0).round() as i8).collect();
    let scales = vec![1.0 / 127.0; n];
    Ws {
        f32,
        bf16,
        f16,
        i8,
        scales,
    }
}

impl Ws {
    fn list(&self) -> [(&'static str, Weights<'_>); 4] {
        [
            ("f32", Weights::F32(&self.f32)),
            ("bf16", Weights::BF16(&self.bf16)),
            ("f16", Weights::F16(&self.f16)),
            (
                "int8",
                Weights::I8 {
                    data: &self.i8,
                    scales: &self.scales,
                },
            ),
        ]
    }
}

/// `gemm` crate: dst[m,n] = a[m,k] · rhs[k,n] with rhs(p, j) = w[j*k + p].
fn gemm_crate(m: usize, n: usize, k: usize, a: &[f32], w: &[f32], out: &mut [f32]) {
    let threads = threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: all three matrices are dense slices of the stated shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn mm_crate(m: usize, n: usize, k: usize, a: &[f32], w: &[f32], out: &mut [f32]) {
    // SAFETY: dense row-major a [m,k], w^T viewed with strides (1, k), out [m,n].
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Cores the GEMMs use (rayon's default pool size).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn bench_shape(c: &mut Criterion, group: &str, m: usize, k: usize, n: usize, bytes_tp: bool) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(if m * n * k > 1 << 28 {
            2000
        } else {
            1000
        }));
    let ws = weights(n, k);
    let a = fill(m * k, 3);
    let bias = fill(n, 5);
    let mut out = vec![0.0f32; m * n];
    let shape = format!("{m}x{k}x{n}");
    for (dt, w) in ws.list() {
        let wbytes = match dt {
            "f32" => 4,
            "bf16" | "f16" => 2,
            _ => 1,
        } * n
            * k;
        g.throughput(if bytes_tp {
            Throughput::Bytes(wbytes as u64)
        } else {
            Throughput::Elements((2 * m * n * k) as u64)
        });
        g.bench_function(BenchmarkId::new(format!("encdec/{dt}"), &shape), |b| {
            b.iter(|| gemm(m, n, k, black_box(&a), w, Some(&bias), &mut out))
        });
        let p = PackedWeights::new(n, k, w);
        g.bench_function(
            BenchmarkId::new(format!("encdec-packed/{dt}"), &shape),
            |b| b.iter(|| gemm_packed(m, black_box(&a), &p, Some(&bias), &mut out)),
        );
    }
    g.throughput(if bytes_tp {
        Throughput::Bytes((4 * n * k) as u64)
    } else {
        Throughput::Elements((2 * m * n * k) as u64)
    });
    g.bench_function(BenchmarkId::new("gemm-crate/f32", &shape), |b| {
        b.iter(|| gemm_crate(m, n, k, black_box(&a), &ws.f32, &mut out))
    });
    g.bench_function(BenchmarkId::new("matrixmultiply/f32", &shape), |b| {
        b.iter(|| mm_crate(m, n, k, black_box(&a), &ws.f32, &mut out))
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    for &(k, n) in &DECODE_KN {
        bench_shape(c, "gemv_m1", 1, k, n, true);
    }
    for &m in &[4, 16] {
        for &(k, n) in &DECODE_KN {
            bench_shape(c, &format!("decode_m{m}"), m, k, n, false);
        }
    }
}

fn encode(c: &mut Criterion) {
    for &m in &[128, 256, 512, 1024] {
        for &kn in &[512, 1024, 2048] {
            bench_shape(c, "encode", m, kn, kn, false);
        }
    }
}

/// M = 1 over a ring of weight copies totalling 512 MiB of f32 (256 MiB bf16,
/// 128 MiB int8), so every call streams its weights from DRAM.
fn gemv_cold(c: &mut Criterion) {
    let (k, n) = (4096, 1024);
    let copies = 32;
    let mut g = c.benchmark_group("gemv_cold");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(2000));
    let a = fill(k, 3);
    let mut out = vec![0.0f32; n];
    let shape = format!("1x{k}x{n}");
    let base = fill(n * k, 9);
    {
        let ring: Vec<Vec<f32>> = (0..copies).map(|_| base.clone()).collect();
        g.throughput(Throughput::Bytes((4 * n * k) as u64));
        let mut i = 0;
        g.bench_function(BenchmarkId::new("encdec/f32", &shape), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                gemm(1, n, k, &a, Weights::F32(&ring[i]), None, &mut out)
            })
        });
    }
    {
        let one: Vec<bf16> = base.iter().map(|&x| bf16::from_f32(x)).collect();
        let ring: Vec<Vec<bf16>> = (0..copies).map(|_| one.clone()).collect();
        g.throughput(Throughput::Bytes((2 * n * k) as u64));
        let mut i = 0;
        g.bench_function(BenchmarkId::new("encdec/bf16", &shape), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                gemm(1, n, k, &a, Weights::BF16(&ring[i]), None, &mut out)
            })
        });
    }
    {
        let one: Vec<i8> = base.iter().map(|&x| (x * 127.0) as i8).collect();
        let ring: Vec<Vec<i8>> = (0..copies).map(|_| one.clone()).collect();
        let scales = vec![1.0 / 127.0; n];
        g.throughput(Throughput::Bytes((n * k) as u64));
        let mut i = 0;
        g.bench_function(BenchmarkId::new("encdec/int8", &shape), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                let w = Weights::I8 {
                    data: &ring[i],
                    scales: &scales,
                };
                gemm(1, n, k, &a, w, None, &mut out)
            })
        });
    }
    g.finish();
}

/// 12 independent `vfmadd231ps zmm` chains per iteration: throughput-bound,
/// so FLOP/s = FMA ports x 16 lanes x 2 x clock.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop(iters: u64) {
    // SAFETY: register-only AVX-512 instructions (feature checked by the caller).
    unsafe {
        std::arch::asm!(
            "vxorps zmm0, zmm0, zmm0", "vxorps zmm1, zmm1, zmm1", "vxorps zmm2, zmm2, zmm2",
            "vxorps zmm3, zmm3, zmm3", "vxorps zmm4, zmm4, zmm4", "vxorps zmm5, zmm5, zmm5",
            "vxorps zmm6, zmm6, zmm6", "vxorps zmm7, zmm7, zmm7", "vxorps zmm8, zmm8, zmm8",
            "vxorps zmm9, zmm9, zmm9", "vxorps zmm10, zmm10, zmm10", "vxorps zmm11, zmm11, zmm11",
            "vxorps zmm14, zmm14, zmm14", "vxorps zmm15, zmm15, zmm15",
            "2:",
            "vfmadd231ps zmm0, zmm14, zmm15", "vfmadd231ps zmm1, zmm14, zmm15",
            "vfmadd231ps zmm2, zmm14, zmm15", "vfmadd231ps zmm3, zmm14, zmm15",
            "vfmadd231ps zmm4, zmm14, zmm15", "vfmadd231ps zmm5, zmm14, zmm15",
            "vfmadd231ps zmm6, zmm14, zmm15", "vfmadd231ps zmm7, zmm14, zmm15",
            "vfmadd231ps zmm8, zmm14, zmm15", "vfmadd231ps zmm9, zmm14, zmm15",
            "vfmadd231ps zmm10, zmm14, zmm15", "vfmadd231ps zmm11, zmm14, zmm15",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
            out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
            out("zmm10") _, out("zmm11") _, out("zmm14") _, out("zmm15") _,
        );
    }
}

/// A dependent chain of FMAs: time per FMA = latency (4 cycles), which gives the clock.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chain(iters: u64) {
    // SAFETY: register-only AVX-512 instructions (feature checked by the caller).
    unsafe {
        std::arch::asm!(
            "vxorps zmm0, zmm0, zmm0",
            "2:",
            "vfmadd231ps zmm0, zmm14, zmm15", "vfmadd231ps zmm0, zmm14, zmm15",
            "vfmadd231ps zmm0, zmm14, zmm15", "vfmadd231ps zmm0, zmm14, zmm15",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) iters => _,
            out("zmm0") _, out("zmm14") _, out("zmm15") _,
        );
    }
}

fn peak(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let iters = 1u64 << 22;
        let flops = iters * 12 * 16 * 2;
        let mut g = c.benchmark_group("peak");
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1500));
        g.throughput(Throughput::Elements(flops));
        // SAFETY: avx512f checked above.
        g.bench_function("fma_zmm/1thread", |b| b.iter(|| unsafe { fma_loop(iters) }));
        let threads = threads();
        g.throughput(Throughput::Elements(flops * threads as u64));
        g.bench_function(format!("fma_zmm/{threads}threads"), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        // SAFETY: as above.
                        s.spawn(|| unsafe { fma_loop(iters) });
                    }
                })
            })
        });
        // Clock: 4 dependent FMAs per iteration at 4 cycles each; elem/s = cycles/s.
        g.throughput(Throughput::Elements(iters * 16));
        // SAFETY: as above.
        g.bench_function("fma_latency_chain/cycles", |b| {
            b.iter(|| unsafe { fma_chain(iters) })
        });
        g.finish();
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = c;
}

criterion_group!(benches, peak, decode, gemv_cold, encode);
criterion_main!(benches);
