//! Softmax and log-softmax over the last dim, in place, in f32.
//!
//! As PyTorch's CPU kernel: `m = max(x)`, `e = exp(x - m)`, `s = sum(e)`;
//! softmax is `e * (1/s)`, log-softmax is `(x - m) - ln(s)`. A row whose
//! entries are all `f32::MIN` (HF's fully masked row) gives the uniform
//! distribution, as in PyTorch; a row of all `-inf` gives NaN, as in PyTorch.

use crate::isa::Isa;
use crate::simd::{math, multiversion, Simd};

use super::par;

// ---- reference -------------------------------------------------------------

/// Softmax of each row of `cols` elements, in f64.
pub fn softmax_reference(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols.max(1)) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for v in row.iter_mut() {
            *v = ((*v as f64 - m).exp() / s) as f32;
        }
    }
}

/// Log-softmax of each row of `cols` elements, in f64.
pub fn log_softmax_reference(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols.max(1)) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let ls = s.ln();
        for v in row.iter_mut() {
            *v = (*v as f64 - m - ls) as f32;
        }
    }
}

/// `out[r] = (max, sum(exp(x - max)))` of each row of `cols` elements, in f64.
pub fn softmax_stats_reference(x: &[f32], cols: usize, out: &mut [f32]) {
    for (row, o) in x.chunks_exact(cols.max(1)).zip(out.chunks_exact_mut(2)) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        o[0] = m as f32;
        o[1] = s as f32;
    }
}

// ---- generic kernels -------------------------------------------------------

/// `max(x)` (`-inf` for an empty row).
#[inline(always)]
pub(crate) fn row_max<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let mut a = [s.splat(f32::NEG_INFINITY); 4];
    let mut chunks = x.chunks_exact(4 * l);
    for c in &mut chunks {
        for (k, acc) in a.iter_mut().enumerate() {
            *acc = s.max(*acc, s.load(&c[k * l..]));
        }
    }
    let mut rest = chunks.remainder().chunks_exact(l);
    for c in &mut rest {
        a[0] = s.max(a[0], s.load(c));
    }
    a[1] = s.max(a[1], s.load_partial(rest.remainder(), f32::NEG_INFINITY));
    s.reduce_max(s.max(s.max(a[0], a[1]), s.max(a[2], a[3])))
}

/// Elements per block of the blocked sums below: partial sums in f32 vectors
/// within a block, block totals added in f64, so long rows (vocab 250k) and the
/// one-lane scalar path keep f32 accuracy.
const SUM_BLOCK: usize = 1024;

/// `x = exp(x - m)` in place; returns the sum of the new values.
#[inline(always)]
pub(crate) fn exp_sub_sum<S: Simd>(s: S, x: &mut [f32], m: f32) -> f32 {
    let mut total = 0.0f64;
    for block in x.chunks_mut(SUM_BLOCK) {
        total += exp_sub_sum_block(s, block, m) as f64;
    }
    total as f32
}

#[inline(always)]
fn exp_sub_sum_block<S: Simd>(s: S, x: &mut [f32], m: f32) -> f32 {
    let l = S::LANES;
    let vm = s.splat(m);
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let n = x.len();
    let full = n - n % l;
    let mut i = 0;
    while i + 2 * l <= full {
        let e0 = math::exp(s, s.sub(s.load(&x[i..]), vm));
        let e1 = math::exp(s, s.sub(s.load(&x[i + l..]), vm));
        s.store(&mut x[i..], e0);
        s.store(&mut x[i + l..], e1);
        a0 = s.add(a0, e0);
        a1 = s.add(a1, e1);
        i += 2 * l;
    }
    while i < full {
        let e = math::exp(s, s.sub(s.load(&x[i..]), vm));
        s.store(&mut x[i..], e);
        a0 = s.add(a0, e);
        i += l;
    }
    if full < n {
        // Pad with -inf so the padding lanes add exp(-inf) = 0.
        let e = math::exp(s, s.sub(s.load_partial(&x[full..], f32::NEG_INFINITY), vm));
        s.store_partial(&mut x[full..], e);
        a1 = s.add(a1, e);
    }
    s.reduce_sum(s.add(a0, a1))
}

