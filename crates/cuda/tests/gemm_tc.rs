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
mod half_io;

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

/// Split-K (ops/gemm.rs `split_k`): when the 64 x 128 output tiles are fewer
/// than the device's SMs, the tensor-core kernels sum K in chunks (grid z) into
/// f32 partials and `splitk_reduce_f32` / `splitk_reduce_gated_f32` apply the
/// epilogue. (M, K, N) and what they do on the emulator's 4 SMs:
/// - (9, 520, 130): 2 blocks -> 2 splits, chunks 288 + 232 (16 B copies);
/// - (16, 1040, 257): 3 blocks -> 2 splits, 544 + 496;
/// - (9, 777, 7): 1 block -> 3 splits, 288 + 288 + 201 (odd K: element-wise);
/// - (17, 1036, 130): 2 splits, 544 + 492 (K % 8 == 4: float4 activations,
///   element-wise weights);
/// - (33, 4100, 40): 1 block -> 4 splits of 1056 (last 932);
/// - (64, 300, 7): 1 block but K / 256 = 1: not split;
/// - (130, 520, 257): 9 blocks >= 4 SMs: not split.
///
/// On a GPU with 100+ SMs all of them split except (130, 520, 257) (2
/// splits) and (64, 300, 7).
const SPLIT_SHAPES: [(usize, usize, usize); 7] = [
    (9, 520, 130),
    (16, 1040, 257),
    (9, 777, 7),
    (17, 1036, 130),
    (33, 4100, 40),
    (64, 300, 7),
    (130, 520, 257),
];

/// Every epilogue on the split (and unsplit) shapes: `linear` with and without
/// bias, `linear_act` for each activation, `linear_add` onto a random
/// residual; f16 and bf16; outputs poisoned. Against the CPU (the f32 op within
/// `tol_tc`, the op on x rounded to the weight dtype within `tol_rounded`, so a
/// lost or doubled chunk, or one k too many or too few at a chunk edge, fails)
/// and bit for bit the device's own `linear` then `activation` / `add_assign`.
#[test]
fn linear_tc_split_k_matches_cpu_for_every_epilogue() {
    use encdec_core::Activation;
    let g = gpu_or_skip!("linear_tc_split_k_matches_cpu_for_every_epilogue");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for (m, k, n) in SPLIT_SHAPES {
        let seed = (m * 100_000 + k * 100 + n) as u64 ^ 0x5b1;
        let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
        let w = random_normal(seed + 1, n * k, 0.2);
        let bh = host(random_vec(seed + 2, n), &[n]);
        let rv = random_normal(seed + 3, m * n, 1.0);
        let residual = host(rv.clone(), &[m, n]);
        let (xd, bd) = (up(&g, &xh), up(&g, &bh));
        for wdt in [DType::F16, DType::BF16] {
            let wh = host_as(w.clone(), &[n, k], wdt);
            let wd = up(&g, &wh);
            let wf = cpu().cast(&wh, DType::F32).unwrap();
            let xr = cpu()
                .cast(&cpu().cast(&xh, wdt).unwrap(), DType::F32)
                .unwrap();
            for with_bias in [false, true] {
                let (b, bdev) = (with_bias.then_some(&bh), with_bias.then_some(&bd));
                let base = format!("split-K M={m} K={k} N={n} w={wdt} bias={with_bias}");
                // The CPU references: on x, and on x rounded to the weight dtype.
                let refs = |act: Option<Activation>, acc: bool| {
                    [&xh, &xr].map(|x| {
                        let mut want = if acc {
                            host(rv.clone(), &[m, n])
                        } else {
                            Tensor::zeros([m, n], DType::F32)
                        };
                        match (act, acc) {
                            (_, true) => cpu().linear_add(x, &wf, b, &mut want).unwrap(),
                            (Some(a), _) => cpu().linear_act(x, &wf, b, a, &mut want).unwrap(),
                            (None, _) => cpu().linear(x, &wf, b, &mut want).unwrap(),
                        }
                        want.to_f32_vec().unwrap()
                    })
                };
                let check = |f: &mut Failures, what: &str, got: &[f32], want: [Vec<f32>; 2]| {
                    f.check(what, got, &want[0], tol_tc(k));
                    if g.cuda.is_some() {
                        f.check(
                            &format!("{what} vs x rounded to {wdt}"),
                            got,
                            &want[1],
                            tol_rounded(k),
                        );
                    }
                };
                let mut lin = poisoned(&g, &[m, n]);
                g.linear(&xd, &wd, bdev, &mut lin).unwrap();
                let lin_h = down(&g, &lin);
                check(&mut f, &format!("{base} linear"), &lin_h, refs(None, false));
                for act in [
                    Activation::Relu,
                    Activation::Gelu,
                    Activation::GeluTanh,
                    Activation::Silu,
                ] {
                    let what = format!("{base} linear_act {act:?}");
                    let mut fused = poisoned(&g, &[m, n]);
                    g.linear_act(&xd, &wd, bdev, act, &mut fused).unwrap();
                    let fused = down(&g, &fused);
                    let mut apart = up(&g, &host(lin_h.clone(), &[m, n]));
                    g.activation(&mut apart, act).unwrap();
                    f.exact(
                        &format!("{what}: fused vs apart"),
                        &fused,
                        &down(&g, &apart),
                    );
                    check(&mut f, &what, &fused, refs(Some(act), false));
                }
                let what = format!("{base} linear_add");
                let mut fused = up(&g, &residual);
                g.linear_add(&xd, &wd, bdev, &mut fused).unwrap();
                let fused = down(&g, &fused);
                let mut apart = up(&g, &residual);
                g.add_assign(&mut apart, &lin).unwrap();
                f.exact(
                    &format!("{what}: fused vs apart"),
                    &fused,
                    &down(&g, &apart),
                );
                check(&mut f, &what, &fused, refs(None, true));
            }
        }
    }
    f.finish("linear_tc split-K");
}

