//! kernels/gemm_tc.cu (`linear` with f16/bf16 weights on tensor cores, the
//! path `GemmPath::Auto` takes for M > 8) against the CPU backend.
//!
//! Shapes: M in {9, 17, 64, 130} (one row past the GEMV range, odd, a full
//! block tile, three tiles with a 2-row edge), K in {7, 33, 40, 64, 130, 520}
//! (odd, not a multiple of 16 or of the 32-wide K step; 40 and 64 take the
//! 16-byte cp.async path, the others the element-wise one), N in {7, 130, 257}
//! (edges of the 128-wide tile); with and without bias; outputs poisoned (NaN).
//! Two references for each case:
//! - the op's meaning, the CPU's f32 `linear` of x and the widened weights:
//!   `tol_tc(K)` (rel L2 1e-2, for activations rounded to f16/bf16);
//! - the CPU's `linear` of x already rounded to the weight dtype: only the
//!   summation order differs, so rel L2 1e-4 — a fragment-layout or pipeline
//!   bug that moves a few products fails here even when it hides under 1e-2.

mod common;

use common::*;
use encdec_core::testing::{random_normal, random_vec, Tol};
use encdec_core::{Backend, DType, Tensor};
use encdec_cuda::GemmPath;

/// Same products as the CPU on pre-rounded activations, f32 sums in another
/// order (tensor cores add in blocks of 16 k).
fn tol_rounded(k: usize) -> Tol {
    let s = ((k.max(1) as f64).sqrt() / 8.0).max(1.0);
    Tol {
        rel_l2: 1e-4,
        abs: 1e-4 * s,
        rel: 1e-3,
    }
}

const MS: [usize; 4] = [9, 17, 64, 130];
const KS: [usize; 6] = [7, 33, 40, 64, 130, 520];
const NS: [usize; 3] = [7, 130, 257];

#[test]
fn linear_tc_matches_cpu_for_f16_and_bf16_weights() {
    let g = gpu_or_skip!("linear_tc_matches_cpu_for_f16_and_bf16_weights");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for m in MS {
        for k in KS {
            for n in NS {
                let seed = (m * 100_000 + k * 100 + n) as u64 ^ 0x7c;
                let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
                let w = random_normal(seed + 1, n * k, 0.2);
                let bh = host(random_vec(seed + 2, n), &[n]);
                let xd = up(&g, &xh);
                let bd = up(&g, &bh);
                for wdt in [DType::F16, DType::BF16] {
                    let wh = host_as(w.clone(), &[n, k], wdt);
                    let wd = up(&g, &wh);
                    let wf = cpu().cast(&wh, DType::F32).unwrap();
                    // x as the kernel sees it: rounded to the weight dtype.
                    let xr = cpu()
                        .cast(&cpu().cast(&xh, wdt).unwrap(), DType::F32)
                        .unwrap();
                    for with_bias in [false, true] {
                        let b = with_bias.then_some(&bh);
                        let mut want = Tensor::zeros([m, n], DType::F32);
                        cpu().linear(&xh, &wf, b, &mut want).unwrap();
                        let mut want_r = Tensor::zeros([m, n], DType::F32);
                        cpu().linear(&xr, &wf, b, &mut want_r).unwrap();
                        let mut got = poisoned(&g, &[m, n]);
                        let what = format!(
                            "linear_tc M={m} K={k} N={n} w={wdt} bias={with_bias} seed={seed}"
                        );
                        if let Err(e) = g.linear(&xd, &wd, with_bias.then_some(&bd), &mut got) {
                            f.push(format!("{what}: {e}"));
                            continue;
                        }
                        let got = down(&g, &got);
                        f.check(&what, &got, &want.to_f32_vec().unwrap(), tol_tc(k));
                        // (The CPU stand-in of ENCDEC_CUDA_TESTS_ON_CPU=1 does not round x.)
                        if g.cuda.is_some() {
                            f.check(
                                &format!("{what} vs x rounded to {wdt}"),
                                &got,
                                &want_r.to_f32_vec().unwrap(),
                                tol_rounded(k),
                            );
                        }
                    }
                }
            }
        }
    }
    f.finish("linear_tc");
}

/// Leading dims of x and a weight view that starts mid-matrix (a fused
/// projection's rows): the 16-byte path (K % 8 == 0, aligned row starts) and
/// the element-wise one (odd K, rows start at odd addresses).
#[test]
fn linear_tc_takes_leading_dims_and_narrowed_weights() {
    let g = gpu_or_skip!("linear_tc_takes_leading_dims_and_narrowed_weights");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for k in [33, 48] {
        let (b, t, n) = (3, 7, 40);
        let xh = host(random_normal(11, b * t * k, 1.0), &[b, t, k]);
        for wdt in [DType::F16, DType::BF16] {
            let wh = host_as(random_normal(12, n * k, 0.2), &[n, k], wdt);
            let wn = wh.narrow(0, 3, 29).unwrap();
            let wnf = cpu().cast(&wn, DType::F32).unwrap();
            let mut want = Tensor::zeros([b, t, 29], DType::F32);
            cpu().linear(&xh, &wnf, None, &mut want).unwrap();
            let wd = up(&g, &wh).narrow(0, 3, 29).unwrap();
            let mut got = poisoned(&g, &[b, t, 29]);
            let what = format!("linear_tc narrowed w={wdt} K={k}");
            match g.linear(&up(&g, &xh), &wd, None, &mut got) {
                Ok(()) => f.check(
                    &what,
                    &down(&g, &got),
                    &want.to_f32_vec().unwrap(),
                    tol_tc(k),
                ),
                Err(e) => f.push(format!("{what}: {e}")),
            }
        }
    }
    f.finish("linear_tc views");
}

