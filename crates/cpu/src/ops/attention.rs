//! Multi-head attention (see `encdec_core::AttentionParams`).
//!
//! q `[B, Tq, H*D]`, k/v `[Bkv, Tcap, H*D]` (heads interleaved in the last dim;
//! each may be a strided view whose last dim is contiguous), out `[B, Tq, H*D]`.
//! Per query row `i` of batch row `b`, head `h`, with `r = kv_index[b]`:
//!
//! ```text
//! qs     = q[b, i, h] * scale                          (rounded to f32, as BART)
//! s[j]   = qs · k[r, j, h] + (bias[h, i, j] + mask[r, j])   for j < limit(i)
//! p      = softmax(s)   (max-subtracted, f32, times 1/sum)
//! out    = sum_j p[j] v[r, j, h]
//! ```
//!
//! `bias[h, i, j]` is the `position_bias` tensor, or T5's relative bias
//! `table[bucket(j - (q_offset + i)), h]` ([`relative_bias_rows`]: the bucket of
//! each relative position of the call is computed once and its table entry
//! stored per head, so a bias row is a slice of it; the values added are the
//! same f32 table entries a materialised `position_bias` holds).
//!
//! `limit(i) = kv_len`, or with `causal` `min(kv_len, q_offset + i + 1)`. This is
//! HF eager attention's op order; keys past `limit` have weight exactly 0 there
//! too (`exp(f32::MIN - max)`), except in a row where every allowed score is
//! `f32::MIN` (fully masked): HF's row is then all `f32::MIN` and softmax gives
//! the uniform distribution over all `kv_len` keys, and so does this.
//!
//! Implementation: rayon over (batch row, block of query rows), or over (batch
//! row, head) when that gives too few tasks. With 4 or more query rows, K is
//! packed once per (kv row, head) into blocks of `KB * LANES` keys
//! (`[block][d][KB * LANES]`, KB = 4 on AVX-512, else 2) so that a 4-query x
//! KB-vector register tile computes scores without horizontal sums; decode
//! steps (`Tq < 4`) use dot products. `probs · V` runs on a 4-query (or
//! 1-query) register tile over V's rows in place.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::{self, multiversion, Simd};

use super::softmax::{exp_sub_sum, row_max, scale_in_place};

/// A 3-D f32 view `[batch, t, cols]` whose last dim is contiguous:
/// element `(b, t, c)` is `data[off + b * sb + t * st + c]`.
#[derive(Debug, Clone, Copy)]
pub struct View3<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub sb: usize,
    pub st: usize,
}

impl<'a> View3<'a> {
    /// A contiguous `[_, t, cols]` tensor.
    pub fn contiguous(data: &'a [f32], t: usize, cols: usize) -> Self {
        View3 {
            data,
            off: 0,
            sb: t * cols,
            st: cols,
        }
    }
    /// `len` elements of row `(b, t)` from column `c`.
    #[inline(always)]
    fn at(&self, b: usize, t: usize, c: usize, len: usize) -> &'a [f32] {
        let o = self.off + b * self.sb + t * self.st + c;
        &self.data[o..o + len]
    }
}

/// Shapes and inputs of one attention call. The caller (the backend) has
/// checked every extent and every `kv_index` entry.
#[derive(Debug, Clone, Copy)]
pub struct Attn<'a> {
    pub batch: usize,
    pub tq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub tcap: usize,
    pub kv_len: usize,
    pub scale: f32,
    pub causal: bool,
    pub q_offset: usize,
    pub q: View3<'a>,
    pub k: View3<'a>,
    pub v: View3<'a>,
    /// `[Bkv, Tcap]` additive.
    pub key_mask: Option<&'a [f32]>,
    /// `[H, Tq, kv_len]` additive.
    pub position_bias: Option<&'a [f32]>,
    /// `[H, Tq - 1 + kv_len]` additive, by relative position (from
    /// [`relative_bias_rows`]): the bias of query row `i`, key `j` in head `h` is
    /// entry `h * (Tq - 1 + kv_len) + (Tq - 1 - i) + j`. Not with `position_bias`.
    pub relative_bias: Option<&'a [f32]>,
    /// `[B]` kv row of each batch row.
    pub kv_index: Option<&'a [u32]>,
}

impl Attn<'_> {
    #[inline(always)]
    fn kv_row(&self, b: usize) -> usize {
        self.kv_index.map_or(b, |ix| ix[b] as usize)
    }
    /// The additive bias of query row `i` in head `h` over keys `0..kv_len`.
    #[inline(always)]
    fn bias_row(&self, h: usize, i: usize) -> Option<&[f32]> {
        if let Some(rb) = self.relative_bias {
            let w = self.tq - 1 + self.kv_len;
            let o = h * w + (self.tq - 1 - i);
            return Some(&rb[o..o + self.kv_len]);
        }
        self.position_bias
            .map(|pb| &pb[(h * self.tq + i) * self.kv_len..(h * self.tq + i + 1) * self.kv_len])
    }
    /// Keys query `i` may attend to.
    #[inline(always)]
    fn limit(&self, i: usize) -> usize {
        if self.causal {
            self.kv_len.min(self.q_offset + i + 1)
        } else {
            self.kv_len
        }
    }
}

/// The relative-position bias rows of one attention call into `out`
/// (`[H, tq - 1 + kv_len]`, see [`Attn::relative_bias`]): entry `h * w + t`
/// (`w = tq - 1 + kv_len`) is `table[bucket(rel), h]` for the relative position
/// `rel = t - (tq - 1) - q_offset` (key `j` minus query position `q_offset + i`
/// at `t = tq - 1 - i + j`), with the bucket of
/// [`encdec_core::backend::relative_position_bucket`]. `table` is `[buckets, H]`.
/// Reuses `out`'s capacity.
#[allow(clippy::too_many_arguments)]
pub fn relative_bias_rows(
    table: &[f32],
    heads: usize,
    num_buckets: usize,
    max_distance: usize,
    bidirectional: bool,
    q_offset: usize,
    tq: usize,
    kv_len: usize,
    out: &mut Vec<f32>,
) {
    let w = (tq + kv_len).saturating_sub(1);
    out.clear();
    out.resize(heads * w, 0.0);
    for t in 0..w {
        let rel = t as i64 - (tq as i64 - 1) - q_offset as i64;
        let bk = encdec_core::backend::relative_position_bucket(
            rel,
            bidirectional,
            num_buckets,
            max_distance,
        );
        for (h, &v) in table[bk * heads..(bk + 1) * heads].iter().enumerate() {
            out[h * w + t] = v;
        }
    }
}

// ---- reference -------------------------------------------------------------

