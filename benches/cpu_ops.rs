//! CPU backend ops (all but the GEMM, see `benches/gemm.rs`; `linear_gated`,
//! the gated FFN's fused up projections, and `linear_add`, a sublayer's output
//! projection into the residual stream, are here) at real model shapes,
//! through the `Backend` trait of a `CpuBackend` with one thread per core.
//!
//! One group per op, named `<op>/cpu/f32`; ids are the shape. Throughput is
//! bytes/s of the tensors read and written for memory-bound ops, elements/s for
//! softmax/top-k/activations, and FLOP/s ("elem/s") for attention and
//! batched_matmul. Filter with `cargo bench --bench cpu_ops -- <group>`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use encdec_core::testing::{random_normal, random_vec};
use encdec_core::{Activation, AttentionParams, Backend, DType, NormKind, Tensor};
use encdec_cpu::CpuBackend;

fn f32t(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(random_normal(seed, n, 1.0), shape).unwrap()
}

/// Rows x d_model of the norm/elementwise groups: one decode row, a batch of
/// decode rows, an encoder batch.
const NORM_SHAPES: [(usize, usize); 4] = [(1, 512), (16, 768), (256, 1024), (1024, 1024)];

fn norms(c: &mut Criterion) {
    let be = CpuBackend::new();
    for (name, kind) in [
        ("rms_norm", NormKind::RmsNorm),
        ("layer_norm", NormKind::LayerNorm),
    ] {
        let mut g = c.benchmark_group(format!("{name}/cpu/f32"));
        for (rows, d) in NORM_SHAPES {
            let x = f32t(1, &[rows, d]);
            let w = f32t(2, &[d]);
            let b = f32t(3, &[d]);
            let bias = (kind == NormKind::LayerNorm).then_some(&b);
            let mut out = Tensor::zeros([rows, d], DType::F32);
            g.throughput(Throughput::Bytes((2 * rows * d * 4) as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{rows}x{d}")), |bch| {
                bch.iter(|| be.norm(kind, &x, &w, bias, 1e-6, &mut out).unwrap())
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("add_norm/cpu/f32");
    for (rows, d) in NORM_SHAPES {
        let x = f32t(1, &[rows, d]);
        let mut res = f32t(4, &[rows, d]);
        let w = f32t(2, &[d]);
        let mut out = Tensor::zeros([rows, d], DType::F32);
        // x read, residual read + written, out written.
        g.throughput(Throughput::Bytes((4 * rows * d * 4) as u64));
        g.bench_function(
            BenchmarkId::from_parameter(format!("rms/{rows}x{d}")),
            |bch| {
                bch.iter(|| {
                    be.add_norm(NormKind::RmsNorm, &x, &mut res, &w, None, 1e-6, &mut out)
                        .unwrap();
                    // Keep the residual bounded across iterations.
                    be.scale(&mut res, 0.5).unwrap();
                })
            },
        );
    }
    g.finish();
}

fn softmaxes(c: &mut Criterion) {
    let be = CpuBackend::new();
    for name in ["softmax", "log_softmax"] {
        let mut g = c.benchmark_group(format!("{name}/cpu/f32"));
        for rows in [1usize, 4, 16, 64] {
            let vocab = 32128;
            let mut x = f32t(5, &[rows, vocab]);
            g.throughput(Throughput::Elements((rows * vocab) as u64));
            g.bench_function(
                BenchmarkId::from_parameter(format!("{rows}x{vocab}")),
                |bch| {
                    // In place on its own output: (log-)probabilities stay well-scaled
                    // inputs, and no copy is timed.
                    bch.iter(|| {
                        if name == "softmax" {
                            be.softmax(&mut x).unwrap()
                        } else {
                            be.log_softmax(&mut x).unwrap()
                        }
                    })
                },
            );
        }
        g.finish();
    }
}

fn activations(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("activation/cpu/f32");
    // d_ff of t5-small/bart-base (2048, 3072) at decode and encoder batch sizes.
    for (act, name) in [
        (Activation::Relu, "relu"),
        (Activation::Gelu, "gelu"),
        (Activation::GeluTanh, "gelu_tanh"),
        (Activation::Silu, "silu"),
    ] {
        for (rows, d) in [(16usize, 2048usize), (512, 3072)] {
            let x0 = f32t(6, &[rows, d]);
            let mut x = f32t(6, &[rows, d]);
            g.throughput(Throughput::Elements((rows * d) as u64));
            g.bench_function(BenchmarkId::new(name, format!("{rows}x{d}")), |bch| {
                // Fresh inputs each time (repeated GELU would drift into denormals);
                // the copy is part of the time.
                bch.iter(|| {
                    x.as_f32_mut()
                        .unwrap()
                        .copy_from_slice(x0.as_f32().unwrap());
                    be.activation(&mut x, act).unwrap()
                })
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("gated_activation/cpu/f32");
    for (rows, d) in [(16usize, 2048usize), (512, 2048)] {
        let gate = f32t(7, &[rows, d]);
        let up = f32t(8, &[rows, d]);
        let mut out = Tensor::zeros([rows, d], DType::F32);
        g.throughput(Throughput::Elements((rows * d) as u64));
        g.bench_function(
            BenchmarkId::new("gelu_tanh", format!("{rows}x{d}")),
            |bch| {
                bch.iter(|| {
                    be.gated_activation(&gate, &up, Activation::GeluTanh, &mut out)
                        .unwrap()
                })
            },
        );
    }
    g.finish();
    // The gated FFN's up projections as one op (flan-t5-base: 768 -> 2048),
    // beside the unfused two linears + gated_activation. GEMM-dominated; the
    // gap is the temporaries' allocation and the extra pass. FLOP/s.
    let mut g = c.benchmark_group("linear_gated/cpu/f32");
    let (k, n) = (768usize, 2048usize);
    let wg = Tensor::from_f32(random_normal(11, n * k, 0.05), [n, k]).unwrap();
    let wu = Tensor::from_f32(random_normal(12, n * k, 0.05), [n, k]).unwrap();
    for rows in [1usize, 16, 256] {
        let x = f32t(13, &[rows, k]);
        let mut out = Tensor::zeros([rows, n], DType::F32);
        let (mut gate, mut up) = (
            Tensor::zeros([rows, n], DType::F32),
            Tensor::zeros([rows, n], DType::F32),
        );
        let act = Activation::GeluTanh;
        g.throughput(Throughput::Elements((4 * rows * n * k) as u64));
        let id = format!("{rows}x{k}x{n}");
        g.bench_function(BenchmarkId::new("fused", &id), |bch| {
            bch.iter(|| be.linear_gated(&x, &wg, &wu, act, &mut out).unwrap())
        });
        g.bench_function(BenchmarkId::new("unfused", &id), |bch| {
            bch.iter(|| {
                be.linear(&x, &wg, None, &mut gate).unwrap();
                be.linear(&x, &wu, None, &mut up).unwrap();
                be.gated_activation(&gate, &up, act, &mut out).unwrap()
            })
        });
    }
    g.finish();
    // A sublayer's close (bart-base fc2: 3072 -> 768, LayerNorm after):
    // linear_add into the residual stream then norm, beside linear then
    // add_norm (the models before the residual epilogue). FLOP/s.
    let mut g = c.benchmark_group("linear_add/cpu/f32");
    let (k, n) = (3072usize, 768usize);
    let w = Tensor::from_f32(random_normal(14, n * k, 0.02), [n, k]).unwrap();
    let (nw, nb, bias) = (f32t(15, &[n]), f32t(16, &[n]), f32t(17, &[n]));
    for rows in [1usize, 16, 256] {
        let x = f32t(18, &[rows, k]);
        let mut h = f32t(19, &[rows, n]);
        let mut y = Tensor::zeros([rows, n], DType::F32);
        let mut xn = Tensor::zeros([rows, n], DType::F32);
        let ln = NormKind::LayerNorm;
        g.throughput(Throughput::Elements((2 * rows * n * k) as u64));
        let id = format!("{rows}x{k}x{n}");
        g.bench_function(BenchmarkId::new("fused+norm", &id), |bch| {
            bch.iter(|| {
                be.linear_add(&x, &w, Some(&bias), &mut h).unwrap();
                be.norm(ln, &h, &nw, Some(&nb), 1e-5, &mut xn).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("linear+add_norm", &id), |bch| {
            bch.iter(|| {
                be.linear(&x, &w, Some(&bias), &mut y).unwrap();
                be.add_norm(ln, &y, &mut h, &nw, Some(&nb), 1e-5, &mut xn)
                    .unwrap()
            })
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("add_assign/cpu/f32");
    for (rows, d) in NORM_SHAPES {
        let mut x = f32t(9, &[rows, d]);
        let y = f32t(10, &[rows, d]);
        g.throughput(Throughput::Bytes((3 * rows * d * 4) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{rows}x{d}")), |bch| {
            bch.iter(|| be.add_assign(&mut x, &y).unwrap())
        });
    }
    g.finish();
}

fn embedding(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("embedding/cpu/f32");
    let vocab = 32128;
    for d in [512usize, 1024] {
        let table = f32t(11, &[vocab, d]);
        let tb = be.cast(&table, DType::BF16).unwrap();
        for n in [16usize, 1024] {
            let ids: Vec<u32> = (0..n).map(|i| ((i * 7919) % vocab) as u32).collect();
            let ids = Tensor::from_u32(ids, [n]).unwrap();
            let mut out = Tensor::zeros([n, d], DType::F32);
            g.throughput(Throughput::Bytes((2 * n * d * 4) as u64));
            g.bench_function(BenchmarkId::new("f32", format!("{n}x{d}")), |bch| {
                bch.iter(|| be.embedding(&ids, &table, 22.6, &mut out).unwrap())
            });
            g.bench_function(BenchmarkId::new("bf16", format!("{n}x{d}")), |bch| {
                bch.iter(|| be.embedding(&ids, &tb, 22.6, &mut out).unwrap())
            });
        }
    }
    g.finish();
}

struct AttnCase {
    name: &'static str,
    batch: usize,
    heads: usize,
    tq: usize,
    tk: usize,
    causal: bool,
}

fn attention(c: &mut Criterion) {
    let be = CpuBackend::new();
    let d = 64;
    let cases = [
        // Decode steps: cross-attention over the source, self-attention over the cache.
        AttnCase {
            name: "decode_cross",
            batch: 16,
            heads: 8,
            tq: 1,
            tk: 128,
            causal: false,
        },
        AttnCase {
            name: "decode_cross",
            batch: 1,
            heads: 16,
            tq: 1,
            tk: 512,
            causal: false,
        },
        AttnCase {
            name: "decode_self",
            batch: 16,
            heads: 8,
            tq: 1,
            tk: 64,
            causal: true,
        },
        // Encoder self-attention.
        AttnCase {
            name: "encoder",
            batch: 16,
            heads: 8,
            tq: 64,
            tk: 64,
            causal: false,
        },
        AttnCase {
            name: "encoder",
            batch: 1,
            heads: 8,
            tq: 128,
            tk: 128,
            causal: false,
        },
        AttnCase {
            name: "encoder",
            batch: 1,
            heads: 16,
            tq: 512,
            tk: 512,
            causal: false,
        },
    ];
    let mut g = c.benchmark_group("attention/cpu/f32");
    for cs in cases {
        let hd = cs.heads * d;
        let q = f32t(12, &[cs.batch, cs.tq, hd]);
        let k = f32t(13, &[cs.batch, cs.tk, hd]);
        let v = f32t(14, &[cs.batch, cs.tk, hd]);
        let mask = Tensor::zeros([cs.batch, cs.tk], DType::F32);
        let mut out = Tensor::zeros([cs.batch, cs.tq, hd], DType::F32);
        let p = AttentionParams {
            num_heads: cs.heads,
            head_dim: d,
            scale: 0.125,
            causal: cs.causal,
            q_offset: cs.tk - cs.tq,
            kv_len: cs.tk,
            key_mask: Some(&mask),
            position_bias: None,
            relative_bias: None,
            kv_index: None,
            operand_dtype: DType::F32,
        };
        // q·k and p·v: 2 FLOP per multiply-add each.
        let flops = 4 * cs.batch * cs.heads * cs.tq * cs.tk * d;
        g.throughput(Throughput::Elements(flops as u64));
        let id = format!("b{}_h{}_tq{}_tk{}", cs.batch, cs.heads, cs.tq, cs.tk);
        g.bench_function(BenchmarkId::new(cs.name, id), |bch| {
            bch.iter(|| be.attention(&q, &k, &v, &p, &mut out).unwrap())
        });
    }
    g.finish();
}

fn topk(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("topk/cpu/f32");
    for (rows, vocab) in [(1usize, 32128usize), (8, 32128), (4, 250_027)] {
        let x = Tensor::from_f32(random_vec(15, rows * vocab), [rows, vocab]).unwrap();
        for k in [8usize, 50] {
            g.throughput(Throughput::Elements((rows * vocab) as u64));
            g.bench_function(
                BenchmarkId::new(format!("k{k}"), format!("{rows}x{vocab}")),
                |bch| bch.iter(|| black_box(be.topk(&x, k).unwrap())),
            );
        }
    }
    g.finish();
}

fn batched_matmul(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("batched_matmul/cpu/f32");
    // [B*H, T, D] x [B*H, D, T] with b a transposed view, and the row-major p·v shape.
    for (b, m, k, n) in [(64usize, 64usize, 64usize, 64usize), (8, 128, 64, 128)] {
        let a = f32t(16, &[b, m, k]);
        let bt_src = f32t(17, &[b, n, k]);
        let bt = bt_src.transpose(1, 2).unwrap();
        let brow = f32t(18, &[b, k, n]);
        let mut out = Tensor::zeros([b, m, n], DType::F32);
        g.throughput(Throughput::Elements((2 * b * m * n * k) as u64));
        g.bench_function(
            BenchmarkId::new("transposed", format!("{b}x{m}x{k}x{n}")),
            |bch| bch.iter(|| be.batched_matmul(&a, &bt, &mut out).unwrap()),
        );
        g.bench_function(
            BenchmarkId::new("rowmajor", format!("{b}x{m}x{k}x{n}")),
            |bch| bch.iter(|| be.batched_matmul(&a, &brow, &mut out).unwrap()),
        );
    }
    g.finish();
}

fn memory(c: &mut Criterion) {
    let be = CpuBackend::new();
    let mut g = c.benchmark_group("index_select/cpu/f32");
    // Beam reorder of one layer's self-attention cache: [rows, cap, d_model].
    for (rows, cap, d) in [(4usize, 128usize, 512usize), (16, 128, 1024)] {
        let src = f32t(19, &[rows, cap, d]);
        let ix: Vec<u32> = (0..rows as u32).rev().collect();
        let ix = Tensor::from_u32(ix, [rows]).unwrap();
        let mut dst = Tensor::zeros([rows, cap, d], DType::F32);
        g.throughput(Throughput::Bytes((2 * rows * cap * d * 4) as u64));
        g.bench_function(
            BenchmarkId::from_parameter(format!("{rows}x{cap}x{d}")),
            |bch| bch.iter(|| be.index_select(&src, &ix, &mut dst).unwrap()),
        );
    }
    g.finish();
    let mut g = c.benchmark_group("cast/cpu/f32");
    let x = f32t(20, &[1024, 1024]);
    for dt in [DType::F16, DType::BF16, DType::I8] {
        g.throughput(Throughput::Bytes((1024 * 1024 * 4) as u64));
        g.bench_function(BenchmarkId::new(dt.as_str(), "1024x1024"), |bch| {
            bch.iter(|| black_box(be.cast(&x, dt).unwrap()))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = norms, softmaxes, activations, elementwise, embedding, attention, topk,
        batched_matmul, memory
}
criterion_main!(benches);
