//! Layer norm and T5's RMS norm over the last dim, plain and fused with the
//! residual add (`residual += x; out = norm(residual)`).
//!
//! Math (per row of `n = w.len()` elements), in f32 as PyTorch computes it:
//! - layer norm: `mean = sum(x)/n`, `var = sum((x-mean)^2)/n` (biased),
//!   `rstd = 1/sqrt(var + eps)`, `out = (x*rstd - mean*rstd) * w + b`.
//! - RMS norm (HF `T5LayerNorm`): `var = sum(x*x)/n` in f32,
//!   `out = w * (x * (1/sqrt(var + eps)))`, no mean subtraction, no bias.
//!
//! Weights and bias are f32 here; the backend converts f16/bf16 norm weights to
//! f32 once per call.

use crate::isa::Isa;
use crate::simd::{multiversion, Simd};
use encdec_core::NormKind;

use super::par;

// ---- reference -------------------------------------------------------------

/// Layer norm of each row of `x`, f64 accumulation: `(x - mean) / sqrt(var + eps) * w + b`.
pub fn layer_norm_reference(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..n {
            let bj = b.map_or(0.0, |b| b[j] as f64);
            or[j] = ((xr[j] as f64 - mean) * rstd * w[j] as f64 + bj) as f32;
        }
    }
}

/// RMS norm of each row, f64 accumulation: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm_reference(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ms = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..n {
            or[j] = (xr[j] as f64 * r * w[j] as f64) as f32;
        }
    }
}

/// `residual += x` (in f32, as stored), then the reference norm of `residual`.
#[allow(clippy::too_many_arguments)]
pub fn add_norm_reference(
    kind: NormKind,
    x: &[f32],
    residual: &mut [f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    for (r, &v) in residual.iter_mut().zip(x) {
        *r += v;
    }
    match kind {
        NormKind::LayerNorm => layer_norm_reference(residual, w, b, eps, out),
        NormKind::RmsNorm => rms_norm_reference(residual, w, eps, out),
    }
}

// ---- generic kernels -------------------------------------------------------

/// `sum(x)` with four vector accumulators.
#[inline(always)]
pub(crate) fn sum<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let mut a = [s.zero(); 4];
    let mut chunks = x.chunks_exact(4 * l);
    for c in &mut chunks {
        for (k, acc) in a.iter_mut().enumerate() {
            *acc = s.add(*acc, s.load(&c[k * l..]));
        }
    }
    let mut rest = chunks.remainder().chunks_exact(l);
    for c in &mut rest {
        a[0] = s.add(a[0], s.load(c));
    }
    a[1] = s.add(a[1], s.load_partial(rest.remainder(), 0.0));
    s.reduce_sum(s.add(s.add(a[0], a[1]), s.add(a[2], a[3])))
}

/// `sum(x*x)`, the square rounded before the add (as `x.pow(2).mean()`).
#[inline(always)]
fn sum_sq<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let mut a = [s.zero(); 4];
    let mut chunks = x.chunks_exact(4 * l);
    for c in &mut chunks {
        for (k, acc) in a.iter_mut().enumerate() {
            let v = s.load(&c[k * l..]);
            *acc = s.add(*acc, s.mul(v, v));
        }
    }
    let mut rest = chunks.remainder().chunks_exact(l);
    for c in &mut rest {
        let v = s.load(c);
        a[0] = s.add(a[0], s.mul(v, v));
    }
    let v = s.load_partial(rest.remainder(), 0.0);
    a[1] = s.add(a[1], s.mul(v, v));
    s.reduce_sum(s.add(s.add(a[0], a[1]), s.add(a[2], a[3])))
}

