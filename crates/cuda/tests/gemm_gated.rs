//! `linear_gated` (a gated FFN's up projections, `act(x wgᵀ) * (x wuᵀ)`):
//! kernels/gemm.cu `gemv_gated_*` (M <= 8) and `linear_gated_*` (FP32-FMA
//! tiled), kernels/gemm_tc.cu `linear_gated_tc_*` (f16/bf16, M > 8) and
//! kernels/gemm_i8_tc.cu `linear_gated_i8_tc` (int8 W8A8, M > 8).
//!
//! For every weight dtype (f32, f16, bf16, int8), every activation and both
//! `GemmPath`s, on shapes with M in {1, 3, 7, 8, 9, 17, 64, 130} (both sides of
//! the GEMV limit, odd, a full tile, a 2-row edge), odd K and N not a multiple
//! of any tile width, outputs poisoned (NaN):
//! - bit for bit the device's own unfused result (two `linear`s, then
//!   `gated_activation`): each fused kernel accumulates every sum in the order of
//!   `linear`'s kernel on that path, so any gate/up mix-up, a missed column or
//!   a skipped activation shows as a changed bit;
//! - close to the CPU backend's `linear_gated` (the path's tolerance: W8A8 and
//!   the CPU's int8 GEMM both quantise activations, differently: rel L2 2e-2).
//!
//! Plus: the shape and dtype errors are the CPU's.

mod common;

use common::*;
use encdec_core::testing::{random_normal, Tol};
use encdec_core::{Activation, Backend, DType, Tensor};
use encdec_cuda::GemmPath;

const ACTS: [Activation; 5] = [
    Activation::Relu,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Silu,
    Activation::Identity,
];

/// (M, K, N).
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 33, 130),
    (3, 64, 257),
    (7, 40, 65),
    (8, 7, 33),
    (9, 130, 70),
    (17, 33, 130),
    (64, 64, 64),
    (130, 40, 97),
];

/// The fused result against the CPU's `linear_gated` for this dtype and path.
fn tol(wdt: DType, path: GemmPath, m: usize, k: usize) -> Tol {
    let tc = path == GemmPath::Auto && m > 8;
    match wdt {
        // W8A8 (or weight-only int8) against the CPU's u8-activation int8 GEMM:
        // two differently quantised sums multiplied, so single elements near
        // zero are off by up to ~0.05 sqrt(K) (measured 0.64 at K = 130); rel
        // L2 is the check that matters (measured <= 1.2e-2).
        DType::I8 => Tol {
            rel_l2: 2e-2,
            abs: 0.08 * (k as f64).sqrt(),
            rel: 0.1,
        },
        // Activations rounded to f16/bf16 on tensor cores; the product of
        // two such sums doubles the relative error.
        DType::F16 | DType::BF16 if tc => Tol {
            rel_l2: 2e-2,
            abs: 0.02 * (k as f64).sqrt(),
            rel: 4e-2,
        },
        // f32 products of the widened weights, another summation order.
        _ => {
            let s = ((k as f64).sqrt() / 8.0).max(1.0);
            Tol {
                rel_l2: 1e-4,
                abs: 1e-4 * s,
                rel: 1e-3,
            }
        }
    }
}

#[test]
fn linear_gated_equals_unfused_and_matches_cpu() {
    let g = gpu_or_skip!("linear_gated_equals_unfused_and_matches_cpu");
    let mut f = Failures::default();
    for (m, k, n) in SHAPES {
        let seed = (m * 100_000 + k * 100 + n) as u64 ^ 0x9a7e;
        // [1, M, K]: leading dims are flattened.
        let xh = host(random_normal(seed, m * k, 1.0), &[1, m, k]);
        let xd = up(&g, &xh);
        let wg = random_normal(seed + 1, n * k, 0.3);
        let wu = random_normal(seed + 2, n * k, 0.3);
        for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
            let wgh = cpu().cast(&host(wg.clone(), &[n, k]), wdt).unwrap();
            let wuh = cpu().cast(&host(wu.clone(), &[n, k]), wdt).unwrap();
            let (wgd, wud) = (up(&g, &wgh), up(&g, &wuh));
            for path in [GemmPath::Auto, GemmPath::Tiled] {
                g.set_gemm_path(path);
                // The unfused device result: two linears, then per activation
                // gated_activation.
                let mut gate = poisoned(&g, &[m, n]);
                let mut upp = poisoned(&g, &[m, n]);
                g.linear(&xd, &wgd, None, &mut gate).unwrap();
                g.linear(&xd, &wud, None, &mut upp).unwrap();
                for act in ACTS {
                    let what = format!("m={m} k={k} n={n} {wdt} {path:?} {act:?}");
                    let mut fused = poisoned(&g, &[1, m, n]);
                    if let Err(e) = g.linear_gated(&xd, &wgd, &wud, act, &mut fused) {
                        f.push(format!("{what}: {e}"));
                        continue;
                    }
                    let mut apart = poisoned(&g, &[1, m, n]);
                    g.gated_activation(&gate, &upp, act, &mut apart).unwrap();
                    let got = down(&g, &fused);
                    f.exact(
                        &format!("{what}: fused vs unfused"),
                        &got,
                        &down(&g, &apart),
                    );
                    let mut want = Tensor::zeros([1, m, n], DType::F32);
                    cpu().linear_gated(&xh, &wgh, &wuh, act, &mut want).unwrap();
                    f.check(
                        &format!("{what}: vs cpu"),
                        &got,
                        want.as_f32().unwrap(),
                        tol(wdt, path, m, k),
                    );
                }
            }
        }
    }
    g.set_gemm_path(GemmPath::Auto);
    f.finish("linear_gated");
}

