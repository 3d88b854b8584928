//! Vectorised transcendental functions in f32, generic over [`Simd`].
//!
//! - [`exp`]: Cephes `expf` (range reduction by ln 2, degree-6 polynomial), about
//!   1 ulp; inputs below -88 give 0 (denormal results are flushed), above 88.38
//!   are clamped.
//! - [`erf`]: Maclaurin series below 0.5, above it `1 - erfc` with Numerical
//!   Recipes' `erfcc` (fractional error < 1.2e-7); within 2.5e-7 of the f64 erf.
//! - [`tanh`]: Cephes `tanhf` (odd polynomial below 0.625, `1 - 2/(e^2x + 1)`
//!   above), a few ulp.
//!
//! NaN inputs give NaN.

use super::Simd;

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// `e^x` per lane.
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    // Clamp (the constant first, so a NaN in `x` propagates).
    let x = s.min(s.splat(88.376_26), s.max(s.splat(-88.0), x));
    let n = s.round(s.mul(x, s.splat(LOG2E)));
    // r = x - n ln2, with ln2 split in two for precision.
    let r = s.fma(n, s.splat(-0.693_359_4), x);
    let r = s.fma(n, s.splat(2.121_944_4e-4), r);
    let mut p = s.splat(1.987_569_1e-4);
    p = s.fma(p, r, s.splat(1.398_199_9e-3));
    p = s.fma(p, r, s.splat(8.333_452e-3));
    p = s.fma(p, r, s.splat(4.166_579_6e-2));
    p = s.fma(p, r, s.splat(1.666_666_5e-1));
    p = s.fma(p, r, s.splat(0.5));
    let y = s.fma(p, s.mul(r, r), s.add(r, s.splat(1.0)));
    s.mul(y, s.pow2i(n))
}

/// `erf(x)` per lane.
#[inline(always)]
pub fn erf<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let a = s.abs(x);
    // |x| < 0.5: erf(x) = 2/sqrt(pi) * sum_k (-1)^k x^(2k+1) / (k! (2k+1)), k <= 6.
    let z = s.mul(x, x);
    let mut q = s.splat(ERF_SMALL[6]);
    for &c in ERF_SMALL[..6].iter().rev() {
        q = s.fma(q, z, s.splat(c));
    }
    let small = s.mul(x, q);
    // |x| >= 0.5: 1 - erfc(|x|), erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2).
    let ac = s.min(s.splat(10.0), a);
    let t = s.div(one, s.fma(s.splat(0.5), ac, one));
    let mut r = s.splat(ERFC_NR[9]);
    for &c in ERFC_NR[..9].iter().rev() {
        r = s.fma(r, t, s.splat(c));
    }
    let erfc = s.mul(t, exp(s, s.sub(r, s.mul(ac, ac))));
    let large = s.copysign(s.sub(one, erfc), x);
    s.select_lt(a, s.splat(0.5), small, large)
}

/// Maclaurin coefficients of erf(x)/x in powers of x^2: 2/sqrt(pi) (-1)^k / (k! (2k+1)).
const ERF_SMALL: [f32; 7] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -3.761_263_9e-1,
    1.128_379_2e-1,
    -2.686_617e-2,
    5.223_977_5e-3,
    -8.548_327e-4,
    1.205_533_3e-4,
];

/// Numerical Recipes `erfcc` polynomial in t (constant term first).
const ERFC_NR: [f32; 10] = [
    -1.265_512_2,
    1.000_023_7,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_204,
    1.488_515_9,
    -0.822_152_23,
    0.170_872_77,
];

/// `tanh(x)` per lane.
#[inline(always)]
pub fn tanh<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let a = s.abs(x);
    let z = s.mul(x, x);
    let mut p = s.splat(-5.704_988_7e-3);
    p = s.fma(p, z, s.splat(2.063_909e-2));
    p = s.fma(p, z, s.splat(-5.373_971_6e-2));
    p = s.fma(p, z, s.splat(1.333_144_2e-1));
    p = s.fma(p, z, s.splat(-3.333_328e-1));
    let small = s.fma(s.mul(p, z), x, x);
    let e = exp(s, s.add(a, a));
    let large = s.copysign(s.sub(one, s.div(s.splat(2.0), s.add(e, one))), x);
    s.select_lt(a, s.splat(0.625), small, large)
}

/// `1 / (1 + e^-x)` per lane.
#[inline(always)]
pub fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    s.div(one, s.add(one, exp(s, s.neg(x))))
}
