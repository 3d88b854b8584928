//! kernels/softmax.cu against the CPU backend: softmax and log-softmax over
//! row lengths {1, 7, 130, 4096, 32128, 50265}, including rows with HF's
//! padding value f32::MIN and a fully masked row (uniform).
//! Tolerance `TOL_REDUCE` (f32 sums of exp in different orders).
//! `softmax_stats` (search on the backend): the row max exactly, the sum of
//! exp within `TOL_REDUCE`.

mod common;

use common::*;
use encdec_core::testing::random_normal;
use encdec_core::Backend;

#[test]
fn softmax_and_log_softmax_match_cpu() {
    let g = gpu_or_skip!("softmax_and_log_softmax_match_cpu");
    let mut f = Failures::default();
    for &(rows, cols) in &[
        (1usize, 1usize),
        (3, 7),
        (17, 130),
        (4, 4096),
        (2, 32128),
        (5, 50265),
    ] {
        let mut x = random_normal((rows * cols) as u64, rows * cols, 5.0);
        if cols > 3 {
            x[1] = f32::MIN; // a masked entry
            x[2] = f32::MIN;
        }
        if rows > 2 {
            // A fully masked row.
            x[cols..2 * cols].fill(f32::MIN);
        }
        for log in [false, true] {
            let mut want = host(x.clone(), &[rows, cols]);
            let mut got = up(&g, &want);
            if log {
                cpu().log_softmax(&mut want).unwrap();
                g.log_softmax(&mut got).unwrap();
            } else {
                cpu().softmax(&mut want).unwrap();
                g.softmax(&mut got).unwrap();
            }
            f.check(
                &format!(
                    "{} rows={rows} cols={cols}",
                    if log { "log_softmax" } else { "softmax" }
                ),
                &down(&g, &got),
                &want.to_f32_vec().unwrap(),
                TOL_REDUCE,
            );
        }
    }
    f.finish("softmax");
}

#[test]
fn softmax_stats_match_cpu() {
    let g = gpu_or_skip!("softmax_stats_match_cpu");
    let mut f = Failures::default();
    for &(rows, cols) in &[(1usize, 1usize), (3, 7), (17, 130), (4, 4096), (5, 50265)] {
        let mut x = random_normal((rows * cols + 7) as u64, rows * cols, 5.0);
        if cols > 3 {
            x[1] = f32::MIN;
        }
        if rows > 2 {
            x[cols..2 * cols].fill(f32::MIN);
        }
        let xh = host(x, &[rows, cols]);
        let mut want = host(vec![0.0; rows * 2], &[rows, 2]);
        cpu().softmax_stats(&xh, &mut want).unwrap();
        let xd = up(&g, &xh);
        let mut got = poisoned(&g, &[rows, 2]);
        g.softmax_stats(&xd, &mut got).unwrap();
        let (got, want) = (down(&g, &got), want.to_f32_vec().unwrap());
        let what = format!("softmax_stats rows={rows} cols={cols}");
        let maxes = |v: &[f32]| v.iter().step_by(2).copied().collect::<Vec<f32>>();
        f.exact(&format!("{what} max"), &maxes(&got), &maxes(&want));
        f.check(&what, &got, &want, TOL_REDUCE);
    }
    let x = up(&g, &host(vec![1.0; 6], &[2, 3]));
    let mut bad = poisoned(&g, &[2, 3]);
    assert!(g.softmax_stats(&x, &mut bad).is_err());
    f.finish("softmax_stats");
}
