//! Criterion benches of every kernel family of `kernels/`, through the
//! `Backend` trait of the CUDA backend. Without a CUDA driver or device it
//! prints `SKIP cuda_kernels: ...` and exits 0.
//!
//! Run: `cargo bench -p encdec-cuda --bench cuda_kernels [-- FILTER]`.
//! Timing: `iter_custom` with a device synchronise before the clock starts and
//! before it stops (launch overhead included, as the decode loop sees it).
//! Throughput: memory-bound groups report bytes moved (criterion prints GiB/s);
//! compute-bound groups (large GEMM, encoder attention) report FLOPs as
//! "elements" (criterion's `elem/s` is FLOP/s there). Napkin math per group is
//! in the comments; compare with the H100's ~3 TB/s HBM3, ~60 TFLOP/s of
//! non-tensor-core f32 and ~990 TFLOP/s of dense f16/bf16 tensor-core math
//! (`linear` f16/bf16 at M > 8 and the `_tc` attention groups use tensor cores).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use encdec_core::backend::RelativeBiasSpec;
use encdec_core::testing::random_normal;
use encdec_core::{Activation, AttentionParams, Backend, DType, NormKind, Tensor};
use encdec_cuda::{AttentionPath, CudaBackend, GemmPath};

fn host(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_f32(v, shape).unwrap()
}

struct B<'a> {
    c: &'a mut Criterion,
    g: &'a CudaBackend,
}

impl B<'_> {
    fn up(&self, v: Vec<f32>, shape: &[usize]) -> Tensor {
        self.g.upload(&host(v, shape)).unwrap()
    }

    fn rand(&self, seed: u64, shape: &[usize], std: f32) -> Tensor {
        let n = shape.iter().product();
        self.up(random_normal(seed, n, std), shape)
    }

    /// Times `f` (one op launch per call) as `group/name`.
    fn run(&mut self, group: &str, name: &str, tp: Throughput, mut f: impl FnMut()) {
        let g = self.g;
        let mut grp = self.c.benchmark_group(group);
        grp.throughput(tp);
        grp.warm_up_time(Duration::from_millis(500));
        grp.measurement_time(Duration::from_secs(2));
        grp.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                g.synchronize().unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    f();
                }
                g.synchronize().unwrap();
                t.elapsed()
            })
        });
        grp.finish();
    }
}

fn elementwise(b: &mut B) {
    for n in [64 * 1024, 64 * 4096 * 4] {
        let mut x = b.rand(1, &[n], 1.0);
        let y = b.rand(2, &[n], 1.0);
        let g = b.g.clone();
        // read x, y, write x
        b.run(
            "add_assign/cuda/f32",
            &n.to_string(),
            Throughput::Bytes(12 * n as u64),
            || g.add_assign(&mut x, &y).unwrap(),
        );
        b.run(
            "activation/cuda/gelu",
            &n.to_string(),
            Throughput::Bytes(8 * n as u64),
            || g.activation(&mut x, Activation::Gelu).unwrap(),
        );
        let (gate, up) = (b.rand(3, &[n], 1.0), b.rand(4, &[n], 1.0));
        let mut out = b.g.zeros(&[n], DType::F32).unwrap();
        b.run(
            "gated_activation/cuda/gelu_tanh",
            &n.to_string(),
            Throughput::Bytes(12 * n as u64),
            || {
                g.gated_activation(&gate, &up, Activation::GeluTanh, &mut out)
                    .unwrap()
            },
        );
        // cast allocates its output (from the pool): read 4 B, write 2 B.
        b.run(
            "cast/cuda/f32_to_bf16",
            &n.to_string(),
            Throughput::Bytes(6 * n as u64),
            || drop(g.cast(&y, DType::BF16).unwrap()),
        );
    }
    let w = b.rand(5, &[4096, 1024], 0.1);
    let g = b.g.clone();
    b.run(
        "cast/cuda/quantize_i8",
        "4096x1024",
        Throughput::Bytes(5 * 4096 * 1024),
        || drop(g.cast(&w, DType::I8).unwrap()),
    );
}

