//! kernels/topk.cu against the CPU backend: identical indices and values
//! (exact), ties broken by the lower index, NaN ranked last, k in
//! {1, 2, 5, 8, 33, 64} on the device and k > 64 through the host fallback,
//! rows shorter and longer than one 4096-entry chunk (multi-stage selection).
//! `topk_into` (search on the backend) the same, into poisoned device
//! buffers, read back with `copy_to_host`.

mod common;

use common::*;
use encdec_core::testing::random_normal;
use encdec_core::{Backend, DType, Tensor};

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

#[test]
fn topk_into_matches_cpu_exactly() {
    let g = gpu_or_skip!("topk_into_matches_cpu_exactly");
    let mut fails = Vec::new();
    for &(rows, cols) in &[
        (1usize, 1usize),
        (3, 7),
        (4, 130),
        (2, 4097),
        (4, 50265),
        (1, 250_112),
    ] {
        let mut x = random_normal((rows * 3 + cols) as u64, rows * cols, 3.0);
        for v in x.iter_mut().step_by(3) {
            *v = (*v * 2.0).round() / 2.0;
        }
        if cols > 10 {
            x[5] = f32::NAN;
            x[9] = x[8];
        }
        let xh = host(x, &[rows, cols]);
        let xd = up(&g, &xh);
        for k in [1usize, 8, 16, 24, 64, 65] {
            if k > cols {
                continue;
            }
            let want = cpu().topk(&xh, k).unwrap();
            // the CPU backend's topk_into is the reference too
            let mut ci = Tensor::zeros([rows, k], DType::U32);
            let mut cv = Tensor::zeros([rows, k], DType::F32);
            cpu().topk_into(&xh, k, &mut ci, &mut cv).unwrap();
            assert_eq!(
                ci.as_u32().unwrap(),
                want.0,
                "cpu topk_into rows={rows} cols={cols} k={k}"
            );
            let mut ids = up(
                &g,
                &Tensor::from_u32(vec![u32::MAX; rows * k], [rows, k]).unwrap(),
            );
            let mut vals = poisoned(&g, &[rows, k]);
            if let Err(e) = g.topk_into(&xd, k, &mut ids, &mut vals) {
                fails.push(format!("topk_into rows={rows} cols={cols} k={k}: {e}"));
                continue;
            }
            let mut hi = Tensor::zeros([rows, k], DType::U32);
            let mut hv = Tensor::zeros([rows, k], DType::F32);
            g.copy_to_host(&ids, &mut hi).unwrap();
            g.copy_to_host(&vals, &mut hv).unwrap();
            let same_vals = hv
                .as_f32()
                .unwrap()
                .iter()
                .zip(&want.1)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            if hi.as_u32().unwrap() != want.0 || !same_vals {
                fails.push(format!(
                    "topk_into rows={rows} cols={cols} k={k}:\n got  {:?}\n want {:?}",
                    &hi.as_u32().unwrap()[..k.min(16)],
                    &want.0[..k.min(16)]
                ));
            }
        }
    }
    // wrong shapes and dtypes are errors
    let x = up(&g, &host(vec![1.0; 12], &[2, 6]));
    let mut ids = up(&g, &Tensor::from_u32(vec![0; 6], [2, 3]).unwrap());
    let mut bad = poisoned(&g, &[2, 2]);
    assert!(g.topk_into(&x, 3, &mut ids, &mut bad).is_err());
    let mut vals = poisoned(&g, &[2, 3]);
    let mut wrong = poisoned(&g, &[2, 3]);
    assert!(g.topk_into(&x, 3, &mut wrong, &mut vals).is_err());
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

/// The ids `topk_into` writes keep no host copy (it would cost a wait per
/// step): used as ids or an index they are refused with a clear error, and
/// an upload into the same tensor makes them usable again.
#[test]
fn topk_into_ids_are_refused_as_an_index_until_uploaded() {
    let g = gpu_or_skip!("topk_into_ids_are_refused_as_an_index_until_uploaded");
    let x = up(&g, &host(random_normal(5, 2 * 10, 1.0), &[2, 10]));
    let table = up(&g, &host(random_normal(6, 10 * 4, 1.0), &[10, 4]));
    let mut ids = g.zeros(&[2, 1], DType::U32).unwrap();
    let mut vals = g.zeros(&[2, 1], DType::F32).unwrap();
    g.topk_into(&x, 1, &mut ids, &mut vals).unwrap();
    let flat = ids.reshape([2]).unwrap();
    let mut out = poisoned(&g, &[2, 4]);
    if g.cuda.is_some() {
        let e = g.embedding(&flat, &table, 1.0, &mut out).unwrap_err();
        assert!(e.to_string().contains("written on the device"), "{e}");
    }
    drop(flat);
    let host_ids = Tensor::from_u32(vec![3, 9], [2, 1]).unwrap();
    g.copy_from_host(&host_ids, &mut ids).unwrap();
    g.embedding(&ids.reshape([2]).unwrap(), &table, 1.0, &mut out)
        .unwrap();
    let mut back = Tensor::zeros([2, 1], DType::U32);
    g.copy_to_host(&ids, &mut back).unwrap();
    assert_eq!(back.as_u32().unwrap(), &[3, 9]);
}