/// Gate and up as row views of one `[2N, K]` tensor (a checkpoint that stores
/// them fused): the kernels read from the views' offsets (and int8 row scales
/// from the matching rows). K = 64 keeps the 16 B copies on the tensor-core
/// paths, K = 33 takes the element-wise ones.
#[test]
fn linear_gated_reads_narrowed_weights() {
    let g = gpu_or_skip!("linear_gated_reads_narrowed_weights");
    let mut f = Failures::default();
    for (m, k, n) in [(3usize, 64usize, 70usize), (17, 64, 70), (17, 33, 40)] {
        let seed = (m * 1000 + k * 10 + n) as u64;
        let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
        let xd = up(&g, &xh);
        let both = random_normal(seed + 1, 2 * n * k, 0.3);
        for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
            let wh = cpu().cast(&host(both.clone(), &[2 * n, k]), wdt).unwrap();
            let wd = up(&g, &wh);
            let (gd, ud) = (wd.narrow(0, 0, n).unwrap(), wd.narrow(0, n, n).unwrap());
            // The same weights as tensors of their own.
            let gh = cpu()
                .cast(&host(both[..n * k].to_vec(), &[n, k]), wdt)
                .unwrap();
            let uh = cpu()
                .cast(&host(both[n * k..].to_vec(), &[n, k]), wdt)
                .unwrap();
            let (gown, uown) = (up(&g, &gh), up(&g, &uh));
            let act = Activation::GeluTanh;
            let what = format!("m={m} k={k} n={n} {wdt}");
            let mut got = poisoned(&g, &[m, n]);
            g.linear_gated(&xd, &gd, &ud, act, &mut got).unwrap();
            let mut want = poisoned(&g, &[m, n]);
            g.linear_gated(&xd, &gown, &uown, act, &mut want).unwrap();
            f.exact(
                &format!("{what}: views vs own tensors"),
                &down(&g, &got),
                &down(&g, &want),
            );
        }
    }
    f.finish("linear_gated narrowed");
}

/// Bad calls fail as on the CPU (same message), before anything runs.
#[test]
fn linear_gated_errors_match_cpu() {
    let g = gpu_or_skip!("linear_gated_errors_match_cpu");
    let (m, k, n) = (3, 8, 5);
    let xh = host(random_normal(1, m * k, 1.0), &[m, k]);
    let w = |rows: usize, dt: DType| host_as(random_normal(2, rows * k, 0.3), &[rows, k], dt);
    let cases: [(&str, Tensor, Tensor, Vec<usize>); 4] = [
        (
            "shapes differ",
            w(n, DType::F32),
            w(n + 1, DType::F32),
            vec![m, n],
        ),
        (
            "dtypes differ",
            w(n, DType::F32),
            w(n, DType::F16),
            vec![m, n],
        ),
        (
            "out too narrow",
            w(n, DType::F16),
            w(n, DType::F16),
            vec![m, n - 1],
        ),
        (
            "K differs from x",
            host(vec![0.0; n * (k + 1)], &[n, k + 1]),
            host(vec![0.0; n * (k + 1)], &[n, k + 1]),
            vec![m, n],
        ),
    ];
    let xd = up(&g, &xh);
    for (what, wg, wu, out_shape) in cases {
        let mut oh = host(vec![0.0; out_shape.iter().product()], &out_shape);
        let want = cpu()
            .linear_gated(&xh, &wg, &wu, Activation::GeluTanh, &mut oh)
            .expect_err(what)
            .to_string();
        let mut od = poisoned(&g, &out_shape);
        let got = g
            .linear_gated(
                &xd,
                &up(&g, &wg),
                &up(&g, &wu),
                Activation::GeluTanh,
                &mut od,
            )
            .expect_err(what)
            .to_string();
        assert_eq!(got, want, "{what}");
    }
}
