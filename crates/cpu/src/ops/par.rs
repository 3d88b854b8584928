//! Row-parallel helpers: split work over whole rows with rayon when it is
//! large enough to pay for the task overhead, else run on the calling thread.
//!
//! They use the current rayon pool, so a caller's `pool.install` decides the
//! threads.

use rayon::prelude::*;

/// Elements below which an op runs on the calling thread.
pub const PAR_MIN_ELEMS: usize = 1 << 16;
/// Elements per parallel task (rounded to whole rows).
const TASK_ELEMS: usize = 1 << 14;

/// Rows per parallel task for rows of `cols` elements.
fn rows_per_task(cols: usize) -> usize {
    (TASK_ELEMS / cols.max(1)).max(1)
}

/// Whether `n` elements are worth splitting over threads.
pub fn worth_parallel(n: usize) -> bool {
    n > PAR_MIN_ELEMS && rayon::current_num_threads() > 1
}

/// `f(rows)` over chunks of whole rows of `x` (`cols` elements each).
pub fn rows_mut(x: &mut [f32], cols: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    if !worth_parallel(x.len()) || cols == 0 {
        return f(x);
    }
    let chunk = rows_per_task(cols) * cols;
    x.par_chunks_mut(chunk).for_each(f);
}

/// `f(x rows, out rows)` over chunks of whole rows; `x` and `out` have the same row count.
pub fn rows_in_out(
    x: &[f32],
    xcols: usize,
    out: &mut [f32],
    ocols: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    if !worth_parallel(x.len().max(out.len())) || xcols == 0 || ocols == 0 {
        return f(x, out);
    }
    let rows = rows_per_task(xcols.max(ocols));
    x.par_chunks(rows * xcols)
        .zip(out.par_chunks_mut(rows * ocols))
        .for_each(|(a, o)| f(a, o));
}

/// `f(a rows, b rows, out rows)` over chunks of whole rows, all of `cols` elements.
pub fn rows_2in_out(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    cols: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) {
    if !worth_parallel(out.len()) || cols == 0 {
        return f(a, b, out);
    }
    let n = rows_per_task(cols) * cols;
    a.par_chunks(n)
        .zip(b.par_chunks(n))
        .zip(out.par_chunks_mut(n))
        .for_each(|((a, b), o)| f(a, b, o));
}

/// `f(x rows, y rows)` with `y` written (e.g. a residual), all of `cols` elements.
pub fn rows_in_mut(x: &[f32], y: &mut [f32], cols: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    rows_in_out(x, cols, y, cols, f)
}

/// `f(x rows, residual rows, out rows)`: one input, two written, all of `cols` elements.
pub fn rows_in_mut_out(
    x: &[f32],
    r: &mut [f32],
    out: &mut [f32],
    cols: usize,
    f: impl Fn(&[f32], &mut [f32], &mut [f32]) + Sync,
) {
    if !worth_parallel(out.len()) || cols == 0 {
        return f(x, r, out);
    }
    let n = rows_per_task(cols) * cols;
    x.par_chunks(n)
        .zip(r.par_chunks_mut(n))
        .zip(out.par_chunks_mut(n))
        .for_each(|((x, r), o)| f(x, r, o));
}
