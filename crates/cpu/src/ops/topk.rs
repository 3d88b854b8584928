//! Row-wise top-k: the `k` largest entries of each row, largest first, ties
//! broken by the lower index (as a stable descending sort would).
//!
//! Small `k` (the usual case: beams x 2, top-k sampling) keeps a binary heap of
//! the best `k` seen so far and skips whole 64-element blocks whose SIMD max
//! does not beat the heap's worst entry, so a 250k vocab row costs about one
//! vectorised pass. Large `k` (top-p over the whole vocab) uses
//! `select_nth_unstable` and sorts the selected part. NaN entries are never
//! selected ahead of numbers (they rank lowest).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::{multiversion, Simd};

/// `(value, index)` ordered so that the *better* entry is *smaller*: larger
/// value first, then lower index. A max-heap of these keeps the worst on top.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry(f32, u32);

impl Eq for Entry {}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        better(self, o)
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// `Less` if `a` ranks before `b`.
fn better(a: &Entry, b: &Entry) -> Ordering {
    // NaN ranks below every number; NaNs among themselves by index.
    match (a.0.is_nan(), b.0.is_nan()) {
        (false, false) => {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        }
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (true, true) => a.1.cmp(&b.1),
    }
}

// ---- reference -------------------------------------------------------------

/// Full stable sort of each row: `(indices, values)`, `rows * k` each.
pub fn topk_reference(x: &[f32], cols: usize, k: usize) -> (Vec<u32>, Vec<f32>) {
    let k = k.min(cols);
    let mut idx = Vec::new();
    let mut val = Vec::new();
    for row in x.chunks_exact(cols.max(1)) {
        let mut e: Vec<Entry> = row
            .iter()
            .enumerate()
            .map(|(i, &v)| Entry(v, i as u32))
            .collect();
        e.sort_by(better);
        for en in &e[..k] {
            idx.push(en.1);
            val.push(en.0);
        }
    }
    (idx, val)
}

// ---- generic kernel --------------------------------------------------------

const BLOCK: usize = 64;

/// Heap top-k of one row into `idx`/`val` (length k <= row.len()).
#[inline(always)]
fn topk_heap_generic<S: Simd>(s: S, row: &[f32], idx: &mut [u32], val: &mut [f32]) {
    let k = idx.len();
    let l = S::LANES;
    let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(k + 1);
    // Fill with the first k entries.
    for (i, &v) in row[..k].iter().enumerate() {
        heap.push(Entry(v, i as u32));
    }
    let mut thr = heap.peek().map_or(f32::NEG_INFINITY, |e| e.0);
    let mut thr_nan = thr.is_nan();
    let mut start = k;
    // Scalar up to a block boundary, then whole blocks with a SIMD max filter.
    let consider = |i: usize, v: f32, heap: &mut BinaryHeap<Entry>| {
        let e = Entry(v, i as u32);
        // Later indices lose ties, so only strictly better values enter.
        if heap.peek().is_some_and(|w| better(&e, w) == Ordering::Less) {
            heap.pop();
            heap.push(e);
            true
        } else {
            false
        }
    };
    let aligned = start.next_multiple_of(BLOCK).min(row.len());
    for (i, &v) in row.iter().enumerate().take(aligned).skip(start) {
        consider(i, v, &mut heap);
    }
    start = aligned;
    if let Some(w) = heap.peek() {
        thr = w.0;
        thr_nan = thr.is_nan();
    }
    let blocks = row[start..].chunks_exact(BLOCK);
    let tail_start = start + blocks.len() * BLOCK;
    for (bi, blk) in blocks.enumerate() {
        if !thr_nan {
            let mut m = s.splat(f32::NEG_INFINITY);
            for c in blk.chunks_exact(l) {
                m = s.max(m, s.load(c));
            }
            // NaN values rank lowest, so a block of only NaN and values <= thr is skipped.
            if s.reduce_max(m) <= thr {
                continue;
            }
        }
        let base = start + bi * BLOCK;
        let mut changed = false;
        for (j, &v) in blk.iter().enumerate() {
            changed |= consider(base + j, v, &mut heap);
        }
        if changed {
            if let Some(w) = heap.peek() {
                thr = w.0;
                thr_nan = thr.is_nan();
            }
        }
    }
    for (i, &v) in row.iter().enumerate().skip(tail_start) {
        consider(i, v, &mut heap);
    }
    let sorted = heap.into_sorted_vec();
    for (t, e) in sorted.iter().enumerate() {
        idx[t] = e.1;
        val[t] = e.0;
    }
}

