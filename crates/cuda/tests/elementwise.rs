//! kernels/elementwise.cu against the CPU backend: add/mul (same shape and row
//! broadcast), scale, every activation, gated activations, casts between
//! f32/f16/bf16 and int8 quantisation, `scatter_fill` (search on the
//! backend's bans: exact, repeated positions, out-of-range index rejected),
//! `repetition_penalty` (exact: one IEEE multiply or divide per position;
//! unused slots skipped, out-of-range index rejected).
//!
//! Tolerances: add/mul/scale, casts, quantisation and dequantisation are exact
//! (IEEE operations in the same order, round to nearest even on both sides);
//! activations within `TOL_POINTWISE` (abs 1e-6 + rel 1e-5; CUDA's erff/tanhf/
//! expf against the CPU's vectorised approximations).

mod common;

use common::*;
use encdec_core::testing::random_normal;
use encdec_core::{Activation, Backend, DType, HostStorage, Tensor};

const SHAPES: [&[usize]; 5] = [&[1, 1], &[3, 7], &[17, 130], &[64, 512], &[2, 5, 1000]];

#[test]
fn add_mul_scale_match_cpu() {
    let g = gpu_or_skip!("add_mul_scale_match_cpu");
    let mut f = Failures::default();
    for (si, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let cols = *shape.last().unwrap();
        let x = random_normal(si as u64, n, 1.0);
        for (bcast, yshape) in [(false, shape.to_vec()), (true, vec![cols])] {
            let y = random_normal(100 + si as u64, yshape.iter().product(), 1.0);
            let yh = host(y.clone(), &yshape);
            for mul in [false, true] {
                let mut want = host(x.clone(), shape);
                let mut got = up(&g, &want);
                let yd = up(&g, &yh);
                if mul {
                    cpu().mul_assign(&mut want, &yh).unwrap();
                    g.mul_assign(&mut got, &yd).unwrap();
                } else {
                    cpu().add_assign(&mut want, &yh).unwrap();
                    g.add_assign(&mut got, &yd).unwrap();
                }
                let what = format!(
                    "{} {shape:?} broadcast={bcast} seed={si}",
                    if mul { "mul_assign" } else { "add_assign" }
                );
                f.exact(&what, &down(&g, &got), &want.to_f32_vec().unwrap());
            }
        }
        let mut want = host(x.clone(), shape);
        let mut got = up(&g, &want);
        cpu().scale(&mut want, -0.37).unwrap();
        g.scale(&mut got, -0.37).unwrap();
        f.exact(
            &format!("scale {shape:?}"),
            &down(&g, &got),
            &want.to_f32_vec().unwrap(),
        );
    }
    f.finish("add/mul/scale");
}

const ACTS: [Activation; 5] = [
    Activation::Relu,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Silu,
    Activation::Identity,
];

#[test]
fn activations_match_cpu() {
    let g = gpu_or_skip!("activations_match_cpu");
    let mut f = Failures::default();
    for (si, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        // Wide range: the tails of erf/tanh/exp matter.
        let x = random_normal(7 + si as u64, n, 4.0);
        for act in ACTS {
            let mut want = host(x.clone(), shape);
            let mut got = up(&g, &want);
            cpu().activation(&mut want, act).unwrap();
            g.activation(&mut got, act).unwrap();
            f.check(
                &format!("activation {act:?} {shape:?}"),
                &down(&g, &got),
                &want.to_f32_vec().unwrap(),
                TOL_POINTWISE,
            );
            let up_v = random_normal(50 + si as u64, n, 1.0);
            let (gh, uh) = (host(x.clone(), shape), host(up_v, shape));
            let mut want = host(vec![0.0; n], shape);
            cpu().gated_activation(&gh, &uh, act, &mut want).unwrap();
            let mut got = poisoned(&g, shape);
            g.gated_activation(&up(&g, &gh), &up(&g, &uh), act, &mut got)
                .unwrap();
            f.check(
                &format!("gated_activation {act:?} {shape:?}"),
                &down(&g, &got),
                &want.to_f32_vec().unwrap(),
                TOL_POINTWISE,
            );
        }
    }
    f.finish("activations");
}

fn int8_parts(t: &Tensor) -> (Vec<i8>, Vec<f32>) {
    match t.host().unwrap() {
        HostStorage::I8 { data, scales } => (data.clone(), scales.clone()),
        h => panic!("expected int8, got {}", h.dtype()),
    }
}