/// Split-K with weight views that start mid-matrix (3 rows in): K = 520 keeps
/// the 16 B copies (row starts 16 B aligned), K = 521 the element-wise path.
/// 21 x 29 outputs are one block: 2 splits on the emulator.
#[test]
fn linear_tc_split_k_takes_narrowed_weights() {
    let g = gpu_or_skip!("linear_tc_split_k_takes_narrowed_weights");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for k in [520, 521] {
        let (m, n) = (21, 29);
        let xh = host(random_normal(41 + k as u64, m * k, 1.0), &[m, k]);
        let bh = host(random_vec(43, n), &[n]);
        for wdt in [DType::F16, DType::BF16] {
            let wh = host_as(random_normal(42 + k as u64, 40 * k, 0.2), &[40, k], wdt);
            let wnf = cpu()
                .cast(&wh.narrow(0, 3, n).unwrap(), DType::F32)
                .unwrap();
            let xr = cpu()
                .cast(&cpu().cast(&xh, wdt).unwrap(), DType::F32)
                .unwrap();
            let mut want = Tensor::zeros([m, n], DType::F32);
            cpu().linear(&xh, &wnf, Some(&bh), &mut want).unwrap();
            let mut want_r = Tensor::zeros([m, n], DType::F32);
            cpu().linear(&xr, &wnf, Some(&bh), &mut want_r).unwrap();
            let wd = up(&g, &wh).narrow(0, 3, n).unwrap();
            let mut got = poisoned(&g, &[m, n]);
            let what = format!("split-K narrowed w={wdt} K={k}");
            if let Err(e) = g.linear(&up(&g, &xh), &wd, Some(&up(&g, &bh)), &mut got) {
                f.push(format!("{what}: {e}"));
                continue;
            }
            let got = down(&g, &got);
            f.check(&what, &got, &want.to_f32_vec().unwrap(), tol_tc(k));
            if g.cuda.is_some() {
                f.check(
                    &format!("{what} vs x rounded"),
                    &got,
                    &want_r.to_f32_vec().unwrap(),
                    tol_rounded(k),
                );
            }
        }
    }
    f.finish("linear_tc split-K views");
}