/// Plain loops, f64 scores/softmax/sums; `q * scale` rounded to f32 first (as
/// BART), keys past `limit` scored `f32::MIN` (as HF's additive causal mask).
pub fn attention_reference(a: &Attn, out: &mut [f32]) {
    let (h_n, d) = (a.heads, a.head_dim);
    let hd = h_n * d;
    let mut s = vec![0.0f64; a.kv_len];
    for b in 0..a.batch {
        let r = a.kv_row(b);
        for h in 0..h_n {
            for i in 0..a.tq {
                let q = a.q.at(b, i, h * d, d);
                let lim = a.limit(i);
                for (j, sj) in s.iter_mut().enumerate() {
                    if j >= lim {
                        *sj = f32::MIN as f64;
                        continue;
                    }
                    let k = a.k.at(r, j, h * d, d);
                    let dot: f64 = q
                        .iter()
                        .zip(k)
                        .map(|(&qv, &kv)| (qv * a.scale) as f64 * kv as f64)
                        .sum();
                    let bias = a.bias_row(h, i).map_or(0.0, |pb| pb[j]);
                    let mask = a.key_mask.map_or(0.0, |m| m[r * a.tcap + j]);
                    *sj = dot + (bias + mask) as f64;
                }
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|&x| (x - m).exp()).sum();
                let o = &mut out[(b * a.tq + i) * hd + h * d..][..d];
                for (c, oc) in o.iter_mut().enumerate() {
                    let mut acc = 0.0f64;
                    for (j, &sj) in s.iter().enumerate() {
                        acc += (sj - m).exp() / sum * a.v.at(r, j, h * d + c, 1)[0] as f64;
                    }
                    *oc = acc as f32;
                }
            }
        }
    }
}

// ---- generic kernels -------------------------------------------------------

/// Query rows per register tile of the packed path.
const QB: usize = 4;
/// Below this many query rows, scores use dot products instead of packed K.
const PACK_MIN_TQ: usize = 4;

/// Vectors per packed-K block (and per register tile row of `q·k`): 4 with
/// AVX-512's 32 registers, 2 with 16.
const fn key_vectors(lanes: usize) -> usize {
    if lanes >= 16 {
        4
    } else {
        2
    }
}

