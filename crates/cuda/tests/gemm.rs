//! kernels/gemm.cu against the CPU backend.
//!
//! linear: M in {1, 3, 8, 9, 17, 64, 130}, K and N in {7, 64, 130, 512}, every
//! weight dtype, with and without bias (f32 and bf16 bias), through both the
//! GEMV (M <= 8) and the tiled kernel; narrowed weight views (f32, int8); the
//! GEMV's 16-byte loads on long rows and its element-wise path on misaligned
//! operands.
//! Float weights: the CPU widens the same f16/bf16 values to f32, so both
//! compute the same f32 dot products: tolerance `tol_dot(K)` (rel L2 1e-5,
//! abs 1e-5 * max(1, sqrt(K)/8) + rel 1e-4) — except f16/bf16 weights with
//! M > 8 on `GemmPath::Auto`, which run on tensor cores with the activations
//! rounded to the weight dtype (kernels/gemm_tc.cu): `tol_tc(K)` (rel L2 1e-2;
//! tests/gemm_tc.rs checks that kernel closely). Int8 weights: the GEMV and the
//! tiled kernel are weight-only (dequantise in registers), while the CPU's VNNI
//! path also quantises the activations, so they are compared with the CPU on the
//! dequantised f32 weights (`tol_dot`) and with the CPU's own int8 op under
//! `tol_int8_vs_cpu` (rel L2 1e-2); M > 8 on `GemmPath::Auto` is the W8A8
//! tensor-core kernel (kernels/gemm_i8_tc.cu, activations quantised per row):
//! `tol_int8_vs_cpu` against both (tests/gemm_i8_tc.rs checks it closely).
//! linear_add (the residual epilogue): bit for bit linear + add_assign on the
//! device, on every path, and close to the CPU's linear_add.
//! batched_matmul: contiguous, transposed (`kᵀ`) and narrowed views as b.

mod common;
mod half_io;

use common::*;
use encdec_core::testing::{random_normal, random_vec, Tol};
use encdec_core::{Backend, DType, Tensor};
use encdec_cuda::GemmPath;

/// Against the CPU's int8 op, which (with VNNI) also quantises the
/// activations to u8 per row: rel L2 1e-2 (issue 5's bound for quantised
/// operands; measured ~4e-3), per element abs 0.01 * sqrt(K) + rel 2e-2.
fn tol_int8_vs_cpu(k: usize) -> Tol {
    Tol {
        rel_l2: 1e-2,
        abs: 0.01 * (k as f64).sqrt(),
        rel: 2e-2,
    }
}

/// `tol_dot(k)`, except for int8 weights on the CPU stand-in
/// (ENCDEC_CUDA_TESTS_ON_CPU=1), which quantises activations too, and for
/// the tensor-core paths (M > 8, `GemmPath::Auto`: f16/bf16 weights, and int8
/// weights with quantised activations).
fn tol(g: &Dut, wdt: DType, path: GemmPath, m: usize, k: usize) -> Tol {
    let auto_big = path == GemmPath::Auto && m > 8;
    let tc = auto_big && matches!(wdt, DType::F16 | DType::BF16);
    if wdt == DType::I8 && (g.cuda.is_none() || auto_big) {
        tol_int8_vs_cpu(k)
    } else if tc {
        tol_tc(k)
    } else {
        tol_dot(k)
    }
}

/// Against the CPU's int8 op: `tol_int8_vs_cpu`, except on the W8A8 path
/// (M > 8, `GemmPath::Auto`), where both sides quantise the activations, each
/// its own way (int8 symmetric here, u8 on the CPU), so the two errors add:
/// rel L2 2e-2 (measured up to 1.1e-2 at K = 512, N = 7).
fn tol_vs_cpu_int8_op(path: GemmPath, m: usize, k: usize) -> Tol {
    let t = tol_int8_vs_cpu(k);
    if path == GemmPath::Auto && m > 8 {
        Tol { rel_l2: 2e-2, ..t }
    } else {
        t
    }
}