fn copy_and_embedding(b: &mut B) {
    let g = b.g.clone();
    let (rows, tcap, c) = (16, 256, 1024);
    let step = b.rand(1, &[rows, 1, c], 1.0);
    let mut cache = b.g.zeros(&[rows, tcap, c], DType::F32).unwrap();
    b.run(
        "write_rows/cuda/f32",
        "16x1x1024",
        Throughput::Bytes(8 * (rows * c) as u64),
        || g.write_rows(&step, &mut cache, 100).unwrap(),
    );
    let ix =
        b.g.upload(&Tensor::from_u32((0..rows as u32).rev().collect(), [rows]).unwrap())
            .unwrap();
    let mut dst = b.g.zeros(&[rows, tcap, c], DType::F32).unwrap();
    b.run(
        "index_select/cuda/f32",
        "16x256x1024",
        Throughput::Bytes(8 * (rows * tcap * c) as u64),
        || g.index_select(&cache, &ix, &mut dst).unwrap(),
    );
    for dt in [DType::F32, DType::BF16] {
        let table = g.cast(&b.rand(2, &[32128, 1024], 1.0), dt).unwrap();
        let ids =
            b.g.upload(&Tensor::from_u32((0..64).map(|i| i * 331).collect(), [64]).unwrap())
                .unwrap();
        let mut out = b.g.zeros(&[64, 1024], DType::F32).unwrap();
        let bytes = 64 * 1024 * (4 + dt.size_in_bytes()) as u64;
        b.run(
            &format!("embedding/cuda/{dt}"),
            "64x1024",
            Throughput::Bytes(bytes),
            || g.embedding(&ids, &table, 1.0, &mut out).unwrap(),
        );
    }
}

fn norms(b: &mut B) {
    let g = b.g.clone();
    for (rows, cols) in [(1, 1024), (64, 1024), (512, 4096)] {
        let x = b.rand(1, &[rows, cols], 1.0);
        let w = b.rand(2, &[cols], 1.0);
        let bias = b.rand(3, &[cols], 1.0);
        let mut out = b.g.zeros(&[rows, cols], DType::F32).unwrap();
        let mut res = b.rand(4, &[rows, cols], 1.0);
        let n = (rows * cols) as u64;
        let name = format!("{rows}x{cols}");
        b.run("rms_norm/cuda/f32", &name, Throughput::Bytes(8 * n), || {
            g.norm(NormKind::RmsNorm, &x, &w, None, 1e-6, &mut out)
                .unwrap()
        });
        // read x, read+write residual, write out
        b.run(
            "add_layer_norm/cuda/f32",
            &name,
            Throughput::Bytes(16 * n),
            || {
                g.add_norm(
                    NormKind::LayerNorm,
                    &x,
                    &mut res,
                    &w,
                    Some(&bias),
                    1e-5,
                    &mut out,
                )
                .unwrap()
            },
        );
    }
}

fn softmax_topk(b: &mut B) {
    let g = b.g.clone();
    for (rows, v) in [(1, 32128), (4, 50265), (16, 250112)] {
        let mut x = b.rand(1, &[rows, v], 3.0);
        let name = format!("{rows}x{v}");
        let n = (rows * v) as u64;
        b.run(
            "log_softmax/cuda/f32",
            &name,
            Throughput::Bytes(12 * n),
            || g.log_softmax(&mut x).unwrap(),
        );
        // topk waits for its result (ids cross to the host): one sync per call.
        for k in [1, 8] {
            b.run(
                &format!("topk/cuda/k{k}"),
                &name,
                Throughput::Bytes(4 * n),
                || {
                    let _ = g.topk(&x, k).unwrap();
                },
            );
            // The device search's form: into device buffers, no wait.
            let mut ids = g.zeros(&[rows, k], DType::U32).unwrap();
            let mut vals = g.zeros(&[rows, k], DType::F32).unwrap();
            b.run(
                &format!("topk_into/cuda/k{k}"),
                &name,
                Throughput::Bytes(4 * n),
                || g.topk_into(&x, k, &mut ids, &mut vals).unwrap(),
            );
        }
        // greedy's row statistics (max, sum of exp): one read of the row
        let mut stats = g.zeros(&[rows, 2], DType::F32).unwrap();
        b.run(
            "softmax_stats/cuda/f32",
            &name,
            Throughput::Bytes(4 * n),
            || g.softmax_stats(&x, &mut stats).unwrap(),
        );
        // bans of one step: 64 ids per row set to -inf
        let banned: Vec<u32> = (0..rows)
            .flat_map(|r| (0..64).map(move |j| (r * v + j * 97) as u32))
            .collect();
        let index = g
            .upload(&Tensor::from_u32(banned, [rows * 64]).unwrap())
            .unwrap();
        b.run(
            "scatter_fill/cuda/f32",
            &name,
            Throughput::Bytes((rows * 64 * 8) as u64),
            || g.scatter_fill(&mut x, &index, f32::NEG_INFINITY).unwrap(),
        );
    }
}