/// Packed-K block width (keys) for an ISA.
fn key_block(isa: Isa) -> usize {
    let l = simd::lanes(isa);
    key_vectors(l) * l
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// `r += a` elementwise.
#[inline(always)]
fn add_into<S: Simd>(s: S, r: &mut [f32], a: &[f32]) {
    let l = S::LANES;
    let n = r.len();
    let a = &a[..n];
    let full = n - n % l;
    let mut j = 0;
    while j < full {
        let v = s.add(s.load(&r[j..]), s.load(&a[j..]));
        s.store(&mut r[j..], v);
        j += l;
    }
    if full < n {
        let v = s.add(
            s.load_partial(&r[full..], 0.0),
            s.load_partial(&a[full..], 0.0),
        );
        s.store_partial(&mut r[full..], v);
    }
}

/// `r += (a + b)` elementwise (T5 adds the mask to the bias first).
#[inline(always)]
fn add2_into<S: Simd>(s: S, r: &mut [f32], a: &[f32], b: &[f32]) {
    let l = S::LANES;
    let n = r.len();
    let (a, b) = (&a[..n], &b[..n]);
    let full = n - n % l;
    let mut j = 0;
    while j < full {
        let ab = s.add(s.load(&a[j..]), s.load(&b[j..]));
        let v = s.add(s.load(&r[j..]), ab);
        s.store(&mut r[j..], v);
        j += l;
    }
    if full < n {
        let ab = s.add(
            s.load_partial(&a[full..], 0.0),
            s.load_partial(&b[full..], 0.0),
        );
        let v = s.add(s.load_partial(&r[full..], 0.0), ab);
        s.store_partial(&mut r[full..], v);
    }
}

/// Adds bias+mask to `row[..limit]`, then softmax in place; returns how many
/// leading entries of `row` are probabilities (the rest must be treated as 0).
#[inline(always)]
fn finalize_row<S: Simd>(
    s: S,
    row: &mut [f32],
    limit: usize,
    kv_len: usize,
    bias: Option<&[f32]>,
    mask: Option<&[f32]>,
) -> usize {
    let r = &mut row[..limit];
    match (bias, mask) {
        (Some(b), Some(m)) => add2_into(s, r, b, m),
        (Some(b), None) => add_into(s, r, b),
        (None, Some(m)) => add_into(s, r, m),
        (None, None) => {}
    }
    let m = row_max(s, r);
    if m == f32::MIN && limit < kv_len {
        // Fully masked row: HF's scores are all f32::MIN, softmax is uniform.
        row[..kv_len].fill(1.0 / kv_len as f32);
        return kv_len;
    }
    let sum = exp_sub_sum(s, r, m);
    scale_in_place(s, r, 1.0 / sum);
    limit
}

/// 4 query rows (`qp`, rows of `d`) x one packed block of 4 key vectors
/// (`kb`: `[d][4 * LANES]`): the 16 accumulators, row-major.
///
/// # Safety
/// `qp[.. 4*d]` and `kb[.. d * 4 * LANES]` must be readable.
#[inline(always)]
unsafe fn qk_tile_4x4<S: Simd>(s: S, qp: *const f32, d: usize, kb: *const f32) -> [S::V; 16] {
    let l = S::LANES;
    let w = 4 * l;
    let z = s.zero();
    let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
    let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
    let (mut c20, mut c21, mut c22, mut c23) = (z, z, z, z);
    let (mut c30, mut c31, mut c32, mut c33) = (z, z, z, z);
    for dd in 0..d {
        // SAFETY: dd < d; the caller guarantees both extents.
        unsafe {
            let k = kb.add(dd * w);
            let k0 = s.load_ptr(k);
            let k1 = s.load_ptr(k.add(l));
            let k2 = s.load_ptr(k.add(2 * l));
            let k3 = s.load_ptr(k.add(3 * l));
            let q = s.splat(*qp.add(dd));
            c00 = s.fma(q, k0, c00);
            c01 = s.fma(q, k1, c01);
            c02 = s.fma(q, k2, c02);
            c03 = s.fma(q, k3, c03);
            let q = s.splat(*qp.add(d + dd));
            c10 = s.fma(q, k0, c10);
            c11 = s.fma(q, k1, c11);
            c12 = s.fma(q, k2, c12);
            c13 = s.fma(q, k3, c13);
            let q = s.splat(*qp.add(2 * d + dd));
            c20 = s.fma(q, k0, c20);
            c21 = s.fma(q, k1, c21);
            c22 = s.fma(q, k2, c22);
            c23 = s.fma(q, k3, c23);
            let q = s.splat(*qp.add(3 * d + dd));
            c30 = s.fma(q, k0, c30);
            c31 = s.fma(q, k1, c31);
            c32 = s.fma(q, k2, c32);
            c33 = s.fma(q, k3, c33);
        }
    }
    [
        c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33,
    ]
}

/// As [`qk_tile_4x4`] with 2 key vectors per block.
///
/// # Safety
/// `qp[.. 4*d]` and `kb[.. d * 2 * LANES]` must be readable.
#[inline(always)]
unsafe fn qk_tile_4x2<S: Simd>(s: S, qp: *const f32, d: usize, kb: *const f32) -> [S::V; 8] {
    let l = S::LANES;
    let w = 2 * l;
    let z = s.zero();
    let (mut c00, mut c01, mut c10, mut c11) = (z, z, z, z);
    let (mut c20, mut c21, mut c30, mut c31) = (z, z, z, z);
    for dd in 0..d {
        // SAFETY: dd < d; the caller guarantees both extents.
        unsafe {
            let k = kb.add(dd * w);
            let k0 = s.load_ptr(k);
            let k1 = s.load_ptr(k.add(l));
            let q = s.splat(*qp.add(dd));
            c00 = s.fma(q, k0, c00);
            c01 = s.fma(q, k1, c01);
            let q = s.splat(*qp.add(d + dd));
            c10 = s.fma(q, k0, c10);
            c11 = s.fma(q, k1, c11);
            let q = s.splat(*qp.add(2 * d + dd));
            c20 = s.fma(q, k0, c20);
            c21 = s.fma(q, k1, c21);
            let q = s.splat(*qp.add(3 * d + dd));
            c30 = s.fma(q, k0, c30);
            c31 = s.fma(q, k1, c31);
        }
    }
    [c00, c01, c10, c11, c20, c21, c30, c31]
}

/// `sc[j] = qs · k[r, j, h]` for `j < n`, four keys at a time.
#[inline(always)]
fn qk_dot<S: Simd>(s: S, a: &Attn, qs: &[f32], r: usize, h: usize, n: usize, sc: &mut [f32]) {
    let l = S::LANES;
    let d = a.head_dim;
    let qs = &qs[..d];
    let full = d - d % l;
    let mut j = 0;
    while j + 4 <= n {
        let k0 = a.k.at(r, j, h * d, d);
        let k1 = a.k.at(r, j + 1, h * d, d);
        let k2 = a.k.at(r, j + 2, h * d, d);
        let k3 = a.k.at(r, j + 3, h * d, d);
        let z = s.zero();
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let mut c = 0;
        while c < full {
            let q = s.load(&qs[c..]);
            a0 = s.fma(q, s.load(&k0[c..]), a0);
            a1 = s.fma(q, s.load(&k1[c..]), a1);
            a2 = s.fma(q, s.load(&k2[c..]), a2);
            a3 = s.fma(q, s.load(&k3[c..]), a3);
            c += l;
        }
        if full < d {
            let q = s.load_partial(&qs[full..], 0.0);
            a0 = s.fma(q, s.load_partial(&k0[full..], 0.0), a0);
            a1 = s.fma(q, s.load_partial(&k1[full..], 0.0), a1);
            a2 = s.fma(q, s.load_partial(&k2[full..], 0.0), a2);
            a3 = s.fma(q, s.load_partial(&k3[full..], 0.0), a3);
        }
        sc[j] = s.reduce_sum(a0);
        sc[j + 1] = s.reduce_sum(a1);
        sc[j + 2] = s.reduce_sum(a2);
        sc[j + 3] = s.reduce_sum(a3);
        j += 4;
    }
    while j < n {
        let k = a.k.at(r, j, h * d, d);
        let mut acc = s.zero();
        let mut c = 0;
        while c < full {
            acc = s.fma(s.load(&qs[c..]), s.load(&k[c..]), acc);
            c += l;
        }
        if full < d {
            acc = s.fma(
                s.load_partial(&qs[full..], 0.0),
                s.load_partial(&k[full..], 0.0),
                acc,
            );
        }
        sc[j] = s.reduce_sum(acc);
        j += 1;
    }
}

/// `probs · V` of head `h` for one query row (decode) into `out[..d]`, reading
/// V in place: `p[..n]` are the probabilities.
#[inline(always)]
fn pv_row<S: Simd>(s: S, a: &Attn, p: &[f32], n: usize, r: usize, h: usize, out: &mut [f32]) {
    let l = S::LANES;
    let d = a.head_dim;
    if n == 0 {
        out[..d].fill(0.0);
        return;
    }
    // V row j of this head starts at v0 + j * st; check the last one once.
    let v0 = a.v.off + r * a.v.sb + h * d;
    assert!(v0 + (n - 1) * a.v.st + d <= a.v.data.len());
    assert!(p.len() >= n);
    let (vp, pp, st) = (a.v.data.as_ptr(), p.as_ptr(), a.v.st);
    let mut c = 0;
    while c + 4 * l <= d {
        // SAFETY: c + 4*l <= d, so the tile's columns of V rows 0..n lie within
        // the head (last row asserted above), and p[..n] is in bounds.
        let tile = unsafe { pv_tile_1x4(s, vp.add(v0 + c), st, pp, n) };
        for (k, x) in tile.iter().enumerate() {
            s.store(&mut out[c + k * l..], *x);
        }
        c += 4 * l;
    }
    while c < d {
        let width = (d - c).min(l);
        let mut acc = s.zero();
        for (j, &pj) in p[..n].iter().enumerate() {
            let vv = s.load_partial(a.v.at(r, j, h * d + c, width), 0.0);
            acc = s.fma(s.splat(pj), vv, acc);
        }
        s.store_partial(&mut out[c..c + width], acc);
        c += width;
    }
}

/// One query row x 4 vectors of V columns: `sum_j p[j] v[j]`.
///
/// # Safety
/// For `j < n`: `vc[j*st .. j*st + 4*LANES]` and `pp[j]` must be readable.
#[inline(always)]
unsafe fn pv_tile_1x4<S: Simd>(
    s: S,
    vc: *const f32,
    st: usize,
    pp: *const f32,
    n: usize,
) -> [S::V; 4] {
    let l = S::LANES;
    let z = s.zero();
    let (mut c0, mut c1, mut c2, mut c3) = (z, z, z, z);
    for j in 0..n {
        // SAFETY: j < n; the caller guarantees the extents.
        unsafe {
            let v = vc.add(j * st);
            let pj = s.splat(*pp.add(j));
            c0 = s.fma(pj, s.load_ptr(v), c0);
            c1 = s.fma(pj, s.load_ptr(v.add(l)), c1);
            c2 = s.fma(pj, s.load_ptr(v.add(2 * l)), c2);
            c3 = s.fma(pj, s.load_ptr(v.add(3 * l)), c3);
        }
    }
    [c0, c1, c2, c3]
}

/// Four query rows (p rows of stride `ld`) x 4 vectors of V columns, added to
/// the accumulators `c` (row-major).
///
/// # Safety
/// For `j < n`: `vc[j*st .. j*st + 4*LANES]` and `pp[q*ld + j]` (q < 4) must be readable.
#[inline(always)]
unsafe fn pv_tile_4x4<S: Simd>(
    s: S,
    vc: *const f32,
    st: usize,
    pp: *const f32,
    ld: usize,
    n: usize,
    c: [S::V; 16],
) -> [S::V; 16] {
    let l = S::LANES;
    let [mut c00, mut c01, mut c02, mut c03, mut c10, mut c11, mut c12, mut c13, mut c20, mut c21, mut c22, mut c23, mut c30, mut c31, mut c32, mut c33] =
        c;
    for j in 0..n {
        // SAFETY: j < n; the caller guarantees the extents.
        unsafe {
            let v = vc.add(j * st);
            let v0 = s.load_ptr(v);
            let v1 = s.load_ptr(v.add(l));
            let v2 = s.load_ptr(v.add(2 * l));
            let v3 = s.load_ptr(v.add(3 * l));
            let p = s.splat(*pp.add(j));
            c00 = s.fma(p, v0, c00);
            c01 = s.fma(p, v1, c01);
            c02 = s.fma(p, v2, c02);
            c03 = s.fma(p, v3, c03);
            let p = s.splat(*pp.add(ld + j));
            c10 = s.fma(p, v0, c10);
            c11 = s.fma(p, v1, c11);
            c12 = s.fma(p, v2, c12);
            c13 = s.fma(p, v3, c13);
            let p = s.splat(*pp.add(2 * ld + j));
            c20 = s.fma(p, v0, c20);
            c21 = s.fma(p, v1, c21);
            c22 = s.fma(p, v2, c22);
            c23 = s.fma(p, v3, c23);
            let p = s.splat(*pp.add(3 * ld + j));
            c30 = s.fma(p, v0, c30);
            c31 = s.fma(p, v1, c31);
            c32 = s.fma(p, v2, c32);
            c33 = s.fma(p, v3, c33);
        }
    }
    [
        c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33,
    ]
}

/// Four query rows x 2 vectors of V columns, added to the accumulators `c`.
///
/// # Safety
/// For `j < n`: `vc[j*st .. j*st + 2*LANES]` and `pp[q*ld + j]` (q < 4) must be readable.
#[inline(always)]
unsafe fn pv_tile_4x2<S: Simd>(
    s: S,
    vc: *const f32,
    st: usize,
    pp: *const f32,
    ld: usize,
    n: usize,
    c: [S::V; 8],
) -> [S::V; 8] {
    let l = S::LANES;
    let [mut c00, mut c01, mut c10, mut c11, mut c20, mut c21, mut c30, mut c31] = c;
    for j in 0..n {
        // SAFETY: j < n; the caller guarantees the extents.
        unsafe {
            let v = vc.add(j * st);
            let v0 = s.load_ptr(v);
            let v1 = s.load_ptr(v.add(l));
            let p = s.splat(*pp.add(j));
            c00 = s.fma(p, v0, c00);
            c01 = s.fma(p, v1, c01);
            let p = s.splat(*pp.add(ld + j));
            c10 = s.fma(p, v0, c10);
            c11 = s.fma(p, v1, c11);
            let p = s.splat(*pp.add(2 * ld + j));
            c20 = s.fma(p, v0, c20);
            c21 = s.fma(p, v1, c21);
            let p = s.splat(*pp.add(3 * ld + j));
            c30 = s.fma(p, v0, c30);
            c31 = s.fma(p, v1, c31);
        }
    }
    [c00, c01, c10, c11, c20, c21, c30, c31]
}

/// Keys per tile of the blocked `probs · V` (a tile of packed V stays in L1
/// while every query block of the task uses it).
const PV_TILE: usize = 64;

/// Scratch of one task, reused over its heads.
struct Scratch {
    qs: Vec<f32>,
    sc: Vec<f32>,
    ob: Vec<f32>,
    eff: Vec<usize>,
    qbn: Vec<usize>,
}

/// One head of the packed path (4 or more query rows) for the task's rows
/// `i0 .. i0 + rows`: scores key block by key block over all query blocks
/// (packed K block in L1), full-row softmax, then `probs · V` key tile by
/// key tile (packed V tile in L1), accumulating in the same order as a plain
/// loop over keys.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_packed<S: Simd>(
    s: S,
    a: &Attn,
    kt_r: &[f32],
    vt_r: &[f32],
    b: usize,
    i0: usize,
    rows: usize,
    h: usize,
    sc_: &mut Scratch,
    out: &mut [f32],
    ldo: usize,
    oc: usize,
) {
    let d = a.head_dim;
    let l = S::LANES;
    let kvec = key_vectors(l);
    let w = kvec * l;
    let kv_pad = round_up(a.kv_len, w);
    let rp = round_up(rows, QB);
    let nqb = rp / QB;
    let r = a.kv_row(b);
    let Scratch {
        qs,
        sc,
        ob,
        eff,
        qbn,
    } = sc_;
    // Scaled queries (rounded to f32 as BART's `q_proj(x) * scaling`), zero pad rows.
    for q in 0..rp {
        let dst = &mut qs[q * d..(q + 1) * d];
        if q < rows {
            let src = a.q.at(b, i0 + q, h * d, d);
            for (x, &y) in dst.iter_mut().zip(src) {
                *x = y * a.scale;
            }
        } else {
            dst.fill(0.0);
        }
    }
    let lim = |q: usize| if q < rows { a.limit(i0 + q) } else { 0 };
    for (qb, n) in qbn.iter_mut().enumerate().take(nqb) {
        *n = (qb * QB..(qb + 1) * QB).map(lim).max().unwrap_or(0);
    }
    let jmax = qbn[..nqb].iter().copied().max().unwrap_or(0);
    let nblk = jmax.div_ceil(w);
    // Block `blk` of this head's packed K starts at (blk * H + h) * d * w.
    assert!(nblk == 0 || kt_r.len() >= ((nblk - 1) * a.heads + h + 1) * d * w);
    assert!(qs.len() >= rp * d && sc.len() >= rp * kv_pad);

    // Phase 1: scores.
    for blk in 0..nblk {
        for qb in 0..nqb {
            if blk * w >= qbn[qb] {
                continue;
            }
            let mut tile = [s.zero(); 16];
            // SAFETY: blk < nblk and qb < nqb: block `blk` of this head in kt_r
            // (d*w floats) and rows qb*QB .. qb*QB+QB of qs are in bounds
            // (asserted above).
            unsafe {
                let qp = qs.as_ptr().add(qb * QB * d);
                let kb = kt_r.as_ptr().add((blk * a.heads + h) * d * w);
                if kvec == 4 {
                    tile = qk_tile_4x4(s, qp, d, kb);
                } else {
                    tile[..8].copy_from_slice(&qk_tile_4x2(s, qp, d, kb));
                }
            }
            for q in 0..QB {
                let o = &mut sc[(qb * QB + q) * kv_pad + blk * w..][..w];
                for c in 0..kvec {
                    s.store(&mut o[c * l..], tile[q * kvec + c]);
                }
            }
        }
    }

    // Phase 2: bias, mask and softmax of each row.
    let bias_row = |i: usize| a.bias_row(h, i);
    let mask_row = a.key_mask.map(|m| &m[r * a.tcap..r * a.tcap + a.kv_len]);
    for (q, e) in eff.iter_mut().enumerate().take(rp) {
        *e = if q < rows {
            let row = &mut sc[q * kv_pad..(q + 1) * kv_pad];
            finalize_row(s, row, lim(q), a.kv_len, bias_row(i0 + q), mask_row)
        } else {
            0
        };
    }
    let mut nmax = 0;
    for qb in 0..nqb {
        let n = eff[qb * QB..(qb + 1) * QB]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        for q in qb * QB..(qb + 1) * QB {
            sc[q * kv_pad + eff[q]..q * kv_pad + n].fill(0.0);
        }
        qbn[qb] = n;
        nmax = nmax.max(n);
    }

    // Phase 3: probs · V.
    let ob = &mut ob[..rp * d];
    ob.fill(0.0);
    let nc = if l >= 16 { 4 } else { 2 };
    let cfull = d - d % (nc * l);
    // Tile t of this head's packed V starts at (t * H + h) * PV_TILE * d.
    let ntile = nmax.div_ceil(PV_TILE);
    assert!(ntile == 0 || vt_r.len() >= ((ntile - 1) * a.heads + h + 1) * PV_TILE * d);
    for jt in (0..nmax).step_by(PV_TILE) {
        let vt_t = &vt_r[((jt / PV_TILE) * a.heads + h) * PV_TILE * d..][..PV_TILE * d];
        for qb in 0..nqb {
            if jt >= qbn[qb] {
                continue;
            }
            let j1 = (jt + PV_TILE).min(qbn[qb]);
            let mut c = 0;
            while c < cfull {
                let mut tile = [s.zero(); 16];
                for q in 0..QB {
                    for k in 0..nc {
                        tile[q * nc + k] = s.load(&ob[(qb * QB + q) * d + c + k * l..]);
                    }
                }
                // SAFETY: the j1 - jt <= PV_TILE rows of the tile vt_t, columns
                // c .. c + nc*l <= d; p entries of rows qb*QB.. at j < j1 <= kv_pad.
                unsafe {
                    let vc = vt_t.as_ptr().add(c);
                    let pp = sc.as_ptr().add(qb * QB * kv_pad + jt);
                    if nc == 4 {
                        tile = pv_tile_4x4(s, vc, d, pp, kv_pad, j1 - jt, tile);
                    } else {
                        let mut t8 = [s.zero(); 8];
                        t8.copy_from_slice(&tile[..8]);
                        let t8 = pv_tile_4x2(s, vc, d, pp, kv_pad, j1 - jt, t8);
                        tile[..8].copy_from_slice(&t8);
                    }
                }
                for q in 0..QB {
                    for k in 0..nc {
                        s.store(&mut ob[(qb * QB + q) * d + c + k * l..], tile[q * nc + k]);
                    }
                }
                c += nc * l;
            }
            // Columns past the last full tile: one (partial) vector at a time.
            while c < d {
                let width = (d - c).min(l);
                for row in qb * QB..(qb + 1) * QB {
                    let o = row * d + c;
                    let mut acc = s.load_partial(&ob[o..o + width], 0.0);
                    for j in jt..j1 {
                        let t = (j - jt) * d + c;
                        let vv = s.load_partial(&vt_t[t..t + width], 0.0);
                        acc = s.fma(s.splat(sc[row * kv_pad + j]), vv, acc);
                    }
                    s.store_partial(&mut ob[o..o + width], acc);
                }
                c += width;
            }
        }
    }
    for q in 0..rows {
        out[q * ldo + oc..q * ldo + oc + d].copy_from_slice(&ob[q * d..(q + 1) * d]);
    }
}

