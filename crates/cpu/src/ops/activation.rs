//! Pointwise activations in place and the gated form `out = act(gate) * up`.
//!
//! Formulas and operation order follow PyTorch's CPU kernels:
//! - ReLU: `max(x, 0)`.
//! - GELU (erf): `(x * 0.5) * (1 + erf(x * (1/sqrt 2)))`.
//! - GELU (tanh, HF `gelu_new`): `(0.5 * x) * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`.
//! - SiLU: `x / (1 + exp(-x))`.
//!
//! `erf`, `tanh` and `exp` are the vectorised approximations of
//! [`crate::simd::math`] (erf within 2.5e-7 of the f64 one).

use encdec_core::Activation;

use crate::isa::Isa;
use crate::simd::{math, multiversion, Simd};

use super::par;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_KAPPA: f32 = 0.044_715;

// ---- reference -------------------------------------------------------------

/// `act(x)` in f64.
pub fn act_reference(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Identity => x,
    }
}

/// `x = act(x)` elementwise, computed in f64.
pub fn activation_reference(act: Activation, x: &mut [f32]) {
    for v in x {
        *v = act_reference(act, *v as f64) as f32;
    }
}

/// `out = act(gate) * up`, computed in f64.
pub fn gated_activation_reference(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = (act_reference(act, g as f64) * u as f64) as f32;
    }
}

// ---- generic kernels -------------------------------------------------------

/// One activation as a vector function.
pub(crate) trait VecAct: Copy {
    fn apply<S: Simd>(self, s: S, x: S::V) -> S::V;
}

#[derive(Clone, Copy)]
pub(crate) struct Relu;
#[derive(Clone, Copy)]
pub(crate) struct Gelu;
#[derive(Clone, Copy)]
pub(crate) struct GeluTanh;
#[derive(Clone, Copy)]
pub(crate) struct Silu;

impl VecAct for Relu {
    #[inline(always)]
    fn apply<S: Simd>(self, s: S, x: S::V) -> S::V {
        // zero first: a NaN in x propagates.
        s.max(s.zero(), x)
    }
}

impl VecAct for Gelu {
    #[inline(always)]
    fn apply<S: Simd>(self, s: S, x: S::V) -> S::V {
        let e = math::erf(s, s.mul(x, s.splat(std::f32::consts::FRAC_1_SQRT_2)));
        s.mul(s.mul(x, s.splat(0.5)), s.add(s.splat(1.0), e))
    }
}

impl VecAct for GeluTanh {
    #[inline(always)]
    fn apply<S: Simd>(self, s: S, x: S::V) -> S::V {
        let x3 = s.mul(s.mul(x, x), x);
        let inner = s.mul(
            s.splat(SQRT_2_OVER_PI),
            s.add(x, s.mul(s.splat(GELU_KAPPA), x3)),
        );
        let t = math::tanh(s, inner);
        s.mul(s.mul(s.splat(0.5), x), s.add(s.splat(1.0), t))
    }
}

impl VecAct for Silu {
    #[inline(always)]
    fn apply<S: Simd>(self, s: S, x: S::V) -> S::V {
        s.div(x, s.add(s.splat(1.0), math::exp(s, s.neg(x))))
    }
}

#[inline(always)]
fn map_in_place<S: Simd, A: VecAct>(s: S, a: A, x: &mut [f32]) {
    let l = S::LANES;
    let n = x.len();
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let v = a.apply(s, s.load(&x[i..]));
        s.store(&mut x[i..], v);
        i += l;
    }
    if full < n {
        let v = a.apply(s, s.load_partial(&x[full..], 0.0));
        s.store_partial(&mut x[full..], v);
    }
}