/// `sum((x - mean)^2)`.
#[inline(always)]
fn sum_sq_dev<S: Simd>(s: S, x: &[f32], mean: f32) -> f32 {
    let l = S::LANES;
    let m = s.splat(mean);
    let mut a = [s.zero(); 4];
    let mut chunks = x.chunks_exact(4 * l);
    for c in &mut chunks {
        for (k, acc) in a.iter_mut().enumerate() {
            let d = s.sub(s.load(&c[k * l..]), m);
            *acc = s.fma(d, d, *acc);
        }
    }
    let mut rest = chunks.remainder().chunks_exact(l);
    for c in &mut rest {
        let d = s.sub(s.load(c), m);
        a[0] = s.fma(d, d, a[0]);
    }
    let tail = rest.remainder();
    // Pad with `mean` so the padding lanes contribute 0.
    let d = s.sub(s.load_partial(tail, mean), m);
    a[1] = s.fma(d, d, a[1]);
    s.reduce_sum(s.add(s.add(a[0], a[1]), s.add(a[2], a[3])))
}

/// `r += x` elementwise.
#[inline(always)]
fn add_into<S: Simd>(s: S, x: &[f32], r: &mut [f32]) {
    let l = S::LANES;
    let n = x.len().min(r.len());
    let (x, r) = (&x[..n], &mut r[..n]);
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let v = s.add(s.load(&r[i..]), s.load(&x[i..]));
        s.store(&mut r[i..], v);
        i += l;
    }
    let v = s.add(
        s.load_partial(&r[full..], 0.0),
        s.load_partial(&x[full..], 0.0),
    );
    s.store_partial(&mut r[full..], v);
}

/// `out = (x * rstd + nb) * w (+ b)` with `nb = -mean * rstd`, unfused as
/// PyTorch's CPU kernel (so `x == mean` gives exactly `b`).
#[inline(always)]
fn write_layer_norm<S: Simd>(
    s: S,
    x: &[f32],
    rstd: f32,
    nb: f32,
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
) {
    let l = S::LANES;
    let n = w.len();
    let (x, out) = (&x[..n], &mut out[..n]);
    let (vr, vnb) = (s.splat(rstd), s.splat(nb));
    let full = n - n % l;
    let mut i = 0;
    match b {
        Some(b) => {
            let b = &b[..n];
            while i < full {
                let y = s.add(s.mul(s.load(&x[i..]), vr), vnb);
                s.store(
                    &mut out[i..],
                    s.add(s.mul(y, s.load(&w[i..])), s.load(&b[i..])),
                );
                i += l;
            }
            let y = s.add(s.mul(s.load_partial(&x[full..], 0.0), vr), vnb);
            let y = s.add(
                s.mul(y, s.load_partial(&w[full..], 0.0)),
                s.load_partial(&b[full..], 0.0),
            );
            s.store_partial(&mut out[full..], y);
        }
        None => {
            while i < full {
                let y = s.add(s.mul(s.load(&x[i..]), vr), vnb);
                s.store(&mut out[i..], s.mul(y, s.load(&w[i..])));
                i += l;
            }
            let y = s.add(s.mul(s.load_partial(&x[full..], 0.0), vr), vnb);
            s.store_partial(&mut out[full..], s.mul(y, s.load_partial(&w[full..], 0.0)));
        }
    }
}

/// `out = w * (x * r)`.
#[inline(always)]
fn write_rms<S: Simd>(s: S, x: &[f32], r: f32, w: &[f32], out: &mut [f32]) {
    let l = S::LANES;
    let n = w.len();
    let (x, out) = (&x[..n], &mut out[..n]);
    let vr = s.splat(r);
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let y = s.mul(s.load(&w[i..]), s.mul(s.load(&x[i..]), vr));
        s.store(&mut out[i..], y);
        i += l;
    }
    let y = s.mul(
        s.load_partial(&w[full..], 0.0),
        s.mul(s.load_partial(&x[full..], 0.0), vr),
    );
    s.store_partial(&mut out[full..], y);
}

