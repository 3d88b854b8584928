//! kernels/gemm_i8_tc.cu (`linear` with int8 weights as a W8A8 GEMM on int8
//! tensor cores: the path `GemmPath::Auto` takes for M > 8 on sm_80+) against
//! the CPU backend.
//!
//! Shapes: M in {9, 17, 64, 130} (one row past the GEMV range, odd, a full
//! block tile, three tiles with a 2-row edge), K in {7, 33, 64, 130, 520}
//! (odd, not a multiple of 16 or of the 64-wide K step; 64 takes the 16-byte
//! cp.async path, the others the byte-wise one), N in {7, 130, 257} (edges of
//! the 128-wide tile); with and without bias; outputs poisoned (NaN).
//! References for each case:
//! - the op's meaning, the CPU's f32 `linear` of x and the dequantised
//!   weights: rel L2 2e-2 (the activation quantisation error; measured below
//!   ~7e-3 at K = 520);
//! - the same W8A8 math computed here: x quantised per row by the kernel's rule
//!   (`quantise_row`, the f32 ops of `quantize_i8_f32`, so the int8 values are
//!   the kernel's bit for bit), integer dot products, scales and bias in f64:
//!   rel L2 1e-5 (only the f32 rounding of the kernel's epilogue differs) — a
//!   fragment-layout or pipeline bug that moves a few products fails here even
//!   when it hides under 2e-2;
//! - the CPU backend's own int8 `linear` (which quantises activations its own
//!   way): rel L2 2e-2.

mod common;

use common::*;
use encdec_core::testing::{random_normal, random_vec, Tol};
use encdec_core::{Backend, DType, HostStorage, Tensor};
use encdec_cuda::GemmPath;

const MS: [usize; 4] = [9, 17, 64, 130];
const KS: [usize; 5] = [7, 33, 64, 130, 520];
const NS: [usize; 3] = [7, 130, 257];

/// Against f32 math: the activation quantisation error (per element about
/// 0.3 % of |x|max per product), rel L2 2e-2, per element 0.02 sqrt(K) + 2e-2 |ref|.
fn tol_w8a8(k: usize) -> Tol {
    Tol {
        rel_l2: 2e-2,
        abs: 0.02 * (k.max(1) as f64).sqrt(),
        rel: 2e-2,
    }
}

/// Against the exact W8A8 result: f32 rounding of `f32(acc) * sx * sw + bias`.
fn tol_exact_w8a8(k: usize) -> Tol {
    let s = ((k.max(1) as f64).sqrt() / 8.0).max(1.0);
    Tol {
        rel_l2: 1e-5,
        abs: 1e-5 * s,
        rel: 1e-4,
    }
}

/// Int8 values and row scales of a host int8 tensor.
fn int8_parts(t: &Tensor) -> (Vec<i8>, Vec<f32>) {
    match t.host().unwrap() {
        HostStorage::I8 { data, scales } => (data.clone(), scales.clone()),
        h => panic!("expected int8, got {}", h.dtype()),
    }
}

/// The activation quantisation of `quantize_i8_f32` (kernels/elementwise.cu):
/// s = absmax / 127 in f32, q = round_half_even(x / s) in f32, clamped to
/// +-127; a zero scale gives q = 0.
fn quantise_row(x: &[f32]) -> (Vec<i32>, f32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let s = amax / 127.0;
    let q = x
        .iter()
        .map(|&v| {
            if s == 0.0 {
                0
            } else {
                (v / s).round_ties_even().clamp(-127.0, 127.0) as i32
            }
        })
        .collect();
    (q, s)
}

/// `out[m, n] = (sum_k qx[m, k] w[n, k]) * sx[m] * sw[n] + bias[n]`, the sums
/// exact (i64), the rest in f64.
fn w8a8_reference(
    x: &[f32],
    (wq, sw): (&[i8], &[f32]),
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for r in 0..m {
        let (q, sx) = quantise_row(&x[r * k..(r + 1) * k]);
        for c in 0..n {
            let acc: i64 = (0..k).map(|i| q[i] as i64 * wq[c * k + i] as i64).sum();
            let mut v = acc as f64 * sx as f64 * sw[c] as f64;
            if let Some(b) = bias {
                v += b[c] as f64;
            }
            out[r * n + c] = v as f32;
        }
    }
    out
}