#[inline(always)]
fn gated_map<S: Simd, A: VecAct>(s: S, a: A, gate: &[f32], up: &[f32], out: &mut [f32]) {
    let l = S::LANES;
    let n = out.len().min(gate.len()).min(up.len());
    let (gate, up, out) = (&gate[..n], &up[..n], &mut out[..n]);
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let v = s.mul(a.apply(s, s.load(&gate[i..])), s.load(&up[i..]));
        s.store(&mut out[i..], v);
        i += l;
    }
    if full < n {
        let g = a.apply(s, s.load_partial(&gate[full..], 0.0));
        let v = s.mul(g, s.load_partial(&up[full..], 0.0));
        s.store_partial(&mut out[full..], v);
    }
}

#[derive(Clone, Copy)]
struct Ident;
impl VecAct for Ident {
    #[inline(always)]
    fn apply<S: Simd>(self, _s: S, x: S::V) -> S::V {
        x
    }
}

#[inline(always)]
fn activation_generic<S: Simd>(s: S, act: Activation, x: &mut [f32]) {
    match act {
        Activation::Relu => map_in_place(s, Relu, x),
        Activation::Gelu => map_in_place(s, Gelu, x),
        Activation::GeluTanh => map_in_place(s, GeluTanh, x),
        Activation::Silu => map_in_place(s, Silu, x),
        Activation::Identity => {}
    }
}

#[inline(always)]
fn gated_generic<S: Simd>(s: S, act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match act {
        Activation::Relu => gated_map(s, Relu, gate, up, out),
        Activation::Gelu => gated_map(s, Gelu, gate, up, out),
        Activation::GeluTanh => gated_map(s, GeluTanh, gate, up, out),
        Activation::Silu => gated_map(s, Silu, gate, up, out),
        Activation::Identity => gated_map(s, Ident, gate, up, out),
    }
}

multiversion! {
    /// `x = act(x)` on this thread.
    pub fn activation_chunk[activation_avx512, activation_avx2, activation_neon,
        activation_scalar](act: Activation, x: &mut [f32]) => activation_generic;
}

multiversion! {
    /// `out = act(gate) * up` on this thread.
    pub fn gated_activation_chunk[gated_activation_avx512, gated_activation_avx2,
        gated_activation_neon, gated_activation_scalar](
        act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]
    ) => gated_generic;
}

/// `x = act(x)` elementwise, split over the pool when large.
pub fn activation(isa: Isa, act: Activation, x: &mut [f32]) {
    if act == Activation::Identity {
        return;
    }
    par::rows_mut(x, 1, |x| activation_chunk(isa, act, x));
}