multiversion! {
    /// Heap top-k of one row (`k = idx.len()`), on this thread.
    pub fn topk_heap[topk_heap_avx512, topk_heap_avx2, topk_heap_neon, topk_heap_scalar](
        row: &[f32], idx: &mut [u32], val: &mut [f32]
    ) => topk_heap_generic;
}

/// Selection top-k of one row for large `k`.
fn topk_select(row: &[f32], idx: &mut [u32], val: &mut [f32]) {
    let k = idx.len();
    let mut e: Vec<Entry> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| Entry(v, i as u32))
        .collect();
    if k < e.len() {
        e.select_nth_unstable_by(k, better);
        e.truncate(k);
    }
    e.sort_unstable_by(better);
    for (t, en) in e.iter().enumerate() {
        idx[t] = en.1;
        val[t] = en.0;
    }
}

/// Top-k of each row of `cols` elements: `(indices, values)`, `rows * min(k, cols)`
/// each. Rows run in parallel when there is enough work.
pub fn topk(isa: Isa, x: &[f32], cols: usize, k: usize) -> (Vec<u32>, Vec<f32>) {
    let k = k.min(cols);
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let mut idx = vec![0u32; rows * k];
    let mut val = vec![0.0f32; rows * k];
    if k == 0 {
        return (idx, val);
    }
    let one = |row: &[f32], i: &mut [u32], v: &mut [f32]| {
        if k * 16 <= cols {
            topk_heap(isa, row, i, v)
        } else {
            topk_select(row, i, v)
        }
    };
    if super::par::worth_parallel(x.len()) && rows > 1 {
        x.par_chunks(cols)
            .zip(idx.par_chunks_mut(k))
            .zip(val.par_chunks_mut(k))
            .for_each(|((r, i), v)| one(r, i, v));
    } else {
        for ((r, i), v) in x.chunks(cols).zip(idx.chunks_mut(k)).zip(val.chunks_mut(k)) {
            one(r, i, v);
        }
    }
    (idx, val)
}

/// Insert `(v, i)` into the sorted best-first list `idx`/`val` holding `*n`
/// entries (at most `idx.len()`): it enters when the list has room or it
/// ranks before the last entry, which then drops out.
#[inline(always)]
fn insert_sorted(idx: &mut [u32], val: &mut [f32], n: &mut usize, i: u32, v: f32) {
    let k = idx.len();
    let e = Entry(v, i);
    let mut pos = if *n < k {
        *n += 1;
        *n - 1
    } else if better(&e, &Entry(val[k - 1], idx[k - 1])) == Ordering::Less {
        k - 1
    } else {
        return;
    };
    while pos > 0 && better(&e, &Entry(val[pos - 1], idx[pos - 1])) == Ordering::Less {
        val[pos] = val[pos - 1];
        idx[pos] = idx[pos - 1];
        pos -= 1;
    }
    val[pos] = v;
    idx[pos] = i;
}

/// Top-k of one row straight into `idx`/`val` (`k = idx.len() <= row.len()`),
/// by insertion into the output itself, skipping 64-entry blocks whose SIMD
/// max does not beat the k-th best: no allocation (search on the backend
/// runs it every decode step). For small k (the cost is O(row * k) worst case).
#[inline(always)]
fn topk_insert_generic<S: Simd>(s: S, row: &[f32], idx: &mut [u32], val: &mut [f32]) {
    let k = idx.len();
    if k == 0 {
        return;
    }
    let l = S::LANES;
    let mut n = 0usize;
    let aligned = k.next_multiple_of(BLOCK).min(row.len());
    for (i, &v) in row.iter().enumerate().take(aligned) {
        insert_sorted(idx, val, &mut n, i as u32, v);
    }
    let blocks = row[aligned..].chunks_exact(BLOCK);
    let tail_start = aligned + blocks.len() * BLOCK;
    for (bi, blk) in blocks.enumerate() {
        let thr = val[k - 1];
        if n == k && !thr.is_nan() {
            let mut m = s.splat(f32::NEG_INFINITY);
            for c in blk.chunks_exact(l) {
                m = s.max(m, s.load(c));
            }
            // NaN values rank lowest, so a block of only NaN and values <= thr is skipped.
            if s.reduce_max(m) <= thr {
                continue;
            }
        }
        let base = aligned + bi * BLOCK;
        for (j, &v) in blk.iter().enumerate() {
            insert_sorted(idx, val, &mut n, (base + j) as u32, v);
        }
    }
    for (i, &v) in row.iter().enumerate().skip(tail_start) {
        insert_sorted(idx, val, &mut n, i as u32, v);
    }
}

