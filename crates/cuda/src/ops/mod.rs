//! Launchers, one file per `kernels/<family>.cu`: grid/block choice and the
//! argument list of each kernel. They take raw device addresses; the checks of
//! shapes, dtypes and devices happen before, in `backend.rs`.

pub(crate) mod attention;
pub(crate) mod copy;
pub(crate) mod elementwise;
pub(crate) mod embedding;
pub(crate) mod gemm;
pub(crate) mod norm;
pub(crate) mod softmax;
pub(crate) mod topk;

/// Threads of a one-block-per-row kernel for rows of `cols`: 256, or fewer
/// (a multiple of 32) for short rows.
pub(crate) fn row_threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 256) as u32
}
