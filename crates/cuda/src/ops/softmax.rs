//! Launchers of `kernels/softmax.cu`.

use encdec_core::Result;

use crate::launch::{kargs, Dev};
use crate::module::Family;

/// Row-wise softmax (or log-softmax) of `rows` rows of `cols`, in place.
pub(crate) fn softmax(dev: &Dev, x: u64, rows: usize, cols: usize, log: bool) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let name = if log {
        "log_softmax_f32"
    } else {
        "softmax_f32"
    };
    dev.launch(
        Family::Softmax,
        name,
        (rows as u32, 1, 1),
        crate::ops::row_threads(cols),
        0,
        &mut kargs![x, cols as i64],
    )
}

/// `out[r] = (max, sum(exp(x - max)))` of `rows` rows of `cols` at `x`.
pub(crate) fn softmax_stats(dev: &Dev, x: u64, rows: usize, cols: usize, out: u64) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    dev.launch(
        Family::Softmax,
        "softmax_stats_f32",
        (rows as u32, 1, 1),
        crate::ops::row_threads(cols),
        0,
        &mut kargs![x, cols as i64, out],
    )
}