#[inline(always)]
fn layer_norm_row<S: Simd>(
    s: S,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len() as f32;
    let mean = sum(s, x) / n;
    let var = sum_sq_dev(s, x, mean) / n;
    let rstd = 1.0 / (var.max(0.0) + eps).sqrt();
    write_layer_norm(s, x, rstd, -mean * rstd, w, b, out);
}

#[inline(always)]
fn rms_norm_row<S: Simd>(s: S, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let var = sum_sq(s, x) / w.len() as f32;
    let r = 1.0 / (var + eps).sqrt();
    write_rms(s, x, r, w, out);
}

#[inline(always)]
fn layer_norm_generic<S: Simd>(
    s: S,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len();
    if n == 0 {
        return;
    }
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        layer_norm_row(s, xr, w, b, eps, or);
    }
}

#[inline(always)]
fn rms_norm_generic<S: Simd>(s: S, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    if n == 0 {
        return;
    }
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        rms_norm_row(s, xr, w, eps, or);
    }
}

#[inline(always)]
fn add_layer_norm_generic<S: Simd>(
    s: S,
    x: &[f32],
    residual: &mut [f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len();
    if n == 0 {
        return;
    }
    for ((xr, rr), or) in x
        .chunks_exact(n)
        .zip(residual.chunks_exact_mut(n))
        .zip(out.chunks_exact_mut(n))
    {
        add_into(s, xr, rr);
        layer_norm_row(s, rr, w, b, eps, or);
    }
}

#[inline(always)]
fn add_rms_norm_generic<S: Simd>(
    s: S,
    x: &[f32],
    residual: &mut [f32],
    w: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len();
    if n == 0 {
        return;
    }
    for ((xr, rr), or) in x
        .chunks_exact(n)
        .zip(residual.chunks_exact_mut(n))
        .zip(out.chunks_exact_mut(n))
    {
        add_into(s, xr, rr);
        rms_norm_row(s, rr, w, eps, or);
    }
}

multiversion! {
    /// Layer norm of the rows of `x` (`w.len()` columns) on this thread.
    pub fn layer_norm_rows[layer_norm_avx512, layer_norm_avx2, layer_norm_neon, layer_norm_scalar](
        x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]
    ) => layer_norm_generic;
}

multiversion! {
    /// RMS norm of the rows of `x` (`w.len()` columns) on this thread.
    pub fn rms_norm_rows[rms_norm_avx512, rms_norm_avx2, rms_norm_neon, rms_norm_scalar](
        x: &[f32], w: &[f32], eps: f32, out: &mut [f32]
    ) => rms_norm_generic;
}

multiversion! {
    /// `residual += x; out = layer_norm(residual)` on this thread.
    pub fn add_layer_norm_rows[add_layer_norm_avx512, add_layer_norm_avx2, add_layer_norm_neon,
        add_layer_norm_scalar](
        x: &[f32], residual: &mut [f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]
    ) => add_layer_norm_generic;
}

multiversion! {
    /// `residual += x; out = rms_norm(residual)` on this thread.
    pub fn add_rms_norm_rows[add_rms_norm_avx512, add_rms_norm_avx2, add_rms_norm_neon,
        add_rms_norm_scalar](
        x: &[f32], residual: &mut [f32], w: &[f32], eps: f32, out: &mut [f32]
    ) => add_rms_norm_generic;
}

// ---- parallel entry points -------------------------------------------------

/// `out = norm(x)` over rows of `w.len()` columns, rows split over the rayon pool.
/// `x` and `out` hold the same number of whole rows; `b` is ignored for RMS norm.
pub fn norm(
    isa: Isa,
    kind: NormKind,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len();
    par::rows_in_out(x, n, out, n, |x, out| match kind {
        NormKind::LayerNorm => layer_norm_rows(isa, x, w, b, eps, out),
        NormKind::RmsNorm => rms_norm_rows(isa, x, w, eps, out),
    });
}

