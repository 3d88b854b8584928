//! Row copies: KV-cache writes and dim-0 gathers (beam reordering).

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::par;

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
    write_rows_with(src, dst, t, tcap, c, start, |s, d| d.copy_from_slice(s));
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
    write_rows_with(src, dst, t, tcap, c, start, |s, d| {
        d.convert_from_f32_slice(s)
    });
}

/// The row placement of the writes above; `put` fills one batch's rows.
fn write_rows_with<S: Sync, D: Send>(
    src: &[S],
    dst: &mut [D],
    t: usize,
    tcap: usize,
    c: usize,
    start: usize,
    put: impl Fn(&[S], &mut [D]) + Sync,
) {
    if t * c == 0 {
        return;
    }
    let body = |(s, d): (&[S], &mut [D])| put(s, &mut d[start * c..(start + t) * c]);
    if par::worth_parallel(src.len()) {
        src.par_chunks(t * c)
            .zip(dst.par_chunks_mut(tcap * c))
            .for_each(body);
    } else {
        src.chunks(t * c)
            .zip(dst.chunks_mut(tcap * c))
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