/// `sum(exp(x - m))` without writing.
#[inline(always)]
fn exp_sub_sum_ro<S: Simd>(s: S, x: &[f32], m: f32) -> f32 {
    let mut total = 0.0f64;
    for block in x.chunks(SUM_BLOCK) {
        total += exp_sub_sum_ro_block(s, block, m) as f64;
    }
    total as f32
}

#[inline(always)]
fn exp_sub_sum_ro_block<S: Simd>(s: S, x: &[f32], m: f32) -> f32 {
    let l = S::LANES;
    let vm = s.splat(m);
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut chunks = x.chunks_exact(2 * l);
    for c in &mut chunks {
        a0 = s.add(a0, math::exp(s, s.sub(s.load(c), vm)));
        a1 = s.add(a1, math::exp(s, s.sub(s.load(&c[l..]), vm)));
    }
    let mut rest = chunks.remainder().chunks_exact(l);
    for c in &mut rest {
        a0 = s.add(a0, math::exp(s, s.sub(s.load(c), vm)));
    }
    let tail = rest.remainder();
    if !tail.is_empty() {
        let v = s.load_partial(tail, f32::NEG_INFINITY);
        a1 = s.add(a1, math::exp(s, s.sub(v, vm)));
    }
    s.reduce_sum(s.add(a0, a1))
}

/// `x = x * k` in place.
#[inline(always)]
pub(crate) fn scale_in_place<S: Simd>(s: S, x: &mut [f32], k: f32) {
    let l = S::LANES;
    let vk = s.splat(k);
    let n = x.len();
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let v = s.mul(s.load(&x[i..]), vk);
        s.store(&mut x[i..], v);
        i += l;
    }
    if full < n {
        let v = s.mul(s.load_partial(&x[full..], 0.0), vk);
        s.store_partial(&mut x[full..], v);
    }
}

/// `x = (x - m) - ls` in place.
#[inline(always)]
fn sub_two<S: Simd>(s: S, x: &mut [f32], m: f32, ls: f32) {
    let l = S::LANES;
    let (vm, vl) = (s.splat(m), s.splat(ls));
    let n = x.len();
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let v = s.sub(s.sub(s.load(&x[i..]), vm), vl);
        s.store(&mut x[i..], v);
        i += l;
    }
    if full < n {
        let v = s.sub(s.sub(s.load_partial(&x[full..], 0.0), vm), vl);
        s.store_partial(&mut x[full..], v);
    }
}

/// Softmax of one row in place.
#[inline(always)]
pub(crate) fn softmax_row<S: Simd>(s: S, x: &mut [f32]) {
    let m = row_max(s, x);
    let sum = exp_sub_sum(s, x, m);
    scale_in_place(s, x, 1.0 / sum);
}

#[inline(always)]
fn softmax_generic<S: Simd>(s: S, x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        softmax_row(s, row);
    }
}

#[inline(always)]
fn log_softmax_generic<S: Simd>(s: S, x: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        let m = row_max(s, row);
        let ls = exp_sub_sum_ro(s, row, m).ln();
        sub_two(s, row, m, ls);
    }
}

#[inline(always)]
fn softmax_stats_generic<S: Simd>(s: S, x: &[f32], cols: usize, out: &mut [f32]) {
    if cols == 0 {
        return;
    }
    for (row, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(2)) {
        let m = row_max(s, row);
        o[0] = m;
        o[1] = exp_sub_sum_ro(s, row, m);
    }
}

multiversion! {
    /// `(max, sum(exp(x - max)))` of each row of `cols` elements, on this thread.
    pub fn softmax_stats[softmax_stats_avx512, softmax_stats_avx2, softmax_stats_neon,
        softmax_stats_scalar](x: &[f32], cols: usize, out: &mut [f32]) => softmax_stats_generic;
}

multiversion! {
    /// Softmax of each row of `cols` elements, on this thread.
    pub fn softmax_rows[softmax_avx512, softmax_avx2, softmax_neon, softmax_scalar](
        x: &mut [f32], cols: usize
    ) => softmax_generic;
}

multiversion! {
    /// Log-softmax of each row of `cols` elements, on this thread.
    pub fn log_softmax_rows[log_softmax_avx512, log_softmax_avx2, log_softmax_neon,
        log_softmax_scalar](x: &mut [f32], cols: usize) => log_softmax_generic;
}