#[test]
fn linear_i8_tc_matches_cpu_and_the_exact_w8a8_result() {
    let g = gpu_or_skip!("linear_i8_tc_matches_cpu_and_the_exact_w8a8_result");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    let mut worst = (0.0f64, 0.0f64);
    for m in MS {
        for k in KS {
            for n in NS {
                let seed = (m * 100_000 + k * 100 + n) as u64 ^ 0x18;
                let x = random_normal(seed, m * k, 1.0);
                let xh = host(x.clone(), &[m, k]);
                let wh = host_as(random_normal(seed + 1, n * k, 0.2), &[n, k], DType::I8);
                let bias = random_vec(seed + 2, n);
                let bh = host(bias.clone(), &[n]);
                let (xd, wd, bd) = (up(&g, &xh), up(&g, &wh), up(&g, &bh));
                let wf = cpu().cast(&wh, DType::F32).unwrap();
                let (wq, sw) = int8_parts(&wh);
                for with_bias in [false, true] {
                    let b = with_bias.then_some(&bh);
                    let mut want = Tensor::zeros([m, n], DType::F32);
                    cpu().linear(&xh, &wf, b, &mut want).unwrap();
                    let want = want.to_f32_vec().unwrap();
                    let mut want8 = Tensor::zeros([m, n], DType::F32);
                    cpu().linear(&xh, &wh, b, &mut want8).unwrap();
                    let exact =
                        w8a8_reference(&x, (&wq, &sw), with_bias.then_some(&bias[..]), m, n, k);
                    let mut got = poisoned(&g, &[m, n]);
                    let what =
                        format!("linear_i8_tc M={m} K={k} N={n} bias={with_bias} seed={seed}");
                    if let Err(e) = g.linear(&xd, &wd, with_bias.then_some(&bd), &mut got) {
                        f.push(format!("{what}: {e}"));
                        continue;
                    }
                    let got = down(&g, &got);
                    f.check(&what, &got, &want, tol_w8a8(k));
                    f.check(
                        &format!("{what} vs the CPU int8 op"),
                        &got,
                        &want8.to_f32_vec().unwrap(),
                        tol_w8a8(k),
                    );
                    // (The CPU stand-in of ENCDEC_CUDA_TESTS_ON_CPU=1 quantises its own way.)
                    if g.cuda.is_some() {
                        f.check(
                            &format!("{what} vs exact W8A8"),
                            &got,
                            &exact,
                            tol_exact_w8a8(k),
                        );
                        worst.0 = worst.0.max(rel_l2(&got, &want));
                        worst.1 = worst.1.max(rel_l2(&got, &exact));
                    }
                }
            }
        }
    }
    eprintln!(
        "linear_i8_tc: worst rel L2 vs f32 (dequantised w) {:.2e}, vs exact W8A8 {:.2e}",
        worst.0, worst.1
    );
    f.finish("linear_i8_tc");
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut d, mut r) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        d += (a as f64 - b as f64).powi(2);
        r += (b as f64).powi(2);
    }
    (d / r.max(1e-300)).sqrt()
}

/// A row of zeros has scale 0: its outputs are the bias exactly (no 0/0 NaN),
/// and the other rows are unaffected.
#[test]
fn linear_i8_tc_gives_bias_only_for_a_zero_row() {
    let g = gpu_or_skip!("linear_i8_tc_gives_bias_only_for_a_zero_row");
    g.set_gemm_path(GemmPath::Auto);
    let (m, k, n) = (20, 64, 24);
    let mut x = random_normal(41, m * k, 1.0);
    x[5 * k..6 * k].fill(0.0);
    let xh = host(x.clone(), &[m, k]);
    let wh = host_as(random_normal(42, n * k, 0.2), &[n, k], DType::I8);
    let bias = random_vec(43, n);
    let bh = host(bias.clone(), &[n]);
    for with_bias in [false, true] {
        let mut got = poisoned(&g, &[m, n]);
        g.linear(
            &up(&g, &xh),
            &up(&g, &wh),
            with_bias.then_some(&up(&g, &bh)),
            &mut got,
        )
        .unwrap();
        let got = down(&g, &got);
        let row5: Vec<f32> = if with_bias {
            bias.clone()
        } else {
            vec![0.0; n]
        };
        check_exact(
            &format!("zero row, bias={with_bias}"),
            &got[5 * n..6 * n],
            &row5,
        );
        assert!(
            got.iter().all(|v| v.is_finite()),
            "bias={with_bias}: {got:?}"
        );
        if g.cuda.is_some() {
            let (wq, sw) = int8_parts(&wh);
            let exact = w8a8_reference(&x, (&wq, &sw), with_bias.then_some(&bias[..]), m, n, k);
            check(
                &format!("zero row, bias={with_bias}"),
                &got,
                &exact,
                tol_exact_w8a8(k),
            );
        }
    }
}

/// Leading dims of x and an int8 weight view that starts mid-matrix (a fused
/// projection's rows): K = 48 takes the 16-byte path (row 1 starts 48 B in),
/// K = 33 the byte-wise one (rows at odd addresses).
#[test]
fn linear_i8_tc_takes_leading_dims_and_narrowed_weights() {
    let g = gpu_or_skip!("linear_i8_tc_takes_leading_dims_and_narrowed_weights");
    g.set_gemm_path(GemmPath::Auto);
    let mut f = Failures::default();
    for k in [33, 48] {
        let (b, t, n) = (3, 7, 40);
        let x = random_normal(51, b * t * k, 1.0);
        let xh = host(x.clone(), &[b, t, k]);
        let wh = host_as(random_normal(52, n * k, 0.2), &[n, k], DType::I8);
        let wn = wh.narrow(0, 1, 29).unwrap();
        let wnf = cpu().cast(&wn, DType::F32).unwrap();
        let mut want = Tensor::zeros([b, t, 29], DType::F32);
        cpu().linear(&xh, &wnf, None, &mut want).unwrap();
        let wd = up(&g, &wh).narrow(0, 1, 29).unwrap();
        let mut got = poisoned(&g, &[b, t, 29]);
        let what = format!("linear_i8_tc narrowed K={k}");
        match g.linear(&up(&g, &xh), &wd, None, &mut got) {
            Ok(()) => {
                let got = down(&g, &got);
                f.check(&what, &got, &want.to_f32_vec().unwrap(), tol_w8a8(k));
                if g.cuda.is_some() {
                    // Rows 1..30 of w and their scales.
                    let (wq, sw) = int8_parts(&wh);
                    let w_rows = (&wq[k..30 * k], &sw[1..30]);
                    let exact = w8a8_reference(&x, w_rows, None, b * t, 29, k);
                    f.check(
                        &format!("{what} vs exact W8A8"),
                        &got,
                        &exact,
                        tol_exact_w8a8(k),
                    );
                }
            }
            Err(e) => f.push(format!("{what}: {e}")),
        }
    }
    f.finish("linear_i8_tc views");
}