multiversion! {
    /// Insertion top-k of one row (`k = idx.len()`), on this thread, allocation-free.
    pub fn topk_insert[topk_insert_avx512, topk_insert_avx2, topk_insert_neon, topk_insert_scalar](
        row: &[f32], idx: &mut [u32], val: &mut [f32]
    ) => topk_insert_generic;
}

/// Largest k [`topk_into`] serves by insertion; larger k goes through [`topk`].
pub const INSERT_MAX_K: usize = 64;

/// Top-k (`k <= INSERT_MAX_K`, `k <= cols`) of each row of `cols` elements into
/// `idx`/`val` (`rows * k` each), on this thread, without allocating.
pub fn topk_into(isa: Isa, x: &[f32], cols: usize, idx: &mut [u32], val: &mut [f32]) {
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let k = idx.len().checked_div(rows).unwrap_or(0);
    if k == 0 {
        return;
    }
    for ((r, i), v) in x.chunks(cols).zip(idx.chunks_mut(k)).zip(val.chunks_mut(k)) {
        topk_insert(isa, r, i, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::random_normal;

    #[test]
    fn topk_matches_a_full_sort_on_every_isa() {
        for isa in isa::available() {
            for (ci, &cols) in [1usize, 3, 17, 31, 33, 100, 257, 1000, 32128]
                .iter()
                .enumerate()
            {
                for k in [1usize, 2, 5, 8, 50, cols / 2, cols, cols + 3] {
                    let rows = 3;
                    let mut x = random_normal(ci as u64 * 31 + k as u64, rows * cols, 2.0);
                    // Ties: quantise so that equal values are common.
                    if ci % 2 == 0 {
                        for v in &mut x {
                            *v = (*v * 4.0).round();
                        }
                    }
                    let (wi, wv) = topk_reference(&x, cols, k);
                    let (gi, gv) = topk(isa, &x, cols, k);
                    assert_eq!(gi, wi, "{} cols {cols} k {k}", isa.name());
                    assert_eq!(gv, wv, "{} cols {cols} k {k}", isa.name());
                }
            }
        }
    }

    #[test]
    fn topk_into_matches_a_full_sort_on_every_isa() {
        for isa in isa::available() {
            for (ci, &cols) in [1usize, 3, 17, 64, 65, 100, 257, 1000, 32128]
                .iter()
                .enumerate()
            {
                for k in [1usize, 2, 5, 8, 16, 50, 64] {
                    if k > cols {
                        continue;
                    }
                    let rows = 3;
                    let mut x = random_normal(ci as u64 * 17 + k as u64, rows * cols, 2.0);
                    if ci % 2 == 0 {
                        for v in &mut x {
                            *v = (*v * 4.0).round();
                        }
                    }
                    if cols > 70 {
                        x[3] = f32::NAN;
                        x[66] = f32::NAN;
                    }
                    let (wi, wv) = topk_reference(&x, cols, k);
                    let mut gi = vec![u32::MAX; rows * k];
                    let mut gv = vec![f32::NAN; rows * k];
                    topk_into(isa, &x, cols, &mut gi, &mut gv);
                    assert_eq!(gi, wi, "{} cols {cols} k {k}", isa.name());
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&gv), bits(&wv), "{} cols {cols} k {k}", isa.name());
                }
            }
        }
    }

    #[test]
    fn ties_prefer_the_lower_index_and_nan_ranks_last() {
        for isa in isa::available() {
            let mut x = vec![0.0f32; 300];
            x[250] = 5.0;
            x[10] = 5.0;
            x[100] = f32::NAN;
            x[7] = 3.0;
            let (i, v) = topk(isa, &x, 300, 4);
            assert_eq!(i, vec![10, 250, 7, 0]);
            assert_eq!(v, vec![5.0, 5.0, 3.0, 0.0]);
            let (i, _) = topk(isa, &x, 300, 300);
            assert_eq!(i[299], 100);
            // Masked logits (-inf) and a row of all f32::MIN.
            let y = vec![f32::NEG_INFINITY; 100];
            let (i, _) = topk(isa, &y, 100, 3);
            assert_eq!(i, vec![0, 1, 2]);
        }
    }

    #[test]
    fn big_batches_go_parallel() {
        let (rows, cols) = (8, 32128);
        let x = random_normal(5, rows * cols, 1.0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let got = pool.install(|| topk(isa::active(), &x, cols, 8));
        assert_eq!(got, topk_reference(&x, cols, 8));
    }
}