fn gemm(b: &mut B) {
    let g = b.g.clone();
    let (n, k) = (4096, 1024);
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
        let w = g.cast(&b.rand(1, &[n, k], 0.05), dt).unwrap();
        for m in [1, 8, 64, 512] {
            let x = b.rand(2, &[m, k], 1.0);
            let mut out = b.g.zeros(&[m, n], DType::F32).unwrap();
            let name = format!("{m}x{k}x{n}");
            // Small M: bytes (weights dominate); large M: FLOPs (as elements).
            let tp = if m <= 8 {
                Throughput::Bytes((n * k * dt.size_in_bytes() + 4 * m * (k + n)) as u64)
            } else {
                Throughput::Elements((2 * m * n * k) as u64)
            };
            // M > 8: the tensor-core kernels (Auto: f16/bf16 mma, int8 W8A8) beside
            // the FP32-FMA tiled kernel they replace.
            let paths: &[GemmPath] = if m <= 8 {
                &[GemmPath::Auto]
            } else {
                &[GemmPath::Auto, GemmPath::Tiled]
            };
            for &path in paths {
                let g = g.clone();
                g.set_gemm_path(path);
                b.run(
                    &format!("linear/cuda/{dt}/{path:?}"),
                    &name,
                    tp.clone(),
                    || g.linear(&x, &w, None, &mut out).unwrap(),
                );
            }
        }
    }
    // Gated FFN up projections (flan-t5-base: d_model 768, d_ff 2048): one
    // linear_gated launch beside the unfused two linears + gated_activation
    // (two [M, N] temporaries written and read back).
    let (n, k) = (2048, 768);
    for dt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
        let wg = g.cast(&b.rand(5, &[n, k], 0.05), dt).unwrap();
        let wu = g.cast(&b.rand(6, &[n, k], 0.05), dt).unwrap();
        for m in [1, 8, 64, 512] {
            let x = b.rand(7, &[m, k], 1.0);
            let mut out = g.zeros(&[m, n], DType::F32).unwrap();
            let (mut gate, mut upp) = (
                g.zeros(&[m, n], DType::F32).unwrap(),
                g.zeros(&[m, n], DType::F32).unwrap(),
            );
            let name = format!("{m}x{k}x{n}");
            let tp = if m <= 8 {
                Throughput::Bytes((2 * n * k * dt.size_in_bytes() + 4 * m * (k + n)) as u64)
            } else {
                Throughput::Elements((4 * m * n * k) as u64)
            };
            let act = Activation::GeluTanh;
            b.run(
                &format!("linear_gated/cuda/{dt}/fused"),
                &name,
                tp.clone(),
                || g.linear_gated(&x, &wg, &wu, act, &mut out).unwrap(),
            );
            b.run(
                &format!("linear_gated/cuda/{dt}/unfused"),
                &name,
                tp.clone(),
                || {
                    g.linear(&x, &wg, None, &mut gate).unwrap();
                    g.linear(&x, &wu, None, &mut upp).unwrap();
                    g.gated_activation(&gate, &upp, act, &mut out).unwrap();
                },
            );
        }
    }
    // A sublayer's close (bart-large-cnn's fc2: 4096 -> 1024, LayerNorm after):
    // linear_add into the residual stream then norm, beside linear into a
    // temporary then add_norm (what the models ran before the residual
    // epilogue). The fused form skips writing and reading back the [M, N]
    // temporary.
    let (n, k) = (1024, 4096);
    let nw = b.rand(8, &[n], 1.0);
    let nb = b.rand(9, &[n], 1.0);
    let bias = b.rand(10, &[n], 1.0);
    // (f16 and int8, the GEMV and tensor-core paths: the epilogue is the same
    // code on every path, and the whole suite must fit gpu-check's budget)
    for dt in [DType::F16, DType::I8] {
        let w = g.cast(&b.rand(11, &[n, k], 0.02), dt).unwrap();
        for m in [1, 64, 1024] {
            let x = b.rand(12, &[m, k], 1.0);
            let mut h = b.rand(13, &[m, n], 1.0);
            let mut y = g.zeros(&[m, n], DType::F32).unwrap();
            let mut xn = g.zeros(&[m, n], DType::F32).unwrap();
            let name = format!("{m}x{k}x{n}");
            let tp = if m <= 8 {
                Throughput::Bytes((n * k * dt.size_in_bytes() + 4 * m * (k + 3 * n)) as u64)
            } else {
                Throughput::Elements((2 * m * n * k) as u64)
            };
            let ln = NormKind::LayerNorm;
            b.run(
                &format!("linear_add/cuda/{dt}/fused+norm"),
                &name,
                tp.clone(),
                || {
                    g.linear_add(&x, &w, Some(&bias), &mut h).unwrap();
                    g.norm(ln, &h, &nw, Some(&nb), 1e-5, &mut xn).unwrap();
                },
            );
            b.run(
                &format!("linear_add/cuda/{dt}/linear+add_norm"),
                &name,
                tp.clone(),
                || {
                    g.linear(&x, &w, Some(&bias), &mut y).unwrap();
                    g.add_norm(ln, &y, &mut h, &nw, Some(&nb), 1e-5, &mut xn)
                        .unwrap();
                },
            );
        }
    }
    let (bt, m, kk, nn) = (16, 128, 64, 128);
    let a = b.rand(3, &[bt, m, kk], 1.0);
    let bm = b.rand(4, &[bt, nn, kk], 1.0);
    let bt_view = bm.transpose(1, 2).unwrap();
    let mut out = b.g.zeros(&[bt, m, nn], DType::F32).unwrap();
    b.run(
        "batched_matmul/cuda/f32",
        "16x128x64x128 (b transposed)",
        Throughput::Elements((2 * bt * m * nn * kk) as u64),
        || g.batched_matmul(&a, &bt_view, &mut out).unwrap(),
    );
}