/// `linear_gated` on split shapes (the split decision is `linear`'s, counted
/// with its 64 x 128 tile): bit for bit two `linear`s then `gated_activation`
/// for every activation (each sum split and reduced in the same order), and
/// close to the CPU's `linear_gated` on x rounded to the weight dtype.
#[test]
fn linear_gated_tc_split_k_equals_unfused_and_matches_cpu() {
    use encdec_core::Activation;
    let g = gpu_or_skip!("linear_gated_tc_split_k_equals_unfused_and_matches_cpu");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    // (9, 1040, 100): 1 block of linear's tile (4 splits), 2 of the gated
    // tile (which would give 2): the sums are linear's only if the gated call
    // splits by linear's tile.
    for (m, k, n) in [
        (9, 520, 130),
        (9, 777, 7),
        (17, 1036, 130),
        (64, 300, 7),
        (9, 1040, 100),
    ] {
        let seed = (m * 100_000 + k * 100 + n) as u64 ^ 0x6a7;
        let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
        let xd = up(&g, &xh);
        let wg = random_normal(seed + 1, n * k, 0.2);
        let wu = random_normal(seed + 2, n * k, 0.2);
        for wdt in [DType::F16, DType::BF16] {
            let (wgh, wuh) = (
                host_as(wg.clone(), &[n, k], wdt),
                host_as(wu.clone(), &[n, k], wdt),
            );
            let (wgd, wud) = (up(&g, &wgh), up(&g, &wuh));
            let (wgf, wuf) = (
                cpu().cast(&wgh, DType::F32).unwrap(),
                cpu().cast(&wuh, DType::F32).unwrap(),
            );
            let xr = cpu()
                .cast(&cpu().cast(&xh, wdt).unwrap(), DType::F32)
                .unwrap();
            let mut gate = poisoned(&g, &[m, n]);
            let mut upp = poisoned(&g, &[m, n]);
            g.linear(&xd, &wgd, None, &mut gate).unwrap();
            g.linear(&xd, &wud, None, &mut upp).unwrap();
            for act in [
                Activation::Relu,
                Activation::Gelu,
                Activation::GeluTanh,
                Activation::Silu,
                Activation::Identity,
            ] {
                let what = format!("split-K gated M={m} K={k} N={n} w={wdt} {act:?}");
                let mut fused = poisoned(&g, &[m, n]);
                if let Err(e) = g.linear_gated(&xd, &wgd, &wud, act, &mut fused) {
                    f.push(format!("{what}: {e}"));
                    continue;
                }
                let got = down(&g, &fused);
                let mut apart = poisoned(&g, &[m, n]);
                g.gated_activation(&gate, &upp, act, &mut apart).unwrap();
                f.exact(
                    &format!("{what}: fused vs unfused"),
                    &got,
                    &down(&g, &apart),
                );
                let mut want = Tensor::zeros([m, n], DType::F32);
                cpu().linear_gated(&xh, &wgf, &wuf, act, &mut want).unwrap();
                let loose = Tol {
                    rel_l2: 2e-2,
                    abs: 0.02 * (k as f64).sqrt(),
                    rel: 4e-2,
                };
                f.check(
                    &format!("{what}: vs cpu"),
                    &got,
                    want.as_f32().unwrap(),
                    loose,
                );
                if g.cuda.is_some() {
                    let mut want_r = Tensor::zeros([m, n], DType::F32);
                    cpu()
                        .linear_gated(&xr, &wgf, &wuf, act, &mut want_r)
                        .unwrap();
                    // A product of two sums: twice linear's relative error.
                    let t = tol_rounded(k);
                    let t = Tol {
                        rel_l2: 2.0 * t.rel_l2,
                        abs: 10.0 * t.abs,
                        rel: 2.0 * t.rel,
                    };
                    f.check(
                        &format!("{what}: vs cpu on x rounded"),
                        &got,
                        want_r.as_f32().unwrap(),
                        t,
                    );
                }
            }
        }
    }
    f.finish("linear_gated_tc split-K");
}