#[test]
fn casts_and_quantisation_match_cpu_exactly() {
    let g = gpu_or_skip!("casts_and_quantisation_match_cpu_exactly");
    let mut f = Failures::default();
    let dtypes = [DType::F32, DType::F16, DType::BF16, DType::I8];
    for (si, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let mut x = random_normal(200 + si as u64, n, 3.0);
        if n > 2 {
            x[1] = 0.0; // zeros, and a zero row when cols == 1
            x[2] = -65519.0; // near the f16 limit
        }
        for from in dtypes {
            let src = if from == DType::I8 {
                cpu().cast(&host(x.clone(), shape), DType::I8).unwrap()
            } else {
                host_as(x.clone(), shape, from)
            };
            let src_d = up(&g, &src);
            for to in dtypes {
                let what = format!("cast {from} -> {to} {shape:?}");
                let want = cpu().cast(&src, to).unwrap();
                let got = match g.cast(&src_d, to) {
                    Ok(t) => t,
                    Err(e) => {
                        f.push(format!("{what}: {e}"));
                        continue;
                    }
                };
                if got.dtype() != to || got.dims() != want.dims() {
                    f.push(format!("{what}: got {} {:?}", got.dtype(), got.dims()));
                    continue;
                }
                let got_h = g.download(&got).unwrap();
                if to == DType::I8 {
                    let (gd, gs) = int8_parts(&got_h);
                    let (wd, ws) = int8_parts(&want);
                    if gd != wd || gs != ws {
                        let bad = gd.iter().zip(&wd).position(|(a, b)| a != b);
                        f.push(format!(
                            "{what}: int8 data/scales differ (first data mismatch at {bad:?}; scales equal: {})",
                            gs == ws
                        ));
                    }
                } else {
                    f.exact(
                        &what,
                        &got_h.to_f32_vec().unwrap(),
                        &want.to_f32_vec().unwrap(),
                    );
                }
            }
        }
    }
    // A transposed (non-contiguous) source.
    let x = host(random_normal(9, 6 * 10, 1.0), &[6, 10]);
    let tr = up(&g, &x).transpose(0, 1).unwrap();
    let got = g.cast(&tr, DType::F16).unwrap();
    let want = cpu().cast(&x.transpose(0, 1).unwrap(), DType::F16).unwrap();
    f.exact(
        "cast of a transposed view",
        &down(&g, &got),
        &want.to_f32_vec().unwrap(),
    );
    // Ids cast only to ids.
    let ids = up(&g, &Tensor::from_u32(vec![1, 2, 3], [3]).unwrap());
    assert!(g.cast(&ids, DType::F32).is_err());
    assert_eq!(
        down(&g, &g.cast(&ids, DType::U32).unwrap()),
        vec![1.0, 2.0, 3.0]
    );
    f.finish("casts");
}

#[test]
fn scatter_fill_matches_cpu_exactly() {
    let g = gpu_or_skip!("scatter_fill_matches_cpu_exactly");
    let mut f = Failures::default();
    for &(rows, cols, n) in &[
        (1usize, 1usize, 1usize),
        (3, 7, 5),
        (4, 50265, 300),
        (2, 4097, 2),
    ] {
        let x = random_normal((rows * cols + n) as u64, rows * cols, 2.0);
        // spread positions with repeats (the generator pads with a repeat)
        let idx: Vec<u32> = (0..n)
            .map(|j| ((j * 7919 + j / 3) % (rows * cols)) as u32)
            .chain([0, 0])
            .collect();
        let it = Tensor::from_u32(idx.clone(), [idx.len()]).unwrap();
        let mut want = host(x.clone(), &[rows, cols]);
        cpu()
            .scatter_fill(&mut want, &it, f32::NEG_INFINITY)
            .unwrap();
        let mut got = up(&g, &host(x, &[rows, cols]));
        g.scatter_fill(&mut got, &up(&g, &it), f32::NEG_INFINITY)
            .unwrap();
        let want = want.to_f32_vec().unwrap();
        for &i in &idx {
            assert_eq!(want[i as usize], f32::NEG_INFINITY);
        }
        f.exact(
            &format!("scatter_fill rows={rows} cols={cols} n={n}"),
            &down(&g, &got),
            &want,
        );
    }
    let mut x = up(&g, &host(vec![1.0; 6], &[2, 3]));
    let bad = up(&g, &Tensor::from_u32(vec![6], [1]).unwrap());
    assert!(g.scatter_fill(&mut x, &bad, 0.0).is_err());
    f.finish("scatter_fill");
}

#[test]
fn repetition_penalty_matches_cpu_exactly() {
    use encdec_core::backend::PENALTY_INDEX_UNUSED;
    let g = gpu_or_skip!("repetition_penalty_matches_cpu_exactly");
    let mut f = Failures::default();
    for &(rows, cols, n, pad) in &[
        (1usize, 1usize, 1usize, 0usize),
        (3, 7, 5, 4),
        (4, 50265, 300, 37),
        (2, 4097, 2, 1),
    ] {
        let x = random_normal((rows * cols + n) as u64, rows * cols, 2.0);
        // distinct positions (values of both signs), then unused slots
        let idx: Vec<u32> = (0..n)
            .map(|j| ((j * 7919) % (rows * cols)) as u32)
            .chain(std::iter::repeat_n(PENALTY_INDEX_UNUSED, pad))
            .collect();
        let it = Tensor::from_u32(idx.clone(), [idx.len()]).unwrap();
        for penalty in [1.3f32, 0.8] {
            let mut want = host(x.clone(), &[rows, cols]);
            cpu().repetition_penalty(&mut want, &it, penalty).unwrap();
            let mut got = up(&g, &host(x.clone(), &[rows, cols]));
            g.repetition_penalty(&mut got, &up(&g, &it), penalty)
                .unwrap();
            let want = want.to_f32_vec().unwrap();
            // the reference did penalise (HF's rule), and only there
            for (i, (&w, &x0)) in want.iter().zip(&x).enumerate() {
                let at = idx.contains(&(i as u32));
                let rule = if x0 < 0.0 { x0 * penalty } else { x0 / penalty };
                assert_eq!(w, if at { rule } else { x0 }, "position {i}");
            }
            f.exact(
                &format!("repetition_penalty rows={rows} cols={cols} n={n} p={penalty}"),
                &down(&g, &got),
                &want,
            );
        }
    }
    let mut x = up(&g, &host(vec![1.0; 6], &[2, 3]));
    let bad = up(&g, &Tensor::from_u32(vec![6], [1]).unwrap());
    assert!(g.repetition_penalty(&mut x, &bad, 1.2).is_err());
    f.finish("repetition_penalty");
}
