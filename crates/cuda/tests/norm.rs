//! kernels/norm.cu against the CPU backend: layer norm (with and without bias)
//! and T5's RMS norm, plain and fused with the residual add, over row counts
//! {1, 3, 17, 64} and row lengths {1, 7, 64, 130, 512, 1024, 4096}, with f32
//! and f16/bf16 norm weights. Tolerance `TOL_REDUCE` (rel L2 1e-5, abs 1e-5 +
//! rel 1e-4): both backends reduce in f32, in different orders. The updated
//! residual of add_norm is an exact f32 sum on both.

mod common;

use common::*;
use encdec_core::testing::{random_normal, random_vec};
use encdec_core::{Backend, DType, NormKind};

const ROWS: [usize; 4] = [1, 3, 17, 64];
const COLS: [usize; 7] = [1, 7, 64, 130, 512, 1024, 4096];

#[test]
fn norms_match_cpu() {
    let g = gpu_or_skip!("norms_match_cpu");
    let mut f = Failures::default();
    for rows in ROWS {
        for cols in COLS {
            // An offset mean, so layer norm's mean subtraction matters.
            let x: Vec<f32> = random_normal((rows * 31 + cols) as u64, rows * cols, 2.0)
                .into_iter()
                .map(|v| v + 3.0)
                .collect();
            let xh = host(x, &[rows, cols]);
            let w = random_vec(2, cols);
            let b = random_vec(3, cols);
            for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
                for wdt in [DType::F32, DType::F16, DType::BF16] {
                    let wh = host_as(w.clone(), &[cols], wdt);
                    let bias_h = host_as(b.clone(), &[cols], wdt);
                    let biases: &[bool] = if kind == NormKind::LayerNorm {
                        &[false, true]
                    } else {
                        &[false]
                    };
                    for &with_bias in biases {
                        let what = format!(
                            "norm {kind:?} rows={rows} cols={cols} weight={wdt} bias={with_bias}"
                        );
                        let bh = with_bias.then_some(&bias_h);
                        let mut want = host(vec![0.0; rows * cols], &[rows, cols]);
                        cpu().norm(kind, &xh, &wh, bh, 1e-6, &mut want).unwrap();
                        let (wd, bd) = (up(&g, &wh), up(&g, &bias_h));
                        let mut got = poisoned(&g, &[rows, cols]);
                        g.norm(
                            kind,
                            &up(&g, &xh),
                            &wd,
                            with_bias.then_some(&bd),
                            1e-6,
                            &mut got,
                        )
                        .unwrap();
                        f.check(
                            &what,
                            &down(&g, &got),
                            &want.to_f32_vec().unwrap(),
                            TOL_REDUCE,
                        );
                    }
                }
            }
        }
    }
    f.finish("norm");
}

#[test]
fn add_norms_match_cpu() {
    let g = gpu_or_skip!("add_norms_match_cpu");
    let mut f = Failures::default();
    for rows in ROWS {
        for cols in COLS {
            let xh = host(random_normal(rows as u64, rows * cols, 1.0), &[rows, cols]);
            let rh = host(random_normal(cols as u64, rows * cols, 1.0), &[rows, cols]);
            let wh = host(random_vec(5, cols), &[cols]);
            let bh = host(random_vec(6, cols), &[cols]);
            for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
                let bias = (kind == NormKind::LayerNorm).then_some(&bh);
                let mut r_want = cpu().cast(&rh, DType::F32).unwrap();
                let mut want = host(vec![0.0; rows * cols], &[rows, cols]);
                cpu()
                    .add_norm(kind, &xh, &mut r_want, &wh, bias, 1e-5, &mut want)
                    .unwrap();
                let mut r_got = up(&g, &rh);
                let mut got = poisoned(&g, &[rows, cols]);
                let bd = up(&g, &bh);
                g.add_norm(
                    kind,
                    &up(&g, &xh),
                    &mut r_got,
                    &up(&g, &wh),
                    (kind == NormKind::LayerNorm).then_some(&bd),
                    1e-5,
                    &mut got,
                )
                .unwrap();
                let what = format!("add_norm {kind:?} rows={rows} cols={cols}");
                f.check(
                    &what,
                    &down(&g, &got),
                    &want.to_f32_vec().unwrap(),
                    TOL_REDUCE,
                );
                f.exact(
                    &format!("{what} residual"),
                    &down(&g, &r_got),
                    &r_want.to_f32_vec().unwrap(),
                );
            }
        }
    }
    f.finish("add_norm");
}

#[test]
fn rms_norm_with_a_bias_is_an_error() {
    let g = gpu_or_skip!("rms_norm_with_a_bias_is_an_error");
    let x = up(&g, &host(vec![1.0; 6], &[2, 3]));
    let w = up(&g, &host(vec![1.0; 3], &[3]));
    let mut o = g.zeros(&[2, 3], DType::F32).unwrap();
    let e = g
        .norm(NormKind::RmsNorm, &x, &w, Some(&w), 1e-6, &mut o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("RMS norm takes no bias"), "{e}");
}

/// A half `out` (the pre-LN sublayer input of a half model's encoder) gets the
/// kernel's own f32 result rounded: bit for bit the f32-out kernel then the
/// device cast, for norm and add_norm (whose residual is the f32 sum either
/// way); every element is written (the out starts as NaN bits).
#[test]
fn half_out_norms_round_the_f32_result() {
    let g = gpu_or_skip!("half_out_norms_round_the_f32_result");
    let mut f = Failures::default();
    for (rows, cols) in [(1, 7), (3, 130), (17, 1024), (2, 4096)] {
        let mut xv = random_normal((rows + cols) as u64, rows * cols, 3.0);
        xv[0] = 70000.0; // past f16's range once normalised with a large weight
        let xd = up(&g, &host(xv, &[rows, cols]));
        let r0 = host(random_normal(8, rows * cols, 1.0), &[rows, cols]);
        let mut wv = random_vec(2, cols);
        wv[0] = 3.0e4;
        let wd = up(&g, &host(wv, &[cols]));
        let bd = up(&g, &host(random_vec(3, cols), &[cols]));
        for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
            let bias = (kind == NormKind::LayerNorm).then_some(&bd);
            let mut want = poisoned(&g, &[rows, cols]);
            g.norm(kind, &xd, &wd, bias, 1e-6, &mut want).unwrap();
            let mut r_want = up(&g, &r0);
            let mut want_add = poisoned(&g, &[rows, cols]);
            g.add_norm(kind, &xd, &mut r_want, &wd, bias, 1e-6, &mut want_add)
                .unwrap();
            for dt in [DType::F16, DType::BF16] {
                let what = format!("{kind:?} rows={rows} cols={cols} out {dt}");
                let mut got = poisoned_as(&g, &[rows, cols], dt);
                g.norm(kind, &xd, &wd, bias, 1e-6, &mut got).unwrap();
                if half_bits(&g, &got) != half_bits(&g, &g.cast(&want, dt).unwrap()) {
                    f.push(format!("norm {what}: not the f32 result rounded"));
                }
                let mut r = up(&g, &r0);
                let mut got = poisoned_as(&g, &[rows, cols], dt);
                g.add_norm(kind, &xd, &mut r, &wd, bias, 1e-6, &mut got)
                    .unwrap();
                if half_bits(&g, &got) != half_bits(&g, &g.cast(&want_add, dt).unwrap()) {
                    f.push(format!("add_norm {what}: not the f32 result rounded"));
                }
                f.exact(
                    &format!("add_norm {what} residual"),
                    &down(&g, &r),
                    &down(&g, &r_want),
                );
            }
        }
    }
    f.finish("half-out norms");
}
