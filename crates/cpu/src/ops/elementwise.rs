//! `x += y`, `x *= y` (y the same size as x, or one row broadcast over x's rows)
//! and `x *= s`, in place, in f32.

use crate::isa::Isa;
use crate::simd::{multiversion, Simd};

use super::par;

// ---- reference -------------------------------------------------------------

/// `x[i] += y[i % y.len()]`.
pub fn add_assign_reference(x: &mut [f32], y: &[f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v as f64 + y[i % y.len()] as f64) as f32;
    }
}

/// `x[i] *= y[i % y.len()]`.
pub fn mul_assign_reference(x: &mut [f32], y: &[f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v as f64 * y[i % y.len()] as f64) as f32;
    }
}

/// `x[i] *= s`.
pub fn scale_reference(x: &mut [f32], s: f32) {
    for v in x {
        *v = (*v as f64 * s as f64) as f32;
    }
}

// ---- generic kernels -------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Mul,
}

/// `x op= y` for `x.len() == y.len()`.
#[inline(always)]
fn binary_row<S: Simd>(s: S, op: BinOp, x: &mut [f32], y: &[f32]) {
    let l = S::LANES;
    let n = x.len().min(y.len());
    let (x, y) = (&mut x[..n], &y[..n]);
    let f = |a, b| match op {
        BinOp::Add => s.add(a, b),
        BinOp::Mul => s.mul(a, b),
    };
    let full = n - n % l;
    let mut i = 0;
    while i < full {
        let v = f(s.load(&x[i..]), s.load(&y[i..]));
        s.store(&mut x[i..], v);
        i += l;
    }
    if full < n {
        let v = f(
            s.load_partial(&x[full..], 0.0),
            s.load_partial(&y[full..], 0.0),
        );
        s.store_partial(&mut x[full..], v);
    }
}

#[inline(always)]
fn binary_generic<S: Simd>(s: S, op: BinOp, x: &mut [f32], y: &[f32]) {
    if y.is_empty() {
        return;
    }
    for row in x.chunks_mut(y.len()) {
        binary_row(s, op, row, y);
    }
}

#[inline(always)]
fn scale_generic<S: Simd>(s: S, x: &mut [f32], k: f32) {
    super::softmax::scale_in_place(s, x, k);
}

multiversion! {
    /// `x op= y` on this thread, `y` repeated over `x` (`x.len()` a multiple of `y.len()`).
    pub fn binary_chunk[binary_avx512, binary_avx2, binary_neon, binary_scalar](
        op: BinOp, x: &mut [f32], y: &[f32]
    ) => binary_generic;
}

multiversion! {
    /// `x *= k` on this thread.
    pub fn scale_chunk[scale_avx512, scale_avx2, scale_neon, scale_scalar](
        x: &mut [f32], k: f32
    ) => scale_generic;
}

/// `x op= y`: `y` has `x.len()` elements, or is one row repeated over `x`'s rows
/// (`x.len()` a multiple of `y.len()`). Split over the pool when large.
pub fn binary(isa: Isa, op: BinOp, x: &mut [f32], y: &[f32]) {
    if y.len() == x.len() {
        par::rows_in_mut(y, x, 1, |y, x| binary_chunk(isa, op, x, y));
    } else {
        par::rows_mut(x, y.len(), |x| binary_chunk(isa, op, x, y));
    }
}

/// `x += y` (see [`binary`]).
pub fn add_assign(isa: Isa, x: &mut [f32], y: &[f32]) {
    binary(isa, BinOp::Add, x, y)
}

/// `x *= y` (see [`binary`]).
pub fn mul_assign(isa: Isa, x: &mut [f32], y: &[f32]) {
    binary(isa, BinOp::Mul, x, y)
}

/// `x *= k`, split over the pool when large.
pub fn scale(isa: Isa, x: &mut [f32], k: f32) {
    par::rows_mut(x, 1, |x| scale_chunk(isa, x, k));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::{compare, random_vec, Tol};

    #[test]
    fn elementwise_matches_reference_on_every_isa() {
        for isa in isa::available() {
            for (i, &cols) in [1usize, 3, 17, 31, 33, 100, 257, 1000].iter().enumerate() {
                for rows in [1usize, 4] {
                    let seed = i as u64 * 7 + rows as u64;
                    let x = random_vec(seed, rows * cols);
                    for ylen in [rows * cols, cols] {
                        let y = random_vec(seed + 1, ylen);
                        for op in [BinOp::Add, BinOp::Mul] {
                            let mut want = x.clone();
                            match op {
                                BinOp::Add => add_assign_reference(&mut want, &y),
                                BinOp::Mul => mul_assign_reference(&mut want, &y),
                            }
                            let mut got = x.clone();
                            binary(isa, op, &mut got, &y);
                            // Single f32 operations: exact.
                            assert_eq!(got, want, "{op:?} {} {rows}x{cols} y {ylen}", isa.name());
                        }
                    }
                    let mut want = x.clone();
                    scale_reference(&mut want, 0.125);
                    let mut got = x.clone();
                    scale(isa, &mut got, 0.125);
                    let w: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                    compare("scale", &got, &w, Tol::F32).unwrap();
                }
            }
        }
    }

    #[test]
    fn large_broadcast_splits_over_threads() {
        let (rows, cols) = (200, 768);
        let x = random_vec(1, rows * cols);
        let y = random_vec(2, cols);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut got = x.clone();
        pool.install(|| add_assign(isa::active(), &mut got, &y));
        let mut want = x;
        add_assign_reference(&mut want, &y);
        assert_eq!(got, want);
    }
}