/// Output rows `i0 .. i0 + rows` of batch row `b` for heads `h0 .. h1`: row
/// `ii`, head `h` goes to `out[ii * ldo + h * d - h0 * d ..][..d]`. `kt`/`vt`
/// are the packed K/V of all (kv row, head) pairs, or empty for the dot path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_rows_generic<S: Simd>(
    s: S,
    a: &Attn,
    kt: &[f32],
    vt: &[f32],
    b: usize,
    i0: usize,
    rows: usize,
    h0: usize,
    h1: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let (h_n, d) = (a.heads, a.head_dim);
    let col0 = h0 * d;
    let r = a.kv_row(b);
    let w = key_vectors(S::LANES) * S::LANES;
    let kv_pad = round_up(a.kv_len, w);
    if !kt.is_empty() {
        let rp = round_up(rows, QB);
        let mut scratch = Scratch {
            qs: vec![0.0; rp * d],
            sc: vec![0.0; rp * kv_pad],
            ob: vec![0.0; rp * d],
            eff: vec![0; rp],
            qbn: vec![0; rp / QB],
        };
        let hd = h_n * d;
        let kt_r = &kt[r * kv_pad * hd..(r + 1) * kv_pad * hd];
        let vr = round_up(a.kv_len, PV_TILE) * hd;
        let vt_r = &vt[r * vr..(r + 1) * vr];
        for h in h0..h1 {
            let oc = h * d - col0;
            head_packed(s, a, kt_r, vt_r, b, i0, rows, h, &mut scratch, out, ldo, oc);
        }
        return;
    }
    // decode steps take this path every layer: reuse the thread's buffer
    let mut buf = DOT_SCRATCH.with(|c| c.take());
    if buf.len() < kv_pad + d {
        buf = vec![0.0f32; kv_pad + d];
    }
    buf[..kv_pad + d].fill(0.0);
    let (sc, qs) = buf[..kv_pad + d].split_at_mut(kv_pad);
    let mask_row = a.key_mask.map(|m| &m[r * a.tcap..r * a.tcap + a.kv_len]);
    for h in h0..h1 {
        let oc = h * d - col0;
        for ii in 0..rows {
            let i = i0 + ii;
            let src = a.q.at(b, i, h * d, d);
            for (x, &y) in qs.iter_mut().zip(src) {
                *x = y * a.scale;
            }
            let lim = a.limit(i);
            qk_dot(s, a, qs, r, h, lim, sc);
            let bias = a.bias_row(h, i);
            let n = finalize_row(s, sc, lim, a.kv_len, bias, mask_row);
            pv_row(s, a, sc, n, r, h, &mut out[ii * ldo + oc..]);
        }
    }
    DOT_SCRATCH.with(|c| c.set(buf));
}

