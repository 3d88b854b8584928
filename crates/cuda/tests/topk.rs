//! kernels/topk.cu against the CPU backend: identical indices and values
//! (exact), ties broken by the lower index, NaN ranked last, k in
//! {1, 2, 5, 8, 33, 64} on the device and k > 64 through the host fallback,
//! rows shorter and longer than one 4096-entry chunk (multi-stage selection).

mod common;

use common::*;
use encdec_core::testing::random_normal;
use encdec_core::{Backend, Tensor};

#[test]
fn topk_matches_cpu_exactly() {
    let g = gpu_or_skip!("topk_matches_cpu_exactly");
    let mut fails = Vec::new();
    for &(rows, cols) in &[
        (1usize, 1usize),
        (3, 7),
        (4, 130),
        (2, 4096),
        (2, 4097),
        (3, 32128),
        (2, 50265),
        (1, 250_112),
    ] {
        let mut x = random_normal((rows + cols) as u64, rows * cols, 3.0);
        // Ties: quantise a third of the entries to a coarse grid.
        for v in x.iter_mut().step_by(3) {
            *v = (*v * 2.0).round() / 2.0;
        }
        if cols > 10 {
            x[5] = f32::NAN;
            x[9] = x[8];
        }
        let xh = host(x, &[rows, cols]);
        let xd = up(&g, &xh);
        for k in [1usize, 2, 5, 8, 33, 64, 100] {
            if k > cols {
                continue;
            }
            let want = cpu().topk(&xh, k).unwrap();
            match g.topk(&xd, k) {
                Ok(got)
                    if got.0 == want.0
                        && got
                            .1
                            .iter()
                            .zip(&want.1)
                            .all(|(a, b)| a.to_bits() == b.to_bits()) => {}
                Ok(got) => {
                    let bad = got.0.iter().zip(&want.0).position(|(a, b)| a != b);
                    fails.push(format!(
                        "topk rows={rows} cols={cols} k={k}: first index mismatch at {bad:?}\n got  {:?}\n want {:?}",
                        &got.0[..got.0.len().min(16)],
                        &want.0[..want.0.len().min(16)]
                    ));
                }
                Err(e) => fails.push(format!("topk rows={rows} cols={cols} k={k}: {e}")),
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn topk_edge_cases() {
    let g = gpu_or_skip!("topk_edge_cases");
    let x = up(&g, &host(vec![1.0, 2.0, 2.0, 0.5, 2.0, 1.0], &[2, 3]));
    assert!(g.topk(&x, 4).is_err());
    assert_eq!(g.topk(&x, 0).unwrap(), (vec![], vec![]));
    assert_eq!(g.topk(&x, 3).unwrap().0, vec![1, 2, 0, 1, 2, 0]);
    // Every entry equal: indices in order.
    let same = up(&g, &Tensor::from_f32(vec![0.25; 5000], [1, 5000]).unwrap());
    assert_eq!(g.topk(&same, 8).unwrap().0, (0..8).collect::<Vec<u32>>());
}
