//! Row copies: KV-cache writes and dim-0 gathers (beam reordering).

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::par;

/// Where the rows of a `[B, T, C]` source lie in its slice: element strides
/// of the batch and time dims (C contiguous). A fused QKV projection's K or V
/// part is such a view (time stride 3C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrcRows {
    pub batch: usize,
    pub t: usize,
    pub batch_stride: usize,
    pub t_stride: usize,
}

impl SrcRows {
    /// A contiguous `[len / (t c), t, c]` source.
    pub fn contiguous(len: usize, t: usize, c: usize) -> Self {
        SrcRows {
            batch: len.checked_div(t * c).unwrap_or(0),
            t,
            batch_stride: t * c,
            t_stride: c,
        }
    }

    /// Elements of the source slice from its first row to the end of its last.
    pub fn span(&self, c: usize) -> usize {
        if self.batch * self.t * c == 0 {
            0
        } else {
            (self.batch - 1) * self.batch_stride + (self.t - 1) * self.t_stride + c
        }
    }
}

/// `dst[b, start + t, :] = src[b, t, :]` for src `[B, T, C]`, dst `[B, Tcap, C]`.
/// The caller checked `start + T <= Tcap` and the lengths.
pub fn write_rows<T: Copy + Send + Sync>(
    src: &[T],
    dst: &mut [T],
    t: usize,
    tcap: usize,
    c: usize,
    start: usize,
) {
    let rows = SrcRows::contiguous(src.len(), t, c);
    write_rows_strided(src, rows, dst, tcap, c, start);
}

/// [`write_rows`] from a source whose rows lie as `rows` says.
pub fn write_rows_strided<T: Copy + Send + Sync>(
    src: &[T],
    rows: SrcRows,
    dst: &mut [T],
    tcap: usize,
    c: usize,
    start: usize,
) {
    write_rows_with(src, rows, dst, tcap, c, start, |s, d| d.copy_from_slice(s));
}

/// [`write_rows`] of f32 rows into an f16 or bf16 cache, rounded as `cast`
/// rounds (the `half` slice conversion it uses), without a temporary.
pub fn write_rows_f32_to_half<H: Send>(
    src: &[f32],
    dst: &mut [H],
    t: usize,
    tcap: usize,
    c: usize,
    start: usize,
) where
    [H]: HalfFloatSliceExt,
{
    let rows = SrcRows::contiguous(src.len(), t, c);
    write_rows_f32_to_half_strided(src, rows, dst, tcap, c, start);
}

/// [`write_rows_f32_to_half`] from a source whose rows lie as `rows` says.
pub fn write_rows_f32_to_half_strided<H: Send>(
    src: &[f32],
    rows: SrcRows,
    dst: &mut [H],
    tcap: usize,
    c: usize,
    start: usize,
) where
    [H]: HalfFloatSliceExt,
{
    write_rows_with(src, rows, dst, tcap, c, start, |s, d| {
        d.convert_from_f32_slice(s)
    });
}

/// The row placement of the writes above; `put` fills rows of one batch
/// (all T at once when they are contiguous in the source).
fn write_rows_with<S: Sync, D: Send>(
    src: &[S],
    rows: SrcRows,
    dst: &mut [D],
    tcap: usize,
    c: usize,
    start: usize,
    put: impl Fn(&[S], &mut [D]) + Sync,
) {
    let SrcRows {
        batch,
        t,
        batch_stride,
        t_stride,
    } = rows;
    if batch * t * c == 0 {
        return;
    }
    let body = |(bi, d): (usize, &mut [D])| {
        let s0 = bi * batch_stride;
        if t_stride == c {
            put(&src[s0..s0 + t * c], &mut d[start * c..(start + t) * c]);
        } else {
            for ti in 0..t {
                let s = s0 + ti * t_stride;
                put(
                    &src[s..s + c],
                    &mut d[(start + ti) * c..(start + ti + 1) * c],
                );
            }
        }
    };
    if par::worth_parallel(batch * t * c) {
        dst.par_chunks_mut(tcap * c)
            .take(batch)
            .enumerate()
            .for_each(body);
    } else {
        dst.chunks_mut(tcap * c)
            .take(batch)
            .enumerate()
            .for_each(body);
    }
}

/// Plain element loops of [`write_rows`].
pub fn write_rows_reference<T: Copy>(
    src: &[T],
    dst: &mut [T],
    t: usize,
    tcap: usize,
    c: usize,
    start: usize,
) {
    let b = src.len().checked_div(t * c).unwrap_or(0);
    for bi in 0..b {
        for ti in 0..t {
            for ci in 0..c {
                dst[(bi * tcap + start + ti) * c + ci] = src[(bi * t + ti) * c + ci];
            }
        }
    }
}

/// `dst[i, ..] = src[index[i], ..]` with slices of `row` elements. The caller
/// checked every index.
pub fn index_select<T: Copy + Send + Sync>(src: &[T], row: usize, index: &[u32], dst: &mut [T]) {
    if row == 0 {
        return;
    }
    let body = |(d, &i): (&mut [T], &u32)| {
        let i = i as usize;
        d.copy_from_slice(&src[i * row..(i + 1) * row]);
    };
    if par::worth_parallel(dst.len()) {
        dst.par_chunks_mut(row).zip(index.par_iter()).for_each(body);
    } else {
        dst.chunks_mut(row).zip(index).for_each(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rows_and_index_select_match_loops() {
        let (b, t, tcap, c) = (3, 2, 7, 5);
        let src: Vec<u32> = (0..(b * t * c) as u32).collect();
        for start in [0, 3, 5] {
            let mut want = vec![9u32; b * tcap * c];
            write_rows_reference(&src, &mut want, t, tcap, c, start);
            let mut got = vec![9u32; b * tcap * c];
            write_rows(&src, &mut got, t, tcap, c, start);
            assert_eq!(got, want);
            // The same rows as the middle third of [B, T, 3C] rows (a fused
            // QKV projection's K part).
            let mut wide = vec![7u32; b * t * 3 * c];
            for (r, row) in src.chunks(c).enumerate() {
                wide[r * 3 * c + c..r * 3 * c + 2 * c].copy_from_slice(row);
            }
            let rows = SrcRows {
                batch: b,
                t,
                batch_stride: t * 3 * c,
                t_stride: 3 * c,
            };
            let mut got = vec![9u32; b * tcap * c];
            write_rows_strided(&wide[c..c + rows.span(c)], rows, &mut got, tcap, c, start);
            assert_eq!(got, want, "strided source");
        }
        let big: Vec<f32> = (0..300_000).map(|x| x as f32).collect();
        let mut dst = vec![0.0f32; 3 * 100_000];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| index_select(&big, 100_000, &[2, 0, 2], &mut dst));
        assert_eq!(dst[0], 200_000.0);
        assert_eq!(dst[100_000], 0.0);
        assert_eq!(dst[299_999], 299_999.0);
    }
}