const MS: [usize; 7] = [1, 3, 8, 9, 17, 64, 130];
const KN: [usize; 4] = [7, 64, 130, 512];

#[test]
fn linear_matches_cpu_for_every_weight_dtype_and_shape() {
    let g = gpu_or_skip!("linear_matches_cpu_for_every_weight_dtype_and_shape");
    let mut f = Failures::default();
    for path in [GemmPath::Auto, GemmPath::Tiled] {
        g.set_gemm_path(path);
        for m in MS {
            for k in KN {
                for n in KN {
                    let seed = (m * 1000 + k * 10 + n) as u64;
                    let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
                    let w = random_normal(seed + 1, n * k, 0.2);
                    let bias = random_vec(seed + 2, n);
                    let xd = up(&g, &xh);
                    for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
                        let wh = host_as(w.clone(), &[n, k], wdt);
                        let wd = up(&g, &wh);
                        // The f32 weights the op means (dequantised for int8).
                        let wf = cpu().cast(&wh, DType::F32).unwrap();
                        for bias_dt in [None, Some(DType::F32), Some(DType::BF16)] {
                            let bh = bias_dt.map(|dt| host_as(bias.clone(), &[n], dt));
                            let bd = bh.as_ref().map(|b| up(&g, b));
                            let mut want = Tensor::zeros([m, n], DType::F32);
                            cpu().linear(&xh, &wf, bh.as_ref(), &mut want).unwrap();
                            let mut got = poisoned(&g, &[m, n]);
                            let what = format!(
                                "linear {path:?} M={m} K={k} N={n} w={wdt} bias={bias_dt:?} seed={seed}"
                            );
                            if let Err(e) = g.linear(&xd, &wd, bd.as_ref(), &mut got) {
                                f.push(format!("{what}: {e}"));
                                continue;
                            }
                            let got = down(&g, &got);
                            f.check(
                                &what,
                                &got,
                                &want.to_f32_vec().unwrap(),
                                tol(&g, wdt, path, m, k),
                            );
                            if wdt == DType::I8 && bias_dt.is_none() {
                                let mut want8 = Tensor::zeros([m, n], DType::F32);
                                cpu().linear(&xh, &wh, None, &mut want8).unwrap();
                                f.check(
                                    &format!("{what} vs the CPU int8 op"),
                                    &got,
                                    &want8.to_f32_vec().unwrap(),
                                    tol_vs_cpu_int8_op(path, m, k),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    f.finish("linear");
}

#[test]
fn linear_takes_leading_dims_and_narrowed_weights() {
    let g = gpu_or_skip!("linear_takes_leading_dims_and_narrowed_weights");
    let mut f = Failures::default();
    let (b, t, k, n) = (2, 5, 33, 17);
    let xh = host(random_normal(1, b * t * k, 1.0), &[b, t, k]);
    let wh = host(random_normal(2, n * k, 0.2), &[n, k]);
    for wdt in [DType::F32, DType::I8] {
        let w = cpu().cast(&wh, wdt).unwrap();
        // Rows 3..10 of w (a fused projection's slice).
        let wn = w.narrow(0, 3, 7).unwrap();
        let wnf = cpu().cast(&wn, DType::F32).unwrap();
        let mut want = Tensor::zeros([b, t, 7], DType::F32);
        cpu().linear(&xh, &wnf, None, &mut want).unwrap();
        let wd = up(&g, &w).narrow(0, 3, 7).unwrap();
        let mut got = poisoned(&g, &[b, t, 7]);
        g.linear(&up(&g, &xh), &wd, None, &mut got).unwrap();
        f.check(
            &format!("linear narrowed {wdt}"),
            &down(&g, &got),
            &want.to_f32_vec().unwrap(),
            tol(&g, wdt, GemmPath::Auto, b * t, k),
        );
    }
    f.finish("linear views");
}

/// The GEMV's 16-byte fast path (K a multiple of 16 / the element size, 16 B
/// aligned rows): rows long enough for several rounds of the unrolled loads
/// and for a partial last round (K = 16, 528, 2064, 4112), M = 1, 2, 8, every
/// weight dtype; then the same products with x (and float weights) one
/// element off 16 B alignment, which must take the element-wise path and
/// agree too. Both against the CPU under `tol_dot(K)`.
#[test]
fn gemv_vector_loads_match_cpu_and_fall_back_when_misaligned() {
    let g = gpu_or_skip!("gemv_vector_loads_match_cpu_and_fall_back_when_misaligned");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    let n = 9; // two blocks, the second with one live warp
    for m in [1, 2, 8] {
        for k in [16, 528, 2064, 4112] {
            let seed = (m * 10_000 + k) as u64;
            let xv = random_normal(seed, m * k, 1.0);
            let xh = host(xv.clone(), &[m, k]);
            let xd = up(&g, &xh);
            // The same x one f32 past a 16 B boundary.
            let mut shifted = vec![0.0; m * k + 1];
            shifted[1..].copy_from_slice(&xv);
            let xd_off = up(&g, &host(shifted, &[m * k + 1]))
                .narrow(0, 1, m * k)
                .unwrap()
                .reshape([m, k])
                .unwrap();
            let w = random_normal(seed + 1, n * k, 0.2);
            for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
                let wh = host_as(w.clone(), &[n, k], wdt);
                let wf = cpu().cast(&wh, DType::F32).unwrap();
                let mut want = Tensor::zeros([m, n], DType::F32);
                cpu().linear(&xh, &wf, None, &mut want).unwrap();
                let want = want.to_f32_vec().unwrap();
                let wd = up(&g, &wh);
                let mut views = vec![("aligned", xd.clone(), wd.clone())];
                views.push(("x misaligned", xd_off.clone(), wd.clone()));
                if wdt != DType::I8 {
                    // Float weights one element off too (int8 rows carry scales).
                    let mut wv = wf.to_f32_vec().unwrap();
                    wv.insert(0, 0.0);
                    let w_off = up(&g, &host_as(wv, &[n * k + 1], wdt))
                        .narrow(0, 1, n * k)
                        .unwrap()
                        .reshape([n, k])
                        .unwrap();
                    views.push(("w misaligned", xd.clone(), w_off));
                }
                for (how, x, w) in views {
                    let what = format!("gemv {how} M={m} K={k} N={n} w={wdt} seed={seed}");
                    let mut got = poisoned(&g, &[m, n]);
                    match g.linear(&x, &w, None, &mut got) {
                        Ok(()) => f.check(
                            &what,
                            &down(&g, &got),
                            &want,
                            tol(&g, wdt, GemmPath::Auto, m, k),
                        ),
                        Err(e) => f.push(format!("{what}: {e}")),
                    }
                }
            }
        }
    }
    f.finish("gemv vector loads");
}

/// `linear_add` (a sublayer's output projection into the residual stream):
/// every path (GEMV, tiled, f16/bf16 and int8 tensor cores) adds in its
/// epilogue. Bit for bit the device's `linear` then `add_assign`; against the
/// CPU's `linear_add` under `linear`'s tolerance for the path. The residual is
/// random, so an epilogue that overwrote it, or added it twice, fails both.
#[test]
fn linear_add_equals_linear_then_add_assign() {
    let g = gpu_or_skip!("linear_add_equals_linear_then_add_assign");
    let mut f = Failures::default();
    for path in [GemmPath::Auto, GemmPath::Tiled] {
        g.set_gemm_path(path);
        for (m, k, n) in [
            (1, 64, 7),
            (3, 130, 65),
            (8, 7, 130),
            (9, 33, 17),
            (130, 64, 129),
        ] {
            let seed = (m * 1000 + k * 10 + n) as u64 + 7;
            let xh = host(random_normal(seed, m * k, 1.0), &[m, k]);
            let w = random_normal(seed + 1, n * k, 0.2);
            let bh = host(random_vec(seed + 2, n), &[n]);
            let rv = random_normal(seed + 3, m * n, 1.0);
            let residual = host(rv.clone(), &[m, n]);
            let (xd, bd) = (up(&g, &xh), up(&g, &bh));
            for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
                let wh = host_as(w.clone(), &[n, k], wdt);
                let wd = up(&g, &wh);
                let wf = cpu().cast(&wh, DType::F32).unwrap();
                for bias in [false, true] {
                    let what = format!("linear_add {path:?} M={m} K={k} N={n} w={wdt} bias={bias}");
                    let (bh, bd) = if bias {
                        (Some(&bh), Some(&bd))
                    } else {
                        (None, None)
                    };
                    let mut fused = up(&g, &residual);
                    if let Err(e) = g.linear_add(&xd, &wd, bd, &mut fused) {
                        f.push(format!("{what}: {e}"));
                        continue;
                    }
                    let mut y = poisoned(&g, &[m, n]);
                    g.linear(&xd, &wd, bd, &mut y).unwrap();
                    let mut apart = up(&g, &residual);
                    g.add_assign(&mut apart, &y).unwrap();
                    let fused = down(&g, &fused);
                    f.exact(
                        &format!("{what}: fused vs apart"),
                        &fused,
                        &down(&g, &apart),
                    );
                    let mut want = host(rv.clone(), &[m, n]);
                    cpu().linear_add(&xh, &wf, bh, &mut want).unwrap();
                    f.check(
                        &format!("{what}: vs cpu"),
                        &fused,
                        want.as_f32().unwrap(),
                        tol(&g, wdt, path, m, k),
                    );
                }
            }
        }
    }
    f.finish("linear_add");
}

#[test]
fn batched_matmul_matches_cpu_with_strided_b() {
    let g = gpu_or_skip!("batched_matmul_matches_cpu_with_strided_b");
    let mut f = Failures::default();
    for &(batch, m, k, n) in &[
        (1usize, 1usize, 1usize, 1usize),
        (2, 3, 7, 5),
        (3, 17, 64, 130),
        (4, 64, 130, 64),
        (2, 100, 33, 200),
    ] {
        let ah = host(random_normal(1, batch * m * k, 1.0), &[batch, m, k]);
        let ad = up(&g, &ah);
        // b contiguous [B, K, N]; b as the transpose of [B, N, K]; b narrowed from [B, K + 3, N].
        let b1 = host(random_normal(2, batch * k * n, 1.0), &[batch, k, n]);
        let b2 = host(random_normal(3, batch * n * k, 1.0), &[batch, n, k]);
        let b3 = host(
            random_normal(4, batch * (k + 3) * n, 1.0),
            &[batch, k + 3, n],
        );
        let cases = [
            ("contiguous", b1.clone(), up(&g, &b1)),
            (
                "transposed",
                b2.transpose(1, 2).unwrap(),
                up(&g, &b2).transpose(1, 2).unwrap(),
            ),
            (
                "narrowed",
                b3.narrow(1, 2, k).unwrap(),
                up(&g, &b3).narrow(1, 2, k).unwrap(),
            ),
        ];
        for (name, bh, bd) in cases {
            let mut want = Tensor::zeros([batch, m, n], DType::F32);
            cpu().batched_matmul(&ah, &bh, &mut want).unwrap();
            let mut got = poisoned(&g, &[batch, m, n]);
            let what = format!("batched_matmul {name} B={batch} M={m} K={k} N={n}");
            match g.batched_matmul(&ad, &bd, &mut got) {
                Ok(()) => f.check(
                    &what,
                    &down(&g, &got),
                    &want.to_f32_vec().unwrap(),
                    tol_dot(k),
                ),
                Err(e) => f.push(format!("{what}: {e}")),
            }
        }
    }
    f.finish("batched_matmul");
}

/// Half activations off the f16/bf16 tensor-core kernels: the GEMV (M <= 8;
/// x widened into pooled scratch, out rounded in its epilogue), the FP32-FMA
/// tiled kernel (f32 weights, and every weight dtype on `GemmPath::Tiled`),
/// the int8 paths (weight-only GEMV / tiled; W8A8 for M > 8 on Auto, whose
/// quantiser reads the half x as it is). For x and out in f32/f16/bf16:
/// linear (with bias), linear_act, linear_gated and linear_add, bit for bit
/// the same path on the device-widened x into an f32 out, then the device cast
/// (tests/half_io). K = 64 takes the GEMV's 16-byte loads, K = 33 its
/// element-wise ones; x one element into its buffer is misaligned.
#[test]
fn half_x_and_out_off_tensor_cores_equal_the_widened_x_then_cast() {
    let g = gpu_or_skip!("half_x_and_out_off_tensor_cores_equal_the_widened_x_then_cast");
    let mut f = Failures::default();
    for (path, m, k, n, x_offset) in [
        (GemmPath::Auto, 1, 64, 20, 0),
        (GemmPath::Auto, 3, 33, 7, 0),
        (GemmPath::Auto, 8, 64, 20, 1),
        (GemmPath::Auto, 17, 40, 70, 0),
        (GemmPath::Tiled, 17, 33, 70, 0),
        (GemmPath::Tiled, 70, 64, 9, 1),
    ] {
        g.set_gemm_path(path);
        let seed = (m * 100_000 + k * 100 + n + x_offset) as u64 ^ 0x3c5;
        for wdt in [DType::F32, DType::F16, DType::BF16, DType::I8] {
            // f16/bf16 weights on Auto above the GEMV are tests/gemm_tc.rs's.
            if path == GemmPath::Auto && m > 8 && matches!(wdt, DType::F16 | DType::BF16) {
                continue;
            }
            let what = format!("{path:?} M={m} K={k} N={n} w={wdt} x_offset={x_offset}");
            half_io::check_random(&g, &mut f, &what, seed, [m, k, n], wdt, x_offset);
        }
    }
    f.finish("half activations off tensor cores");
}

/// u32 x or out, and a half residual for linear_add, are errors (not panics).
#[test]
fn linear_activation_dtype_errors() {
    let g = gpu_or_skip!("linear_activation_dtype_errors");
    let (m, k, n) = (3, 8, 4);
    let x = up(&g, &host(random_vec(1, m * k), &[m, k]));
    let w = up(&g, &host(random_vec(2, n * k), &[n, k]));
    let ids = up(&g, &Tensor::from_u32(vec![1; m * k], [m, k]).unwrap());
    let mut out = poisoned(&g, &[m, n]);
    let mut out_u32 = up(&g, &Tensor::from_u32(vec![0; m * n], [m, n]).unwrap());
    let act = encdec_core::Activation::Gelu;
    let errs = [
        ("linear u32 x", g.linear(&ids, &w, None, &mut out).err()),
        (
            "linear_act u32 x",
            g.linear_act(&ids, &w, None, act, &mut out).err(),
        ),
        (
            "linear_gated u32 x",
            g.linear_gated(&ids, &w, &w, act, &mut out).err(),
        ),
        (
            "linear_add u32 x",
            g.linear_add(&ids, &w, None, &mut out).err(),
        ),
        ("linear u32 out", g.linear(&x, &w, None, &mut out_u32).err()),
        (
            "linear_gated u32 out",
            g.linear_gated(&x, &w, &w, act, &mut out_u32).err(),
        ),
    ];
    for (what, e) in errs {
        let e = e.unwrap_or_else(|| panic!("{what}: not an error"));
        assert!(e.to_string().contains("u32"), "{what}: {e}");
    }
    for odt in [DType::F16, DType::BF16] {
        let mut half_out = poisoned_as(&g, &[m, n], odt);
        let e = g.linear_add(&x, &w, None, &mut half_out);
        assert!(
            e.is_err(),
            "linear_add into a {odt} residual must be an error"
        );
    }
}
