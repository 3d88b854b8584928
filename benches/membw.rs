//! Memory bandwidth floor for the bandwidth-bound ops (GEMV of decode steps):
//! streaming read (sum) and copy of 256 MiB, on 1 thread and on every core at
//! once (scoped threads; spawn cost is ~10 us against ~10 ms per pass). Read reports bytes read; copy reports bytes read + written.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const BYTES: usize = 256 << 20;

/// Sum of u64 words, 4 x 256-bit accumulators with AVX2 (memory-bound, not
/// compute-bound, at any DRAM speed); plain loop elsewhere.
fn read_sum(x: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 checked just above.
        return unsafe { read_sum_avx2(x) };
    }
    x.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_sum_avx2(x: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: c holds 16 u64, so 4 at offset 4i are readable.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * i) as *const __m256i) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut out = [0u64; 4];
    let s = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: out holds 4 u64.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, s) };
    out.iter().chain(tail).fold(0u64, |a, &b| a.wrapping_add(b))
}

fn membw(c: &mut Criterion) {
    let src: Vec<u64> = (0..BYTES / 8).map(|i| i as u64 * 2654435761).collect();
    let mut dst = vec![1u64; BYTES / 8];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = src.len().div_ceil(threads);
    let mut g = c.benchmark_group("membw");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    g.throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function("read_256MiB/1thread", |b| {
        b.iter(|| black_box(read_sum(black_box(&src))))
    });
    g.bench_function(format!("read_256MiB/{threads}threads"), |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = src
                    .chunks(chunk)
                    .map(|c| s.spawn(move || read_sum(c)))
                    .collect();
                black_box(
                    hs.into_iter()
                        .fold(0u64, |a, h| a.wrapping_add(h.join().unwrap())),
                )
            })
        })
    });

    g.throughput(Throughput::Bytes(2 * BYTES as u64));
    g.bench_function("copy_256MiB/1thread", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function(format!("copy_256MiB/{threads}threads"), |b| {
        b.iter(|| {
            std::thread::scope(|sc| {
                for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                    sc.spawn(move || d.copy_from_slice(black_box(s)));
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, membw);
criterion_main!(benches);
