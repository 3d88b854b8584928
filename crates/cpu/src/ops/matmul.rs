//! Batched matmul `out[b] = a[b] @ b[b]` for a `[B, M, K]` (contiguous), b
//! `[B, K, N]` any strides, out `[B, M, N]` (contiguous), f32.
//!
//! Three layouts of b: rows contiguous (`stride_n == 1`): each output row is a
//! register tile of 4 vectors accumulating `a[m, k] * b[k, n..]` over k;
//! transposed (`stride_k == 1`, e.g. `kᵀ` as a view): dot products along k;
//! anything else is packed to rows first.

use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::{multiversion, Simd};

use super::par;

/// A strided `[B, K, N]` view: element `(b, k, n)` is `data[off + b*sb + k*sk + n*sn]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub sb: usize,
    pub sk: usize,
    pub sn: usize,
}

/// Plain loops, f64 accumulation.
pub fn batched_matmul_reference(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: Strided,
    out: &mut [f32],
) {
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    let bv = b.data[b.off + bi * b.sb + p * b.sk + j * b.sn];
                    acc += a[(bi * m + i) * k + p] as f64 * bv as f64;
                }
                out[(bi * m + i) * n + j] = acc as f32;
            }
        }
    }
}

/// One output row with b rows contiguous: `b` starts at `(batch, 0, 0)`, row stride `ldb`.
#[inline(always)]
fn row_rowmajor<S: Simd>(s: S, a: &[f32], b: &[f32], ldb: usize, n: usize, out: &mut [f32]) {
    let l = S::LANES;
    let k = a.len();
    let mut j = 0;
    while j + 4 * l <= n {
        let mut acc = [s.zero(); 4];
        for (p, &ap) in a.iter().enumerate() {
            let av = s.splat(ap);
            let br = &b[p * ldb + j..p * ldb + j + 4 * l];
            for (c, x) in acc.iter_mut().enumerate() {
                *x = s.fma(av, s.load(&br[c * l..]), *x);
            }
        }
        for (c, x) in acc.iter().enumerate() {
            s.store(&mut out[j + c * l..], *x);
        }
        j += 4 * l;
    }
    while j < n {
        let w = (n - j).min(l);
        let mut acc = s.zero();
        for p in 0..k {
            let bv = s.load_partial(&b[p * ldb + j..p * ldb + j + w], 0.0);
            acc = s.fma(s.splat(a[p]), bv, acc);
        }
        s.store_partial(&mut out[j..j + w], acc);
        j += w;
    }
}

/// One output row with b transposed: column `j` of b is `bt[j * ldb ..][..k]`.
#[inline(always)]
fn row_transposed<S: Simd>(s: S, a: &[f32], bt: &[f32], ldb: usize, out: &mut [f32]) {
    let l = S::LANES;
    let k = a.len();
    let full = k - k % l;
    for (j, o) in out.iter_mut().enumerate() {
        let col = &bt[j * ldb..j * ldb + k];
        let (mut a0, mut a1) = (s.zero(), s.zero());
        let mut p = 0;
        while p + 2 * l <= full {
            a0 = s.fma(s.load(&a[p..]), s.load(&col[p..]), a0);
            a1 = s.fma(s.load(&a[p + l..]), s.load(&col[p + l..]), a1);
            p += 2 * l;
        }
        while p < full {
            a0 = s.fma(s.load(&a[p..]), s.load(&col[p..]), a0);
            p += l;
        }
        if full < k {
            a1 = s.fma(
                s.load_partial(&a[full..], 0.0),
                s.load_partial(&col[full..], 0.0),
                a1,
            );
        }
        *o = s.reduce_sum(s.add(a0, a1));
    }
}

/// Output rows `row0 ..` (global row = batch * m + i) of the batched product.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_generic<S: Simd>(
    s: S,
    m: usize,
    k: usize,
    n: usize,
    transposed: bool,
    b: Strided,
    row0: usize,
    a: &[f32],
    out: &mut [f32],
) {
    if n == 0 {
        return;
    }
    for (r, o) in out.chunks_exact_mut(n).enumerate() {
        let g = row0 + r;
        let bi = g / m.max(1);
        let ar = &a[g * k..(g + 1) * k];
        let base = b.off + bi * b.sb;
        if transposed {
            row_transposed(s, ar, &b.data[base..], b.sn, o);
        } else {
            row_rowmajor(s, ar, &b.data[base..], b.sk, n, o);
        }
    }
}

