//! Launchers of `kernels/norm.cu`.

use encdec_core::{NormKind, Result};

use crate::launch::{kargs, Dev};
use crate::module::Family;

const F: Family = Family::Norm;

/// `out = norm(x)` over rows of `cols`; `b` is 0 for no bias (layer norm only).
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm(
    dev: &Dev,
    kind: NormKind,
    x: u64,
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
    let (grid, t, c) = (
        (rows as u32, 1, 1),
        crate::ops::row_threads(cols),
        cols as i64,
    );
    match kind {
        NormKind::LayerNorm => dev.launch(
            F,
            "layer_norm_f32",
            grid,
            t,
            0,
            &mut kargs![x, w, b, out, c, eps],
        ),
        NormKind::RmsNorm => dev.launch(
            F,
            "rms_norm_f32",
            grid,
            t,
            0,
            &mut kargs![x, w, out, c, eps],
        ),
    }
}

/// `residual += x; out = norm(residual)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_norm(
    dev: &Dev,
    kind: NormKind,
    x: u64,
    residual: u64,
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
    let (grid, t, c) = (
        (rows as u32, 1, 1),
        crate::ops::row_threads(cols),
        cols as i64,
    );
    match kind {
        NormKind::LayerNorm => dev.launch(
            F,
            "add_layer_norm_f32",
            grid,
            t,
            0,
            &mut kargs![x, residual, w, b, out, c, eps],
        ),
        NormKind::RmsNorm => dev.launch(
            F,
            "add_rms_norm_f32",
            grid,
            t,
            0,
            &mut kargs![x, residual, w, out, c, eps],
        ),
    }
}