/// `residual += x; out = norm(residual)` in one pass per row, rows split over the pool.
#[allow(clippy::too_many_arguments)]
pub fn add_norm(
    isa: Isa,
    kind: NormKind,
    x: &[f32],
    residual: &mut [f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    let n = w.len();
    par::rows_in_mut_out(x, residual, out, n, |x, r, out| match kind {
        NormKind::LayerNorm => add_layer_norm_rows(isa, x, r, w, b, eps, out),
        NormKind::RmsNorm => add_rms_norm_rows(isa, x, r, w, eps, out),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::{compare, random_normal, random_vec, Tol};

    const COLS: [usize; 9] = [1, 3, 17, 31, 33, 100, 257, 512, 1000];

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    #[test]
    fn norms_match_reference_on_every_isa() {
        for isa in isa::available() {
            for (ci, &cols) in COLS.iter().enumerate() {
                for rows in [1usize, 3, 7] {
                    let seed = (ci * 10 + rows) as u64;
                    // An offset mean makes the two-pass variance matter.
                    let x: Vec<f32> = random_normal(seed, rows * cols, 2.0)
                        .iter()
                        .map(|v| v + 3.0)
                        .collect();
                    let w = random_vec(seed + 1, cols);
                    let b = random_vec(seed + 2, cols);
                    for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
                        for bias in [Some(&b[..]), None] {
                            let mut want = vec![0.0; rows * cols];
                            match kind {
                                NormKind::LayerNorm => {
                                    layer_norm_reference(&x, &w, bias, 1e-5, &mut want)
                                }
                                NormKind::RmsNorm => rms_norm_reference(&x, &w, 1e-6, &mut want),
                            }
                            let eps = if kind == NormKind::LayerNorm {
                                1e-5
                            } else {
                                1e-6
                            };
                            let mut got = vec![f32::NAN; rows * cols];
                            norm(isa, kind, &x, &w, bias, eps, &mut got);
                            let what = format!("{kind:?} {} rows {rows} cols {cols}", isa.name());
                            compare(&what, &got, &f64s(&want), Tol::F32).unwrap();
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn add_norm_matches_reference_on_every_isa() {
        for isa in isa::available() {
            for (ci, &cols) in COLS.iter().enumerate() {
                let rows = 5;
                let seed = 100 + ci as u64;
                let x = random_normal(seed, rows * cols, 1.0);
                let res0 = random_normal(seed + 1, rows * cols, 1.0);
                let w = random_vec(seed + 2, cols);
                let b = random_vec(seed + 3, cols);
                for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
                    let mut res_want = res0.clone();
                    let mut want = vec![0.0; rows * cols];
                    add_norm_reference(kind, &x, &mut res_want, &w, Some(&b), 1e-5, &mut want);
                    let mut res = res0.clone();
                    let mut got = vec![f32::NAN; rows * cols];
                    add_norm(isa, kind, &x, &mut res, &w, Some(&b), 1e-5, &mut got);
                    let what = format!("add_norm {kind:?} {} cols {cols}", isa.name());
                    // The residual add is exact f32 in both.
                    assert_eq!(res, res_want, "{what}: residual");
                    compare(&what, &got, &f64s(&want), Tol::F32).unwrap();
                }
            }
        }
    }

    #[test]
    fn large_inputs_split_over_threads_agree() {
        // 300 x 768 > PAR_MIN_ELEMS: the rayon path.
        let (rows, cols) = (300, 768);
        let x = random_normal(7, rows * cols, 1.0);
        let w = random_vec(8, cols);
        let mut want = vec![0.0; rows * cols];
        rms_norm_reference(&x, &w, 1e-6, &mut want);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut got = vec![f32::NAN; rows * cols];
        pool.install(|| {
            norm(
                isa::active(),
                NormKind::RmsNorm,
                &x,
                &w,
                None,
                1e-6,
                &mut got,
            )
        });
        compare("rms_norm parallel", &got, &f64s(&want), Tol::F32).unwrap();
    }
}
