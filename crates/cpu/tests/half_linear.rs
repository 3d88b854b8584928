//! Half activations on the CPU backend (`Backend::activation_dtype`): `linear`,
//! `linear_act`, `linear_gated` and `linear_add` with an f16/bf16 `x` and (not
//! `linear_add`) an f16/bf16 `out`, for f32, f16, bf16 and int8 weights.
//!
//! Reference: the same op with x = cast(x, F32) and an f32 out, followed by
//! cast(out, half). The contract says the results are equal bit for bit, so
//! every element is compared by its bits (after widening a half output, which
//! is exact); outputs are poisoned with NaN first and a NaN never passes.

use encdec_core::testing::{random_normal, random_vec};
use encdec_core::{Activation, Backend, DType, Error, Tensor};
use encdec_cpu::CpuBackend;

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn be() -> CpuBackend {
    CpuBackend::with_threads(2)
}

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_f32(v, shape).unwrap()
}

/// A tensor of `dtype` full of NaN (elements an op leaves unwritten show).
fn poisoned(be: &CpuBackend, shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product();
    be.cast(&t(vec![f32::NAN; n], shape), dtype).unwrap()
}

/// Equal bits element by element, no NaN in either.
fn same_bits(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (got.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
    assert_eq!(g.len(), w.len(), "{what}: length");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            !a.is_nan() && !b.is_nan() && a.to_bits() == b.to_bits(),
            "{what}: element {i}: got {a} ({:#x}), want {b} ({:#x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

/// Weights `[n, k]` in every dtype the linears take.
fn weights(be: &CpuBackend, seed: u64, n: usize, k: usize) -> Vec<Tensor> {
    let w = t(random_normal(seed, n * k, 0.2), &[n, k]);
    [DType::F32, DType::F16, DType::BF16, DType::I8]
        .iter()
        .map(|&d| be.cast(&w, d).unwrap())
        .collect()
}

/// Shapes: one row (a decode step), a few rows with odd K, a GEMM that splits
/// over the pool, and x and out past `PAR_MIN_ELEMS` (2^16: the widening and
/// the rounding split over the pool too).
const SHAPES: [(usize, usize, usize); 4] =
    [(1, 16, 8), (5, 33, 17), (70, 96, 130), (260, 256, 272)];

#[test]
fn linear_and_linear_act_on_half_x_and_out_equal_the_f32_op_then_cast() {
    let be = be();
    for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
        let seed = 100 * si as u64;
        // x in [-3, 3): GELU / SiLU / ReLU see both signs; leading dims [1, m].
        let x32 = t(random_normal(seed, m * k, 1.5), &[1, m, k]);
        let bias = t(random_vec(seed + 1, n), &[n]);
        for w in weights(&be, seed + 2, n, k) {
            for xdt in FLOATS {
                let x = be.cast(&x32, xdt).unwrap();
                let xw = be.cast(&x, DType::F32).unwrap();
                for act in [None, Some(Activation::Gelu), Some(Activation::Silu)] {
                    for b in [None, Some(&bias)] {
                        let mut want32 = be.zeros(&[1, m, n], DType::F32).unwrap();
                        match act {
                            None => be.linear(&xw, &w, b, &mut want32),
                            Some(a) => be.linear_act(&xw, &w, b, a, &mut want32),
                        }
                        .unwrap();
                        for odt in FLOATS {
                            let what = format!(
                                "M={m} K={k} N={n} w={} x={xdt} out={odt} act={act:?} bias={}",
                                w.dtype(),
                                b.is_some()
                            );
                            let want = be.cast(&want32, odt).unwrap();
                            let mut got = poisoned(&be, &[1, m, n], odt);
                            match act {
                                None => be.linear(&x, &w, b, &mut got),
                                Some(a) => be.linear_act(&x, &w, b, a, &mut got),
                            }
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                            same_bits(&what, &got, &want);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn linear_act_equals_linear_then_activation_for_f32_out() {
    // The override keeps the trait's default bits (linear, then activation).
    let be = be();
    let (m, k, n) = (9, 40, 24);
    let x = be
        .cast(&t(random_normal(7, m * k, 1.5), &[m, k]), DType::BF16)
        .unwrap();
    for w in weights(&be, 8, n, k) {
        for act in [Activation::Relu, Activation::GeluTanh, Activation::Silu] {
            let mut want = be.zeros(&[m, n], DType::F32).unwrap();
            be.linear(&x, &w, None, &mut want).unwrap();
            be.activation(&mut want, act).unwrap();
            let mut got = poisoned(&be, &[m, n], DType::F32);
            be.linear_act(&x, &w, None, act, &mut got).unwrap();
            same_bits(&format!("linear_act w={} {act:?}", w.dtype()), &got, &want);
        }
    }
}

#[test]
fn linear_gated_on_half_x_and_out_equals_the_f32_op_then_cast() {
    let be = be();
    for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
        let seed = 1000 + 100 * si as u64;
        let x32 = t(random_normal(seed, m * k, 1.5), &[m, k]);
        let gates = weights(&be, seed + 1, n, k);
        let ups = weights(&be, seed + 2, n, k);
        for (wg, wu) in gates.iter().zip(&ups) {
            for xdt in FLOATS {
                let x = be.cast(&x32, xdt).unwrap();
                let xw = be.cast(&x, DType::F32).unwrap();
                for act in [Activation::Gelu, Activation::Silu] {
                    let mut want32 = be.zeros(&[m, n], DType::F32).unwrap();
                    be.linear_gated(&xw, wg, wu, act, &mut want32).unwrap();
                    for odt in FLOATS {
                        let what = format!(
                            "gated M={m} K={k} N={n} w={} x={xdt} out={odt} {act:?}",
                            wg.dtype()
                        );
                        let want = be.cast(&want32, odt).unwrap();
                        let mut got = poisoned(&be, &[m, n], odt);
                        be.linear_gated(&x, wg, wu, act, &mut got)
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        same_bits(&what, &got, &want);
                    }
                }
            }
        }
    }
}

#[test]
fn linear_add_on_half_x_equals_the_f32_op() {
    let be = be();
    for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
        let seed = 2000 + 100 * si as u64;
        let x32 = t(random_normal(seed, m * k, 1.0), &[m, k]);
        let residual = random_normal(seed + 1, m * n, 1.0);
        let bias = t(random_vec(seed + 2, n), &[n]);
        for w in weights(&be, seed + 3, n, k) {
            for xdt in FLOATS {
                let x = be.cast(&x32, xdt).unwrap();
                let xw = be.cast(&x, DType::F32).unwrap();
                let mut want = t(residual.clone(), &[m, n]);
                be.linear_add(&xw, &w, Some(&bias), &mut want).unwrap();
                let mut got = t(residual.clone(), &[m, n]);
                be.linear_add(&x, &w, Some(&bias), &mut got).unwrap();
                let what = format!("linear_add M={m} K={k} N={n} w={} x={xdt}", w.dtype());
                same_bits(&what, &got, &want);
            }
        }
    }
}

#[test]
fn other_activation_dtypes_are_errors_not_panics() {
    let be = be();
    let (m, k, n) = (3, 8, 4);
    let x = t(random_vec(1, m * k), &[m, k]);
    let w = t(random_vec(2, n * k), &[n, k]);
    let ids = Tensor::from_u32(vec![1; m * k], [m, k]).unwrap();
    let mut out = be.zeros(&[m, n], DType::F32).unwrap();
    let mut out_u32 = Tensor::from_u32(vec![0; m * n], [m, n]).unwrap();
    let mut out_i8 = be.cast(&t(vec![1.0; m * n], &[m, n]), DType::I8).unwrap();
    let is_dtype_error = |e: &Error, what: &str| {
        let s = e.to_string();
        assert!(s.contains("u32") || s.contains("int8"), "{what}: {s}");
    };
    let e = be.linear(&ids, &w, None, &mut out).unwrap_err();
    is_dtype_error(&e, "linear u32 x");
    let e = be
        .linear_act(&ids, &w, None, Activation::Gelu, &mut out)
        .unwrap_err();
    is_dtype_error(&e, "linear_act u32 x");
    let e = be
        .linear_gated(&ids, &w, &w, Activation::Gelu, &mut out)
        .unwrap_err();
    is_dtype_error(&e, "linear_gated u32 x");
    let e = be.linear_add(&ids, &w, None, &mut out).unwrap_err();
    is_dtype_error(&e, "linear_add u32 x");
    let e = be.linear(&x, &w, None, &mut out_u32).unwrap_err();
    is_dtype_error(&e, "linear u32 out");
    let e = be.linear(&x, &w, None, &mut out_i8).unwrap_err();
    is_dtype_error(&e, "linear i8 out");
    let e = be
        .linear_gated(&x, &w, &w, Activation::Silu, &mut out_u32)
        .unwrap_err();
    is_dtype_error(&e, "linear_gated u32 out");
    // linear_add's out is the f32 residual stream.
    for odt in [DType::F16, DType::BF16] {
        let mut half_out = be.zeros(&[m, n], odt).unwrap();
        let e = be.linear_add(&x, &w, None, &mut half_out).unwrap_err();
        assert!(e.to_string().contains("linear_add"), "{e}");
    }
}