multiversion! {
    /// Rows `row0 .. row0 + out.len()/n` of the product, on this thread.
    pub fn batched_matmul_rows[batched_matmul_avx512, batched_matmul_avx2,
        batched_matmul_neon, batched_matmul_scalar](
        m: usize, k: usize, n: usize, transposed: bool, b: Strided, row0: usize,
        a: &[f32], out: &mut [f32]
    ) => rows_generic;
}

/// `out[b] = a[b] @ b[b]`; rows split over the pool when large.
#[allow(clippy::too_many_arguments)]
pub fn batched_matmul(
    isa: Isa,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: Strided,
    out: &mut [f32],
) {
    if batch * m * n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let packed: Vec<f32>;
    let (b, transposed) = if b.sn == 1 || n == 1 {
        (Strided { sn: 1, ..b }, false)
    } else if b.sk == 1 || k == 1 {
        (Strided { sk: 1, ..b }, true)
    } else {
        packed = (0..batch * k * n)
            .map(|x| {
                let (bi, p, j) = (x / (k * n), (x / n) % k, x % n);
                b.data[b.off + bi * b.sb + p * b.sk + j * b.sn]
            })
            .collect();
        let v = Strided {
            data: &packed,
            off: 0,
            sb: k * n,
            sk: n,
            sn: 1,
        };
        (v, false)
    };
    if par::worth_parallel(batch * m * n * k / 4) {
        let rows = (16_384 / n).max(1);
        out.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, o)| batched_matmul_rows(isa, m, k, n, transposed, b, i * rows, a, o));
    } else {
        batched_matmul_rows(isa, m, k, n, transposed, b, 0, a, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::{compare, random_vec, Tol};

    #[test]
    fn every_layout_matches_reference_on_every_isa() {
        let shapes = [
            (1, 1, 1, 1),
            (2, 3, 17, 31),
            (1, 33, 64, 100),
            (3, 5, 257, 3),
            (2, 4, 31, 65),
        ];
        for isa in isa::available() {
            for (si, &(batch, m, k, n)) in shapes.iter().enumerate() {
                let a = random_vec(si as u64, batch * m * k);
                let raw = random_vec(si as u64 + 50, batch * k * n);
                // Row-major [B, K, N], transposed view of [B, N, K], and a permuted
                // [K, B, N] viewed as [B, K, N] (neither stride 1: packed).
                let layouts = [
                    Strided {
                        data: &raw,
                        off: 0,
                        sb: k * n,
                        sk: n,
                        sn: 1,
                    },
                    Strided {
                        data: &raw,
                        off: 0,
                        sb: n * k,
                        sk: 1,
                        sn: k,
                    },
                    Strided {
                        data: &raw,
                        off: 0,
                        sb: n,
                        sk: batch * n,
                        sn: 1,
                    },
                ];
                for (li, b) in layouts.into_iter().enumerate() {
                    let mut want = vec![0.0; batch * m * n];
                    batched_matmul_reference(batch, m, k, n, &a, b, &mut want);
                    let mut got = vec![f32::NAN; batch * m * n];
                    batched_matmul(isa, batch, m, k, n, &a, b, &mut got);
                    let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
                    let what = format!("bmm {} {batch}x{m}x{k}x{n} layout {li}", isa.name());
                    compare(&what, &got, &w, Tol::F32).unwrap();
                }
                // A general permutation: b[bi][p][j] = raw[j][bi][p] (sn = batch*k, sk = 1... ) and
                // one with no unit stride at all: raw as [N, K, B].
                let b = Strided {
                    data: &raw,
                    off: 0,
                    sb: 1,
                    sk: batch,
                    sn: k * batch,
                };
                let mut want = vec![0.0; batch * m * n];
                batched_matmul_reference(batch, m, k, n, &a, b, &mut want);
                let mut got = vec![f32::NAN; batch * m * n];
                batched_matmul(isa, batch, m, k, n, &a, b, &mut got);
                let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
                compare("bmm no unit stride", &got, &w, Tol::F32).unwrap();
            }
        }
    }

    #[test]
    fn large_products_split_over_threads() {
        let (batch, m, k, n) = (4, 64, 64, 128);
        let a = random_vec(1, batch * m * k);
        let raw = random_vec(2, batch * k * n);
        let b = Strided {
            data: &raw,
            off: 0,
            sb: k * n,
            sk: n,
            sn: 1,
        };
        let mut want = vec![0.0; batch * m * n];
        batched_matmul_reference(batch, m, k, n, &a, b, &mut want);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut got = vec![f32::NAN; batch * m * n];
        pool.install(|| batched_matmul(isa::active(), batch, m, k, n, &a, b, &mut got));
        let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        compare("bmm parallel", &got, &w, Tol::F32).unwrap();
    }
}
