//! End-to-end model benches: one decoder step and one encoder pass of random-weight
//! models with the exact shapes of one checkpoint per architecture variant the
//! models implement: opus-mt-en-de (Marian), t5-small (T5), flan-t5-small (T5
//! v1.1: gated GELU, untied lm_head), bart-base (BART: learned positions,
//! post-norm, embedding layer norm), m2m100_418M (M2M100/NLLB: sinusoidal
//! positions, pre-norm) and mt5-small (a 250k vocabulary: lm_head-bound), at
//! batch 1 and 16 (the larger two at batch 1 only).
//!
//! - `encoder/<arch>/b<B>`: `encode` of B sources (32 tokens at batch 1, 64 at
//!   batch 16: the source lengths of workloads W1 and W2), cross K/V included.
//! - `decode_step/<arch>/b<B>`: one `step` of B rows at cache position 32..64
//!   (greedy-decoding shape: embedding, self-attention over the cache,
//!   cross-attention, FFN, lm_head). The cache is refilled outside the timing
//!   whenever it runs out of room.
//!
//! - `generate/opus-mt-en-de/W1..W4`: one whole fixed-length generation of each
//!   workload of DESIGN.md (EOS disabled, exactly 64 new tokens), as `encdec bench`
//!   runs it (10 samples each; `encdec bench` reports the per-step and encoder
//!   breakdown of the same runs).
//!
//! Threads: all cores, or `ENCDEC_BENCH_THREADS`. Encoder and step run inside the
//! backend's pool (`Backend::run_scoped`), as the Generator runs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use encdec_core::{Backend, DType, Tensor};
use encdec_generate::{GenerationConfig, GenerationOverrides, Generator, Seq2SeqModel};
use encdec_models::catalogue;

/// (catalogue shape, batches).
const ARCHS: [(&str, &[usize]); 6] = [
    ("opus-mt-en-de", &[1, 16]),
    ("t5-small", &[1, 16]),
    ("flan-t5-small", &[1, 16]),
    ("bart-base", &[1, 16]),
    ("m2m100_418M", &[1]),
    ("mt5-small", &[1]),
];
/// Decoder positions the timed steps run at: the cache is prefilled to START.
const START: usize = 32;
const CAPACITY: usize = 64;

fn backend() -> Arc<dyn Backend> {
    let threads = std::env::var("ENCDEC_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Arc::new(encdec_cpu::CpuBackend::with_threads(threads))
}

fn sources(batch: usize, len: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..len)
                .map(|t| (10 + (b * 131 + t * 7919 + (b * t) % 17) % 31980) as u32)
                .collect()
        })
        .collect()
}

/// The random-weight model of `arch`, or None (with a note) when it cannot be built.
fn model(arch: &str, be: Arc<dyn Backend>) -> Option<Box<dyn Seq2SeqModel>> {
    let built = catalogue::get(arch)
        .map_err(|e| e.to_string())
        .and_then(|cfg| {
            encdec_models::random_model(&cfg, 0, be, DType::F32).map_err(|e| e.to_string())
        });
    match built {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("decode bench: skipping {arch}: {e}");
            None
        }
    }
}

fn bench_models(c: &mut Criterion) {
    let be = backend();
    for (arch, batches) in ARCHS {
        let Some(m) = model(arch, be.clone()) else {
            continue;
        };
        let vocab = m.spec().vocab_size;
        let start_id = m.spec().decoder_start_token_id;
        {
            let mut g = c.benchmark_group("encoder");
            g.sample_size(10).measurement_time(Duration::from_secs(3));
            for &b in batches {
                let src = sources(b, if b == 1 { 32 } else { 64 });
                g.bench_function(BenchmarkId::new(arch, format!("b{b}")), |bench| {
                    // as the Generator runs it: inside the backend's pool
                    bench.iter(|| {
                        let mut out = None;
                        be.run_scoped(&mut || out = Some(m.encode(&src).expect("encode")));
                        out
                    })
                });
            }
            g.finish();
        }
        let mut g = c.benchmark_group("decode_step");
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        for &b in batches {
            let src = sources(b, if b == 1 { 32 } else { 64 });
            let enc = m.encode(&src).expect("encode");
            let rows: Vec<u32> = (0..b as u32).collect();
            let tokens: Vec<u32> = (0..b).map(|i| 100 + i as u32).collect();
            let mut logits = Tensor::zeros([b, vocab], DType::F32);
            let fresh = |logits: &mut Tensor| {
                let mut st = m.start(&enc, &rows, CAPACITY).expect("start");
                let first = vec![start_id; b];
                m.step(&enc, &mut st, &first, logits).expect("step");
                while st.len < START {
                    m.step(&enc, &mut st, &tokens, logits).expect("step");
                }
                st
            };
            let mut state = fresh(&mut logits);
            g.bench_function(BenchmarkId::new(arch, format!("b{b}")), |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    // as the Generator runs it: inside the backend's pool
                    be.run_scoped(&mut || {
                        for _ in 0..iters {
                            if state.len >= CAPACITY {
                                state = fresh(&mut logits);
                            }
                            let t = Instant::now();
                            m.step(&enc, &mut state, &tokens, &mut logits)
                                .expect("step");
                            total += t.elapsed();
                        }
                    });
                    total
                })
            });
        }
        g.finish();
    }
}

/// DESIGN.md's workloads: (name, batch, source tokens, beams); 64 new tokens each.
const WORKLOADS: [(&str, usize, usize, usize); 4] = [
    ("W1", 1, 32, 1),
    ("W2", 16, 64, 1),
    ("W3", 4, 128, 4),
    ("W4", 1, 512, 1),
];

fn bench_generate(c: &mut Criterion) {
    let arch = "opus-mt-en-de";
    let Some(m) = model(arch, backend()) else {
        return;
    };
    let spec = m.spec();
    let file = serde_json::json!({
        "decoder_start_token_id": spec.decoder_start_token_id,
        "pad_token_id": spec.pad_token_id,
    });
    let mut g = c.benchmark_group("generate");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, batch, src_len, beams) in WORKLOADS {
        let over = GenerationOverrides {
            max_new_tokens: Some(64),
            min_new_tokens: Some(64),
            num_beams: Some(beams),
            eos_token_id: Some(Vec::new()),
            ..Default::default()
        };
        let cfg = GenerationConfig::from_values(&file, &over).expect("generation config");
        let src = sources(batch, src_len);
        g.bench_function(BenchmarkId::new(arch, name), |bench| {
            bench.iter(|| {
                let mut gen = Generator::new(m.as_ref(), cfg.clone()).expect("generator");
                let out = gen.generate(&src, None).expect("generate");
                assert_eq!(out[0][0].ids.len(), 64, "fixed-length generation");
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_models, bench_generate);
criterion_main!(benches);