multiversion! {
    /// Output rows of one batch row for a range of heads (see
    /// `attention_rows_generic`), on this thread.
    pub fn attention_rows[attention_avx512, attention_avx2, attention_neon, attention_scalar](
        a: &Attn, kt: &[f32], vt: &[f32], b: usize, i0: usize, rows: usize, h0: usize,
        h1: usize, out: &mut [f32], ldo: usize
    ) => attention_rows_generic;
}

/// Packs K and V of every kv row that some batch row reads, block by block so
/// that the reads run along whole `[H*D]` rows:
/// K into `[kv row][block][head][d][w]` (keys past `kv_len` zero), V into
/// `[kv row][tile][head][PV_TILE][d]`.
fn pack_kv(a: &Attn, w: usize, parallel: bool, kt: &mut Vec<f32>, vt: &mut Vec<f32>) {
    let (h_n, d) = (a.heads, a.head_dim);
    let hd = h_n * d;
    let nblk = a.kv_len.div_ceil(w);
    let ntile = a.kv_len.div_ceil(PV_TILE);
    let bkv = (0..a.batch).map(|b| a.kv_row(b) + 1).max().unwrap_or(0);
    let mut used = vec![false; bkv];
    for b in 0..a.batch {
        used[a.kv_row(b)] = true;
    }
    // Reused buffers: no zero fill (pack_k zeroes the padding keys itself, and
    // V rows past kv_len are never read).
    let (kn, vn) = (bkv * nblk * hd * w, bkv * ntile * hd * PV_TILE);
    if kt.len() < kn {
        kt.resize(kn, 0.0);
    }
    if vt.len() < vn {
        vt.resize(vn, 0.0);
    }
    let (kt, vt) = (&mut kt[..kn], &mut vt[..vn]);
    // Block `blk` of kv row `r` of K: keys blk*w .. blk*w + w.
    let pack_k = |idx: usize, dst: &mut [f32]| {
        let (r, blk) = (idx / nblk, idx % nblk);
        if !used[r] {
            return;
        }
        assert!(dst.len() >= hd * w);
        let dp = dst.as_mut_ptr();
        // Head by head, so the 16 KB being written (d x w) stays in L1.
        let j0 = blk * w;
        if j0 + w > a.kv_len {
            // The last block: keys past kv_len score 0 (and are never used).
            for x in dst[..hd * w].iter_mut() {
                *x = 0.0;
            }
        }
        for h in 0..h_n {
            for j in j0..(j0 + w).min(a.kv_len) {
                let src = a.k.at(r, j, h * d, d);
                // Element dd goes to dst[(h*d + dd) * w + (j - j0)].
                let base = h * d * w + (j - j0);
                for (dd, &x) in src.iter().enumerate() {
                    // SAFETY: h*d + dd < H*d and j - j0 < w: the index is below
                    // H*d*w <= dst.len() (asserted).
                    unsafe { *dp.add(base + dd * w) = x };
                }
            }
        }
    };
    // Tile `t` of kv row `r` of V: keys t*PV_TILE .. + PV_TILE.
    let pack_v = |idx: usize, dst: &mut [f32]| {
        let (r, t) = (idx / ntile, idx % ntile);
        if !used[r] {
            return;
        }
        for j in t * PV_TILE..((t + 1) * PV_TILE).min(a.kv_len) {
            let row = a.v.at(r, j, 0, hd);
            for h in 0..h_n {
                let o = (h * PV_TILE + j - t * PV_TILE) * d;
                dst[o..o + d].copy_from_slice(&row[h * d..(h + 1) * d]);
            }
        }
    };
    let (kc, vc) = ((hd * w).max(1), (hd * PV_TILE).max(1));
    if parallel {
        rayon::join(
            || {
                kt.par_chunks_mut(kc)
                    .enumerate()
                    .for_each(|(i, c)| pack_k(i, c))
            },
            || {
                vt.par_chunks_mut(vc)
                    .enumerate()
                    .for_each(|(i, c)| pack_v(i, c))
            },
        );
    } else {
        kt.chunks_mut(kc)
            .enumerate()
            .for_each(|(i, c)| pack_k(i, c));
        vt.chunks_mut(vc)
            .enumerate()
            .for_each(|(i, c)| pack_v(i, c));
    }
}