/// Half activations on the tensor-core path (`linear_tc_*_hx` for x in the
/// weight's half type, the f32 kernel on the widened x for the other half
/// type, every kernel's half out): for x and out in f32/f16/bf16, linear (with
/// bias), linear_act, linear_gated and linear_add, bit for bit the same kernel
/// on the device-widened x into an f32 out, then the device cast
/// (tests/half_io). Shapes (4 SMs on the emulator):
/// - (17, 40, 130): unsplit, K % 8 == 0: 16 B cp.async of half x, 2 column blocks;
/// - (70, 64, 20): unsplit, 2 row blocks (a 6-row edge);
/// - (9, 33, 7): odd K, element-wise loads;
/// - (9, 520, 130): split-K (2 splits), 16 B copies;
/// - (17, 1036, 130): split-K, K % 8 == 4 (half x element-wise, f32 x float4);
/// - x views one element into their buffer (rows not 16 B aligned: the
///   element-wise loads) unsplit and split.
#[test]
fn half_x_and_out_on_tensor_cores_equal_the_widened_x_then_cast() {
    let g = gpu_or_skip!("half_x_and_out_on_tensor_cores_equal_the_widened_x_then_cast");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for (m, k, n, x_offset) in [
        (17, 40, 130, 0),
        (70, 64, 20, 0),
        (9, 33, 7, 0),
        (9, 520, 130, 0),
        (17, 1036, 130, 0),
        (17, 40, 130, 1),
        (9, 520, 130, 1),
    ] {
        let seed = (m * 100_000 + k * 100 + n + x_offset) as u64 ^ 0x4a1f;
        for wdt in [DType::F16, DType::BF16] {
            let what = format!("tc M={m} K={k} N={n} w={wdt} x_offset={x_offset}");
            half_io::check_random(&g, &mut f, &what, seed, [m, k, n], wdt, x_offset);
        }
    }
    f.finish("half activations on tensor cores");
}

/// The half-x kernels against the CPU's f32 op on the widened x (rounded to
/// the weight type as the kernel does): the bit-for-bit test above compares
/// the device with itself, this one pins both to the op's meaning.
#[test]
fn half_x_on_tensor_cores_matches_cpu() {
    let g = gpu_or_skip!("half_x_on_tensor_cores_matches_cpu");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for (m, k, n) in [(17, 40, 130), (9, 520, 130)] {
        let seed = (m * 1000 + k + n) as u64 ^ 0x99;
        for wdt in [DType::F16, DType::BF16] {
            let xh = host_as(random_normal(seed, m * k, 1.0), &[m, k], wdt);
            let wh = host_as(random_normal(seed + 1, n * k, 0.2), &[n, k], wdt);
            let wf = cpu().cast(&wh, DType::F32).unwrap();
            let xw = cpu().cast(&xh, DType::F32).unwrap();
            let mut want = Tensor::zeros([m, n], DType::F32);
            cpu().linear(&xw, &wf, None, &mut want).unwrap();
            let mut got = poisoned(&g, &[m, n]);
            let what = format!("tc half x M={m} K={k} N={n} w={wdt}");
            match g.linear(&up(&g, &xh), &up(&g, &wh), None, &mut got) {
                Ok(()) => f.check(
                    &what,
                    &down(&g, &got),
                    &want.to_f32_vec().unwrap(),
                    tol_rounded(k),
                ),
                Err(e) => f.push(format!("{what}: {e}")),
            }
        }
    }
    f.finish("half x on tensor cores vs cpu");
}