/// A NaN or inf in x reaches exactly its output row (no lane mixes rows).
#[test]
fn linear_tc_keeps_a_nan_in_its_row() {
    let g = gpu_or_skip!("linear_tc_keeps_a_nan_in_its_row");
    g.set_gemm_path(GemmPath::Auto);
    let (m, k, n) = (20, 40, 24);
    let mut x = random_normal(21, m * k, 1.0);
    x[13 * k + 5] = f32::NAN;
    let xh = host(x, &[m, k]);
    for wdt in [DType::F16, DType::BF16] {
        let wh = host_as(random_normal(22, n * k, 0.2), &[n, k], wdt);
        let mut got = poisoned(&g, &[m, n]);
        g.linear(&up(&g, &xh), &up(&g, &wh), None, &mut got)
            .unwrap();
        let got = down(&g, &got);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(
                v.is_nan(),
                i / n == 13,
                "linear_tc w={wdt}: element {i} (row {}) is {v}",
                i / n
            );
        }
    }
}

/// The known f16 failure of T5-family models: an activation past f16's 65504
/// (T5 v1.1 / mT5 FFN outputs reach 1e5) becomes inf when the tensor-core path
/// rounds x to f16, while bf16 keeps f32's range. This is why
/// `encdec_models::weight_dtype_for` loads T5 models as bf16 on a GPU.
#[test]
fn an_activation_past_f16_range_overflows_with_f16_weights_only() {
    let g = gpu_or_skip!("an_activation_past_f16_range_overflows_with_f16_weights_only");
    g.set_gemm_path(GemmPath::Auto);
    let (m, k, n) = (16, 64, 32);
    let mut x = random_normal(31, m * k, 1.0);
    x[3 * k + 10] = 1.0e5;
    let xh = host(x, &[m, k]);
    let w = random_normal(32, n * k, 0.2);
    for wdt in [DType::F16, DType::BF16] {
        let wh = host_as(w.clone(), &[n, k], wdt);
        let mut got = poisoned(&g, &[m, n]);
        g.linear(&up(&g, &xh), &up(&g, &wh), None, &mut got)
            .unwrap();
        let got = down(&g, &got);
        let row3_finite = got[3 * n..4 * n].iter().all(|v| v.is_finite());
        let others_finite = got
            .iter()
            .enumerate()
            .all(|(i, v)| i / n == 3 || v.is_finite());
        assert!(
            others_finite,
            "w={wdt}: rows without the large value stay finite"
        );
        match wdt {
            DType::F16 => assert!(!row3_finite, "f16: 1e5 should overflow to inf"),
            _ => assert!(
                row3_finite,
                "bf16: 1e5 is in range: {:?}",
                &got[3 * n..4 * n]
            ),
        }
    }
}

/// `linear_act` (the FFN up projection): every path (GEMV at M <= 8, the
/// tiled kernel, the f16/bf16 and int8 W8A8 tensor-core kernels at M > 8)
/// applies the activation in its epilogue. The result must be bit for bit the
/// device's `linear` then `activation`, and close to the CPU's (the path's own
/// tolerance: rel L2 2e-2 covers W8A8).
#[test]
fn linear_act_equals_linear_then_activation() {
    use encdec_core::Activation;
    let g = gpu_or_skip!("linear_act_equals_linear_then_activation");
    let mut f = Failures::default();
    let loose = Tol {
        rel_l2: 2e-2,
        abs: 0.1,
        rel: 0.1,
    };
    for path in [GemmPath::Auto, GemmPath::Tiled] {
        g.set_gemm_path(path);
        for (m, k, n) in [(3usize, 40usize, 130usize), (17, 33, 257), (130, 64, 7)] {
            let seed = (m * 1000 + k * 10 + n) as u64;
            let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
            let w = random_normal(seed + 1, n * k, 0.3);
            let bh = host(random_vec(seed + 2, n), &[n]);
            let xd = up(&g, &xh);
            let bd = up(&g, &bh);
            for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
                let wh = cpu().cast(&host(w.clone(), &[n, k]), wdt).unwrap();
                let wd = up(&g, &wh);
                for act in [
                    Activation::Relu,
                    Activation::Gelu,
                    Activation::GeluTanh,
                    Activation::Silu,
                ] {
                    let what = format!("{path:?} m={m} k={k} n={n} {wdt} {act:?}");
                    let mut fused = poisoned(&g, &[m, n]);
                    g.linear_act(&xd, &wd, Some(&bd), act, &mut fused).unwrap();
                    let mut apart = poisoned(&g, &[m, n]);
                    g.linear(&xd, &wd, Some(&bd), &mut apart).unwrap();
                    g.activation(&mut apart, act).unwrap();
                    f.exact(
                        &format!("{what}: fused vs apart"),
                        &down(&g, &fused),
                        &down(&g, &apart),
                    );
                    let mut want = Tensor::zeros([m, n], DType::F32);
                    cpu()
                        .linear_act(&xh, &wh, Some(&bh), act, &mut want)
                        .unwrap();
                    f.check(
                        &format!("{what}: vs cpu"),
                        &down(&g, &fused),
                        want.as_f32().unwrap(),
                        loose,
                    );
                }
            }
        }
    }
    f.finish("linear_act");
}