thread_local! {
    /// Scores and scaled query of the dot path (decode steps), reused across
    /// calls; a nested call on the thread finds it empty and allocates its own.
    static DOT_SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Packed K/V buffers of the calling thread, reused across calls (they keep
    /// the largest size seen).
    static PACKED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The size [`attention`] compares with `par::PAR_MIN_ELEMS` to go parallel:
/// a quarter of its multiply-adds (q·k only), or for one query row per
/// sequence (decode) the K and V elements it reads: a decode step's
/// cross-attention over a long source is a memory stream (512 source tokens:
/// 2 MiB per layer) that two cores read faster than one.
pub fn par_size(a: &Attn) -> usize {
    let macs = a.batch * a.heads * a.tq * a.kv_len * a.head_dim / 4;
    if a.tq == 1 {
        macs.max(a.batch * a.kv_len * a.heads * a.head_dim * 2)
    } else {
        macs
    }
}

/// Attention into `out` (`[B, Tq, H*D]` contiguous), split over the rayon pool
/// when large enough: by (batch row, block of query rows), or, when that gives
/// too few tasks (a decode step of one sequence), by (batch row, head).
pub fn attention(isa: Isa, a: &Attn, out: &mut [f32]) {
    let isa = if simd::supported(isa) {
        isa
    } else {
        Isa::Scalar
    };
    if a.batch == 0 || a.tq == 0 || a.heads * a.head_dim == 0 {
        return;
    }
    let parallel = super::par::worth_parallel(par_size(a));
    if a.tq < PACK_MIN_TQ {
        return run(isa, a, &[], &[], parallel, out);
    }
    PACKED.with(|cell| {
        // A nested call on this thread (work stealing) gets fresh buffers.
        let mut fresh = (Vec::new(), Vec::new());
        let mut guard = cell.try_borrow_mut();
        let (kt, vt) = match guard.as_deref_mut() {
            Ok((k, v)) => (k, v),
            Err(_) => (&mut fresh.0, &mut fresh.1),
        };
        pack_kv(a, key_block(isa), parallel, kt, vt);
        run(isa, a, kt, vt, parallel, out);
    });
}

/// The parallel split of [`attention`] over packed (or no) K/V.
fn run(isa: Isa, a: &Attn, kt: &[f32], vt: &[f32], parallel: bool, out: &mut [f32]) {
    let (h_n, d) = (a.heads, a.head_dim);
    let hd = h_n * d;
    let threads = rayon::current_num_threads();
    if !parallel {
        // Blocks of at most 64 query rows keep the packed path's scratch in cache.
        let rows = if kt.is_empty() { a.tq } else { 64 };
        for (b, ob) in out.chunks_mut(a.tq * hd).enumerate() {
            for (blk, o) in ob.chunks_mut(rows * hd).enumerate() {
                let n = o.len() / hd;
                attention_rows(isa, a, kt, vt, b, blk * rows, n, 0, h_n, o, hd);
            }
        }
        return;
    }
    // Query rows per task: about 4 tasks per thread, a multiple of QB, at most 64.
    let blocks_per_b = (4 * threads).div_ceil(a.batch).max(1);
    let rows = round_up(a.tq.div_ceil(blocks_per_b), QB)
        .clamp(QB, 64)
        .min(a.tq);
    let row_tasks = a.batch * a.tq.div_ceil(rows);
    if row_tasks >= 2 * threads || h_n == 1 {
        out.par_chunks_mut(a.tq * hd)
            .enumerate()
            .for_each(|(b, ob)| {
                ob.par_chunks_mut(rows * hd)
                    .enumerate()
                    .for_each(|(blk, o)| {
                        let n = o.len() / hd;
                        attention_rows(isa, a, kt, vt, b, blk * rows, n, 0, h_n, o, hd)
                    });
            });
        return;
    }
    // Few rows: one task per (batch row, head), each into its own [Tq, D]
    // buffer, copied into place afterwards.
    let parts: Vec<Vec<f32>> = (0..a.batch * h_n)
        .into_par_iter()
        .map(|t| {
            let (b, h) = (t / h_n, t % h_n);
            let mut o = vec![0.0f32; a.tq * d];
            attention_rows(isa, a, kt, vt, b, 0, a.tq, h, h + 1, &mut o, d);
            o
        })
        .collect();
    for (t, part) in parts.iter().enumerate() {
        let (b, h) = (t / h_n, t % h_n);
        for (i, row) in part.chunks_exact(d).enumerate() {
            let o = (b * a.tq + i) * hd + h * d;
            out[o..o + d].copy_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::{compare, random_normal, random_vec, Tol};

    struct Case {
        name: &'static str,
        batch: usize,
        bkv: usize,
        tq: usize,
        tcap: usize,
        kv_len: usize,
        heads: usize,
        d: usize,
        scale: f32,
        causal: bool,
        q_offset: usize,
        mask: bool,
        bias: bool,
        kv_index: Option<Vec<u32>>,
    }

    fn base(name: &'static str) -> Case {
        Case {
            name,
            batch: 2,
            bkv: 2,
            tq: 7,
            tcap: 9,
            kv_len: 9,
            heads: 2,
            d: 64,
            scale: 0.125,
            causal: false,
            q_offset: 0,
            mask: false,
            bias: false,
            kv_index: None,
        }
    }

    fn run(c: &Case, seed: u64) {
        let hd = c.heads * c.d;
        let q = random_normal(seed, c.batch * c.tq * hd, 1.0);
        let k = random_normal(seed + 1, c.bkv * c.tcap * hd, 1.0);
        let v = random_normal(seed + 2, c.bkv * c.tcap * hd, 1.0);
        // Padding mask: the last `row` keys of kv row `row` are padding.
        let mask: Vec<f32> = (0..c.bkv * c.tcap)
            .map(|x| {
                let (r, j) = (x / c.tcap, x % c.tcap);
                if j + r >= c.kv_len && j > 0 {
                    f32::MIN
                } else {
                    0.0
                }
            })
            .collect();
        let bias = random_vec(seed + 3, c.heads * c.tq * c.kv_len);
        let a = Attn {
            batch: c.batch,
            tq: c.tq,
            heads: c.heads,
            head_dim: c.d,
            tcap: c.tcap,
            kv_len: c.kv_len,
            scale: c.scale,
            causal: c.causal,
            q_offset: c.q_offset,
            q: View3::contiguous(&q, c.tq, hd),
            k: View3::contiguous(&k, c.tcap, hd),
            v: View3::contiguous(&v, c.tcap, hd),
            key_mask: c.mask.then_some(&mask[..]),
            position_bias: c.bias.then_some(&bias[..]),
            relative_bias: None,
            kv_index: c.kv_index.as_deref(),
        };
        let mut want = vec![0.0f32; c.batch * c.tq * hd];
        attention_reference(&a, &mut want);
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        for isa in isa::available() {
            let mut got = vec![f32::NAN; c.batch * c.tq * hd];
            attention(isa, &a, &mut got);
            let what = format!(
                "attention {} {} (d {}, tq {})",
                c.name,
                isa.name(),
                c.d,
                c.tq
            );
            compare(&what, &got, &want, Tol::F32).unwrap();
        }
    }

    #[test]
    fn plain_and_odd_head_dims() {
        for (i, d) in [1usize, 3, 17, 31, 33, 64, 100].into_iter().enumerate() {
            for tq in [1usize, 3, 4, 9] {
                let c = Case {
                    d,
                    tq,
                    ..base("plain")
                };
                run(&c, 10 * i as u64 + tq as u64);
            }
        }
    }

    #[test]
    fn masks_bias_and_padding() {
        let c = Case {
            mask: true,
            ..base("mask")
        };
        run(&c, 1);
        let c = Case {
            bias: true,
            scale: 1.0,
            ..base("bias")
        };
        run(&c, 2);
        let c = Case {
            mask: true,
            bias: true,
            tq: 1,
            scale: 1.0,
            ..base("mask+bias decode")
        };
        run(&c, 3);
        let c = Case {
            mask: true,
            bias: true,
            tq: 33,
            kv_len: 33,
            tcap: 40,
            ..base("mask+bias")
        };
        run(&c, 4);
    }

    #[test]
    fn causal_with_offset_and_short_kv_len() {
        // Encoder-style causal self-attention.
        let c = Case {
            causal: true,
            tq: 17,
            tcap: 17,
            kv_len: 17,
            ..base("causal")
        };
        run(&c, 5);
        // Decoder with a cache larger than the keys used.
        let c = Case {
            causal: true,
            tq: 5,
            tcap: 20,
            kv_len: 12,
            q_offset: 7,
            ..base("causal offset")
        };
        run(&c, 6);
        // A decode step: one query at position kv_len - 1.
        let c = Case {
            causal: true,
            tq: 1,
            tcap: 32,
            kv_len: 13,
            q_offset: 12,
            ..base("decode")
        };
        run(&c, 7);
        let c = Case {
            causal: true,
            tq: 6,
            tcap: 9,
            kv_len: 9,
            q_offset: 0,
            mask: true,
            bias: true,
            ..base("causal mask bias")
        };
        run(&c, 8);
        // Several packed-V tiles and key blocks, the last ones partial.
        let c = Case {
            causal: true,
            tq: 9,
            tcap: 140,
            kv_len: 130,
            q_offset: 121,
            mask: true,
            bias: true,
            ..base("long cache")
        };
        run(&c, 12);
        let c = Case {
            tq: 13,
            tcap: 200,
            kv_len: 200,
            d: 40,
            mask: true,
            ..base("long non-causal")
        };
        run(&c, 13);
    }

    #[test]
    fn beams_share_kv_rows_through_kv_index() {
        let c = Case {
            batch: 6,
            bkv: 2,
            kv_index: Some(vec![0, 0, 0, 1, 1, 1]),
            mask: true,
            ..base("kv_index")
        };
        run(&c, 9);
        let c = Case {
            batch: 4,
            bkv: 3,
            tq: 1,
            kv_index: Some(vec![2, 0, 2, 1]),
            mask: true,
            ..base("kv_index decode")
        };
        run(&c, 10);
        // Packed path with kv rows that no query row reads.
        let c = Case {
            batch: 2,
            bkv: 4,
            kv_index: Some(vec![2, 2]),
            mask: true,
            ..base("kv_index unused rows")
        };
        run(&c, 11);
    }

    #[test]
    fn fully_masked_rows_are_uniform_over_kv_len() {
        // Row 1 of the batch has every key masked; with causal the allowed keys
        // are a prefix, and HF's row of f32::MIN gives the mean of all kv_len values.
        let (tq, kv, d) = (5, 6, 8);
        let q = random_normal(1, 2 * tq * d, 1.0);
        let k = random_normal(2, 2 * kv * d, 1.0);
        let v = random_normal(3, 2 * kv * d, 1.0);
        let mut mask = vec![0.0f32; 2 * kv];
        mask[kv..].fill(f32::MIN);
        for causal in [false, true] {
            let a = Attn {
                batch: 2,
                tq,
                heads: 1,
                head_dim: d,
                tcap: kv,
                kv_len: kv,
                scale: 1.0,
                causal,
                q_offset: 0,
                q: View3::contiguous(&q, tq, d),
                k: View3::contiguous(&k, kv, d),
                v: View3::contiguous(&v, kv, d),
                key_mask: Some(&mask),
                position_bias: None,
                relative_bias: None,
                kv_index: None,
            };
            let mut want = vec![0.0; 2 * tq * d];
            attention_reference(&a, &mut want);
            for c in 0..d {
                let mean: f32 = (0..kv).map(|j| v[(kv + j) * d + c]).sum::<f32>() / kv as f32;
                assert!((want[tq * d + c] - mean).abs() < 1e-5);
            }
            for isa in isa::available() {
                let mut got = vec![f32::NAN; 2 * tq * d];
                attention(isa, &a, &mut got);
                let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
                compare(
                    &format!("fully masked {} causal {causal}", isa.name()),
                    &got,
                    &w,
                    Tol::F32,
                )
                .unwrap();
            }
        }
    }

    #[test]
    fn one_sequence_splits_heads_over_threads() {
        // Few query rows and one batch row: the (batch row, head) split, on the
        // dot path (tq 1) and on the packed path (tq 5).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (tq, causal) in [(1usize, true), (5, false)] {
            let (h, d, tcap, kv) = (16, 64, 512, 500);
            let hd = h * d;
            let q = random_normal(30, tq * hd, 1.0);
            let k = random_normal(31, tcap * hd, 1.0);
            let v = random_normal(32, tcap * hd, 1.0);
            let mut mask = vec![0.0f32; tcap];
            mask[3] = f32::MIN;
            let bias = random_vec(33, h * tq * kv);
            let a = Attn {
                batch: 1,
                tq,
                heads: h,
                head_dim: d,
                tcap,
                kv_len: kv,
                scale: 1.0,
                causal,
                q_offset: kv - tq,
                q: View3::contiguous(&q, tq, hd),
                k: View3::contiguous(&k, tcap, hd),
                v: View3::contiguous(&v, tcap, hd),
                key_mask: Some(&mask),
                position_bias: Some(&bias),
                relative_bias: None,
                kv_index: None,
            };
            assert!(super::super::par::PAR_MIN_ELEMS < par_size(&a));
            let mut want = vec![0.0; tq * hd];
            attention_reference(&a, &mut want);
            let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
            for isa in isa::available() {
                let mut got = vec![f32::NAN; tq * hd];
                pool.install(|| attention(isa, &a, &mut got));
                let what = format!("head split {} tq {tq}", isa.name());
                compare(&what, &got, &want, Tol::F32).unwrap();
            }
        }
    }

    #[test]
    fn strided_views_and_threads() {
        // q/k/v as narrows of fused projections [B, T, 3*H*D], big enough to go parallel.
        let (b, t, h, d) = (2, 64, 4, 32);
        let hd = h * d;
        let fused = random_normal(20, b * t * 3 * hd, 1.0);
        let view = |part: usize| View3 {
            data: &fused[..],
            off: part * hd,
            sb: t * 3 * hd,
            st: 3 * hd,
        };
        let a = Attn {
            batch: b,
            tq: t,
            heads: h,
            head_dim: d,
            tcap: t,
            kv_len: t,
            scale: 1.0 / (d as f32).sqrt(),
            causal: true,
            q_offset: 0,
            q: view(0),
            k: view(1),
            v: view(2),
            key_mask: None,
            position_bias: None,
            relative_bias: None,
            kv_index: None,
        };
        let mut want = vec![0.0; b * t * hd];
        attention_reference(&a, &mut want);
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for isa in isa::available() {
            let mut got = vec![f32::NAN; b * t * hd];
            pool.install(|| attention(isa, &a, &mut got));
            compare(&format!("strided {}", isa.name()), &got, &want, Tol::F32).unwrap();
        }
    }

    /// T5's relative bias from the bucket table gives exactly the output of the
    /// materialised `[H, Tq, kv_len]` bias (the same f32 values added at the
    /// same point), on every ISA, for encoder (bidirectional) and decoder
    /// (causal, q_offset > 0) calls of odd sizes.
    #[test]
    fn relative_bias_equals_the_materialised_bias() {
        use encdec_core::backend::relative_position_bucket;
        // (tq, kv_len, tcap, q_offset, causal, bidirectional, heads, d, buckets, max distance)
        #[rustfmt::skip]
        type Case = (usize, usize, usize, usize, bool, bool, usize, usize, usize, usize);
        let cases: &[Case] = &[
            (7, 9, 9, 0, false, true, 2, 64, 32, 128),
            (13, 13, 13, 0, false, true, 3, 17, 8, 12),
            (1, 40, 48, 39, true, false, 3, 33, 32, 128),
            (1, 200, 203, 199, true, false, 2, 8, 16, 32),
            (5, 11, 11, 6, true, false, 4, 5, 6, 9),
            (9, 37, 40, 0, false, true, 2, 31, 64, 256),
            (3, 150, 150, 147, true, true, 1, 16, 10, 20),
            (6, 130, 130, 0, false, true, 2, 24, 32, 64),
            (4, 70, 70, 66, true, false, 2, 3, 2, 1),
        ];
        for (n, &(tq, kv_len, tcap, q_offset, causal, bi, heads, d, nb, md)) in
            cases.iter().enumerate()
        {
            let seed = 700 + 10 * n as u64;
            let (batch, hd) = (2, heads * d);
            let q = random_normal(seed, batch * tq * hd, 1.0);
            let k = random_normal(seed + 1, batch * tcap * hd, 1.0);
            let v = random_normal(seed + 2, batch * tcap * hd, 1.0);
            let table = random_normal(seed + 3, nb * heads, 2.0);
            let mask: Vec<f32> = (0..batch * tcap)
                .map(|x| {
                    if x % tcap == kv_len - 1 && x / tcap == 1 {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut dense = vec![0.0f32; heads * tq * kv_len];
            for i in 0..tq {
                for j in 0..kv_len {
                    let rel = j as i64 - (q_offset + i) as i64;
                    let bk = relative_position_bucket(rel, bi, nb, md);
                    for h in 0..heads {
                        dense[(h * tq + i) * kv_len + j] = table[bk * heads + h];
                    }
                }
            }
            let mut rows = Vec::new();
            relative_bias_rows(&table, heads, nb, md, bi, q_offset, tq, kv_len, &mut rows);
            for mask_on in [false, true] {
                let a = Attn {
                    batch,
                    tq,
                    heads,
                    head_dim: d,
                    tcap,
                    kv_len,
                    scale: 1.0,
                    causal,
                    q_offset,
                    q: View3::contiguous(&q, tq, hd),
                    k: View3::contiguous(&k, tcap, hd),
                    v: View3::contiguous(&v, tcap, hd),
                    key_mask: mask_on.then_some(&mask[..]),
                    position_bias: Some(&dense),
                    relative_bias: None,
                    kv_index: None,
                };
                let r = Attn {
                    position_bias: None,
                    relative_bias: Some(&rows),
                    ..a
                };
                let mut want = vec![0.0f32; batch * tq * hd];
                let mut got = vec![0.0f32; batch * tq * hd];
                attention_reference(&a, &mut want);
                attention_reference(&r, &mut got);
                assert_eq!(got, want, "reference, case {n}");
                for isa in isa::available() {
                    let mut want = vec![f32::NAN; batch * tq * hd];
                    let mut got = vec![f32::NAN; batch * tq * hd];
                    attention(isa, &a, &mut want);
                    attention(isa, &r, &mut got);
                    let (gb, wb): (Vec<u32>, Vec<u32>) = (
                        got.iter().map(|x| x.to_bits()).collect(),
                        want.iter().map(|x| x.to_bits()).collect(),
                    );
                    assert_eq!(gb, wb, "case {n} ({}), mask {mask_on}", isa.name());
                }
            }
        }
    }
}