/// `out = act(gate) * up` elementwise (equal lengths), split over the pool when large.
pub fn gated_activation(isa: Isa, act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    par::rows_2in_out(gate, up, out, 1, |g, u, o| {
        gated_activation_chunk(isa, act, g, u, o)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use crate::simd::{math, multiversion};
    use encdec_core::testing::{compare, random_normal, Tol};

    const ACTS: [Activation; 5] = [
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Identity,
    ];
    const SIZES: [usize; 8] = [1, 3, 17, 31, 33, 100, 257, 1000];

    #[test]
    fn activations_match_reference_on_every_isa() {
        for isa in isa::available() {
            for act in ACTS {
                for (i, &n) in SIZES.iter().enumerate() {
                    let x = random_normal(i as u64, n, 3.0);
                    let mut want = x.clone();
                    activation_reference(act, &mut want);
                    let mut got = x.clone();
                    activation(isa, act, &mut got);
                    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    let what = format!("{act:?} {} n {n}", isa.name());
                    compare(&what, &got, &want, Tol::F32).unwrap();

                    let up = random_normal(100 + i as u64, n, 1.0);
                    let mut want = vec![0.0; n];
                    gated_activation_reference(act, &x, &up, &mut want);
                    let mut got = vec![f32::NAN; n];
                    gated_activation(isa, act, &x, &up, &mut got);
                    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    compare(&format!("gated {what}"), &got, &want, Tol::F32).unwrap();
                }
            }
        }
    }

    fn erf_generic<S: Simd>(s: S, x: &mut [f32]) {
        for v in x.iter_mut() {
            let r = math::erf(s, s.splat(*v));
            *v = s.reduce_max(r);
        }
    }
    fn tanh_generic<S: Simd>(s: S, x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = s.reduce_max(math::tanh(s, s.splat(*v)));
        }
    }
    fn exp_generic<S: Simd>(s: S, x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = s.reduce_max(math::exp(s, s.splat(*v)));
        }
    }
    multiversion! {
        fn erf_slice[erf_avx512, erf_avx2, erf_neon, erf_scalar](x: &mut [f32]) => erf_generic;
    }
    multiversion! {
        fn tanh_slice[tanh_avx512, tanh_avx2, tanh_neon, tanh_scalar](x: &mut [f32]) => tanh_generic;
    }
    multiversion! {
        fn exp_slice[exp_avx512, exp_avx2, exp_neon, exp_scalar](x: &mut [f32]) => exp_generic;
    }

    #[test]
    fn erf_tanh_exp_are_accurate() {
        let grid: Vec<f32> = (-60_000..=60_000).map(|i| i as f32 * 1e-4).collect();
        for isa in isa::available() {
            let mut e = grid.clone();
            erf_slice(isa, &mut e);
            let mut t = grid.clone();
            tanh_slice(isa, &mut t);
            let (mut max_erf, mut max_tanh) = (0.0f64, 0.0f64);
            for ((&x, &e), &t) in grid.iter().zip(&e).zip(&t) {
                max_erf = max_erf.max((e as f64 - libm::erf(x as f64)).abs());
                let tw = (x as f64).tanh();
                max_tanh = max_tanh.max((t as f64 - tw).abs() / tw.abs().max(1e-30));
            }
            assert!(
                max_erf < 1e-6,
                "{}: erf max abs error {max_erf:e}",
                isa.name()
            );
            assert!(
                max_tanh < 1e-6,
                "{}: tanh max rel error {max_tanh:e}",
                isa.name()
            );

            let xs: Vec<f32> = (-87_000..=88_000).map(|i| i as f32 * 1e-3).collect();
            let mut ex = xs.clone();
            exp_slice(isa, &mut ex);
            let mut max_exp = 0.0f64;
            for (&x, &y) in xs.iter().zip(&ex) {
                let w = (x as f64).exp();
                max_exp = max_exp.max((y as f64 - w).abs() / w);
            }
            assert!(
                max_exp < 5e-7,
                "{}: exp max rel error {max_exp:e}",
                isa.name()
            );

            let mut special = [f32::NAN, 0.0, -0.0];
            erf_slice(isa, &mut special);
            assert!(special[0].is_nan());
            assert_eq!(&special[1..], &[0.0, 0.0]);
            tanh_slice(isa, &mut special);
            assert!(special[0].is_nan());
            let mut ex = [f32::NEG_INFINITY, -100.0, f32::NAN];
            exp_slice(isa, &mut ex);
            assert_eq!(&ex[..2], &[0.0, 0.0]);
            assert!(ex[2].is_nan());
            let mut big = [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30];
            erf_slice(isa, &mut big);
            assert_eq!(big, [1.0, -1.0, 1.0, -1.0]);
            let mut big = [f32::INFINITY, f32::NEG_INFINITY, 50.0, -50.0];
            tanh_slice(isa, &mut big);
            assert_eq!(big, [1.0, -1.0, 1.0, -1.0]);
        }
    }

    #[test]
    fn large_inputs_split_over_threads_agree() {
        let x = random_normal(3, 200_000, 2.0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut got = x.clone();
        pool.install(|| activation(isa::active(), Activation::Gelu, &mut got));
        let mut want = x.clone();
        activation_reference(Activation::Gelu, &mut want);
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        compare("gelu parallel", &got, &want, Tol::F32).unwrap();
    }
}
