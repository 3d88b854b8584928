//! Launchers of `kernels/norm.cu`.

use std::ffi::c_void;

use encdec_core::{NormKind, Result};

use crate::launch::{kargs, Dev};
use crate::module::Family;

/// `out = norm(x)` over rows of `cols`; with `residual`, the fused
/// `residual += x; out = norm(residual)`. `b` is 0 for no bias (layer norm only).
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm(
    dev: &Dev,
    kind: NormKind,
    x: u64,
    residual: Option<u64>,
    w: u64,
    b: u64,
    out: u64,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    // Every norm kernel runs one block per row.
    let launch = |name, args: &mut [*mut c_void]| {
        let threads = crate::ops::row_threads(cols);
        dev.launch(Family::Norm, name, (rows as u32, 1, 1), threads, 0, args)
    };
    let c = cols as i64;
    match (kind, residual) {
        (NormKind::LayerNorm, None) => launch("layer_norm_f32", &mut kargs![x, w, b, out, c, eps]),
        (NormKind::RmsNorm, None) => launch("rms_norm_f32", &mut kargs![x, w, out, c, eps]),
        (NormKind::LayerNorm, Some(r)) => {
            launch("add_layer_norm_f32", &mut kargs![x, r, w, b, out, c, eps])
        }
        (NormKind::RmsNorm, Some(r)) => {
            launch("add_rms_norm_f32", &mut kargs![x, r, w, out, c, eps])
        }
    }
}