fn attention(b: &mut B) {
    let (h, d) = (16, 64);
    let hd = h * d;
    // Encoder: B=1, T=1024, bidirectional, padding mask. 4 * T^2 * D FLOPs per head.
    // Three kernels: the f32 tiled one (f32 models), and kernels/attention_tc.cu
    // with f16 / bf16 operands (what f16 / bf16 models get on sm_80+). Napkin
    // (H100 SXM): 1024 tokens x 16 heads x D 64 is 4.3 GFLOP: ~70 us at the
    // ~60 TFLOP/s of FP32 FMA, ~4.3 us at the ~990 TFLOP/s f16 tensor-core peak;
    // the TC kernel's header expects 15-20% of that peak (softmax-bound): ~25 us.
    for t in [128, 1024] {
        let q = b.rand(1, &[1, t, hd], 1.0);
        let k = b.rand(2, &[1, t, hd], 1.0);
        let v = b.rand(3, &[1, t, hd], 1.0);
        let mask = b.up(vec![0.0; t], &[1, t]);
        let mut out = b.g.zeros(&[1, t, hd], DType::F32).unwrap();
        let table = b.rand(4, &[32, h], 1.0);
        for (label, operand, path) in [
            ("f32", DType::F32, AttentionPath::Tiled),
            ("f16_tc", DType::F16, AttentionPath::TensorCore),
            ("bf16_tc", DType::BF16, AttentionPath::TensorCore),
        ] {
            let p = AttentionParams {
                num_heads: h,
                head_dim: d,
                scale: 0.125,
                causal: false,
                q_offset: 0,
                kv_len: t,
                key_mask: Some(&mask),
                position_bias: None,
                relative_bias: None,
                kv_index: None,
                operand_dtype: operand,
            };
            let g = b.g.clone();
            g.set_attention_path(path);
            b.run(
                &format!("attention/cuda/encoder/{label}"),
                &format!("1x{t}x16x64"),
                Throughput::Elements((4 * h * t * t * d) as u64),
                || g.attention(&q, &k, &v, &p, &mut out).unwrap(),
            );
            // T5: the relative position bias computed in the kernel from its table.
            let t5 = AttentionParams {
                scale: 1.0,
                relative_bias: Some(RelativeBiasSpec {
                    table: &table,
                    num_buckets: 32,
                    max_distance: 128,
                    bidirectional: true,
                }),
                ..p
            };
            b.run(
                &format!("attention/cuda/encoder_t5_bias/{label}"),
                &format!("1x{t}x16x64"),
                Throughput::Elements((4 * h * t * t * d) as u64),
                || g.attention(&q, &k, &v, &t5, &mut out).unwrap(),
            );
        }
    }
    // Decode: one query per row over a cache/encoder K/V of `len`; bytes = K + V read.
    for (rows, len) in [(1, 1024), (4, 1024), (16, 256)] {
        let q = b.rand(1, &[rows, 1, hd], 1.0);
        let k = b.rand(2, &[rows, len, hd], 1.0);
        let v = b.rand(3, &[rows, len, hd], 1.0);
        let mut out = b.g.zeros(&[rows, 1, hd], DType::F32).unwrap();
        let p = AttentionParams {
            num_heads: h,
            head_dim: d,
            scale: 0.125,
            causal: true,
            q_offset: len - 1,
            kv_len: len,
            key_mask: None,
            position_bias: None,
            relative_bias: None,
            kv_index: None,
            operand_dtype: DType::F32,
        };
        for path in [AttentionPath::SplitKv, AttentionPath::Tiled] {
            let g = b.g.clone();
            g.set_attention_path(path);
            b.run(
                &format!("attention/cuda/decode_{path:?}"),
                &format!("{rows}x{len}x16x64"),
                Throughput::Bytes((2 * rows * len * hd * 4) as u64),
                || g.attention(&q, &k, &v, &p, &mut out).unwrap(),
            );
        }
        // A half model's f16 cache (Backend::kv_cache_dtype): half the bytes.
        let (k16, v16) = (
            b.g.cast(&k, DType::F16).unwrap(),
            b.g.cast(&v, DType::F16).unwrap(),
        );
        let g = b.g.clone();
        g.set_attention_path(AttentionPath::SplitKv);
        b.run(
            "attention/cuda/decode_SplitKv_kvf16",
            &format!("{rows}x{len}x16x64"),
            Throughput::Bytes((2 * rows * len * hd * 2) as u64),
            || g.attention(&q, &k16, &v16, &p, &mut out).unwrap(),
        );
        // A recorded step's attention (positions read on the device) at half
        // the cache: the launch is planned for all `len` keys, half are used.
        let half = len / 2;
        let at = Tensor::from_u32(vec![half as u32 - 1, half as u32], [2]).unwrap();
        let at = b.g.upload(&at).unwrap();
        let g = b.g.clone();
        g.set_attention_path(AttentionPath::Auto);
        b.run(
            "attention_at/cuda/decode_half_cache",
            &format!("{rows}x{half}of{len}x16x64"),
            Throughput::Bytes((2 * rows * half * hd * 4) as u64),
            || g.attention_at(&q, &k, &v, &p, &at, &mut out).unwrap(),
        );
    }
}

fn main() {
    if !encdec_cuda::driver_present() {
        eprintln!(
            "SKIP cuda_kernels: no CUDA device (the CUDA driver library libcuda.so was not found)"
        );
        return;
    }
    let g = match CudaBackend::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIP cuda_kernels: no CUDA device ({e})");
            return;
        }
    };
    match g.preload() {
        Ok(how) => eprintln!("{}\n{}", g.describe(), how.join("\n")),
        Err(e) => panic!("kernels failed to load: {e}"),
    }
    let mut c = Criterion::default().configure_from_args();
    {
        let mut b = B { c: &mut c, g: &g };
        elementwise(&mut b);
        copy_and_embedding(&mut b);
        norms(&mut b);
        softmax_topk(&mut b);
        gemm(&mut b);
        attention(&mut b);
    }
    c.final_summary();
}
