//! Launchers of `kernels/embedding.cu`.

use encdec_core::Result;

use crate::launch::{kargs, Dev};
use crate::module::Family;
use crate::ops::gemm::WeightPtr;

/// `out[i, :] = table[ids[i], :] * scale` for `n_ids` ids and rows of `cols`.
pub(crate) fn embedding(
    dev: &Dev,
    ids: u64,
    table: WeightPtr,
    out: u64,
    n_ids: usize,
    cols: usize,
    scale: f32,
) -> Result<()> {
    if n_ids == 0 || cols == 0 {
        return Ok(());
    }
    let grid = (n_ids as u32, 1, 1);
    let threads = crate::ops::row_threads(cols);
    let c = cols as i64;
    let f = Family::Embedding;
    match table {
        WeightPtr::F32(p) => dev.launch(
            f,
            "embedding_f32",
            grid,
            threads,
            0,
            &mut kargs![ids, p, out, c, scale],
        ),
        WeightPtr::F16(p) => dev.launch(
            f,
            "embedding_f16",
            grid,
            threads,
            0,
            &mut kargs![ids, p, out, c, scale],
        ),
        WeightPtr::BF16(p) => dev.launch(
            f,
            "embedding_bf16",
            grid,
            threads,
            0,
            &mut kargs![ids, p, out, c, scale],
        ),
        WeightPtr::I8 { data, scales } => dev.launch(
            f,
            "embedding_i8",
            grid,
            threads,
            0,
            &mut kargs![ids, data, scales, out, c, scale],
        ),
    }
}