/// Softmax of each row of `cols` elements in place, rows split over the pool.
pub fn softmax(isa: Isa, x: &mut [f32], cols: usize) {
    par::rows_mut(x, cols, |x| softmax_rows(isa, x, cols));
}

/// Log-softmax of each row of `cols` elements in place, rows split over the pool.
pub fn log_softmax(isa: Isa, x: &mut [f32], cols: usize) {
    par::rows_mut(x, cols, |x| log_softmax_rows(isa, x, cols));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::{compare, random_normal, Tol};

    const COLS: [usize; 10] = [1, 3, 17, 31, 33, 100, 257, 1000, 4096, 32128];

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    fn check(isa: Isa, x: &[f32], cols: usize, what: &str) {
        let mut want = x.to_vec();
        softmax_reference(&mut want, cols);
        let mut got = x.to_vec();
        softmax(isa, &mut got, cols);
        compare(&format!("softmax {what}"), &got, &f64s(&want), Tol::F32).unwrap();
        let mut want = x.to_vec();
        log_softmax_reference(&mut want, cols);
        let mut got = x.to_vec();
        log_softmax(isa, &mut got, cols);
        compare(&format!("log_softmax {what}"), &got, &f64s(&want), Tol::F32).unwrap();
    }

    #[test]
    fn softmax_matches_reference_on_every_isa() {
        for isa in isa::available() {
            for (i, &cols) in COLS.iter().enumerate() {
                let rows = if cols > 1000 { 2 } else { 3 };
                let x = random_normal(i as u64, rows * cols, 4.0);
                check(isa, &x, cols, &format!("{} cols {cols}", isa.name()));
            }
        }
    }

    #[test]
    fn softmax_stats_match_reference_on_every_isa() {
        for isa in isa::available() {
            for (i, &cols) in COLS.iter().enumerate() {
                let rows = 3;
                let x = random_normal(i as u64 + 40, rows * cols, 4.0);
                let mut want = vec![0f32; rows * 2];
                softmax_stats_reference(&x, cols, &mut want);
                let mut got = vec![f32::NAN; rows * 2];
                softmax_stats(isa, &x, cols, &mut got);
                let what = format!("softmax_stats {} cols {cols}", isa.name());
                compare(&what, &got, &f64s(&want), Tol::F32).unwrap();
                for r in 0..rows {
                    assert_eq!(got[2 * r], want[2 * r], "{what}: the max is exact");
                }
            }
        }
    }

    #[test]
    fn masked_entries_get_zero_and_fully_masked_rows_are_uniform() {
        for isa in isa::available() {
            let cols = 37;
            let mut x = random_normal(5, 2 * cols, 1.0);
            // Row 0: some entries masked with f32::MIN; row 1: all masked.
            for j in (0..cols).step_by(3) {
                x[j] = f32::MIN;
            }
            for v in &mut x[cols..] {
                *v = f32::MIN;
            }
            let mut p = x.clone();
            softmax(isa, &mut p, cols);
            for j in (0..cols).step_by(3) {
                assert_eq!(p[j], 0.0, "{}", isa.name());
            }
            for &v in &p[cols..] {
                assert!((v - 1.0 / cols as f32).abs() < 1e-7, "{}: {v}", isa.name());
            }
            let mut lp = x.clone();
            log_softmax(isa, &mut lp, cols);
            for &v in &lp[cols..] {
                assert!((v + (cols as f32).ln()).abs() < 1e-6, "{}: {v}", isa.name());
            }
            check(isa, &x, cols, &format!("{} masked", isa.name()));
        }
    }

    #[test]
    fn minus_infinity_entries_are_zero_probability() {
        for isa in isa::available() {
            let mut x = vec![1.0, f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY, 0.5];
            softmax(isa, &mut x, 5);
            assert_eq!(x[1], 0.0);
            assert_eq!(x[3], 0.0);
            assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn large_batches_split_over_threads_agree() {
        let (rows, cols) = (8, 32128);
        let x = random_normal(11, rows * cols, 3.0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut got = x.clone();
        pool.install(|| softmax(isa::active(), &mut got, cols));
        let mut want = x.clone();
        softmax_reference(&mut want, cols);
        compare("softmax parallel", &got, &f64s(&want), Tol::F32).unwrap();
    }
}
