//! Launchers of `kernels/norm.cu`.

use std::ffi::c_void;

use encdec_core::{DType, Error, NormKind, Result};

use crate::launch::{kargs, Dev};
use crate::module::Family;

/// `out = norm(x)` over rows of `cols`; with `residual`, the fused
/// `residual += x; out = norm(residual)`. `b` is 0 for no bias (layer norm only).
/// `out` is f32, or f16/bf16 (`out_dtype`: each result rounded).
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm(
    dev: &Dev,
    kind: NormKind,
    x: u64,
    residual: Option<u64>,
    w: u64,
    b: u64,
    out: u64,
    out_dtype: DType,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    // Kernel names by output dtype: f32, f16, bf16.
    let pick = |names: [&'static str; 3]| match out_dtype {
        DType::F32 => Ok(names[0]),
        DType::F16 => Ok(names[1]),
        DType::BF16 => Ok(names[2]),
        other => Err(Error::Invalid(format!(
            "norm: out must be f32, f16 or bf16, got {other}"
        ))),
    };
    let name = match (kind, residual.is_some()) {
        (NormKind::LayerNorm, false) => pick([
            "layer_norm_f32",
            "layer_norm_f32_to_f16",
            "layer_norm_f32_to_bf16",
        ])?,
        (NormKind::RmsNorm, false) => pick([
            "rms_norm_f32",
            "rms_norm_f32_to_f16",
            "rms_norm_f32_to_bf16",
        ])?,
        (NormKind::LayerNorm, true) => pick([
            "add_layer_norm_f32",
            "add_layer_norm_f32_to_f16",
            "add_layer_norm_f32_to_bf16",
        ])?,
        (NormKind::RmsNorm, true) => pick([
            "add_rms_norm_f32",
            "add_rms_norm_f32_to_f16",
            "add_rms_norm_f32_to_bf16",
        ])?,
    };
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    // Every norm kernel runs one block per row.
    let launch = |args: &mut [*mut c_void]| {
        let threads = crate::ops::row_threads(cols);
        dev.launch(Family::Norm, name, (rows as u32, 1, 1), threads, 0, args)
    };
    let c = cols as i64;
    match (kind, residual) {
        (NormKind::LayerNorm, None) => launch(&mut kargs![x, w, b, out, c, eps]),
        (NormKind::RmsNorm, None) => launch(&mut kargs![x, w, out, c, eps]),
        (NormKind::LayerNorm, Some(r)) => launch(&mut kargs![x, r, w, b, out, c, eps]),
        (NormKind::RmsNorm, Some(r)) => launch(&mut kargs![x, r, w, out, c, eps]),
    }
}
