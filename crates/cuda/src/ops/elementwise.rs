//! Launchers of `kernels/elementwise.cu`.

use encdec_core::{Activation, DType, Error, Result};

use crate::launch::{grid_for, kargs, Dev};
use crate::module::Family;

const F: Family = Family::Elementwise;
const THREADS: u32 = 256;

fn pointwise(
    dev: &Dev,
    name: &'static str,
    n: usize,
    args: &mut [*mut std::ffi::c_void],
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    dev.launch(F, name, (grid_for(n, THREADS), 1, 1), THREADS, 0, args)
}

/// `x[i] += y[i % ylen]` (ylen = n or the row length).
pub(crate) fn add_assign(dev: &Dev, x: u64, y: u64, n: usize, ylen: usize) -> Result<()> {
    pointwise(
        dev,
        "add_assign_f32",
        n,
        &mut kargs![x, y, n as i64, ylen as i64],
    )
}

/// `x[i] *= y[i % ylen]`.
pub(crate) fn mul_assign(dev: &Dev, x: u64, y: u64, n: usize, ylen: usize) -> Result<()> {
    pointwise(
        dev,
        "mul_assign_f32",
        n,
        &mut kargs![x, y, n as i64, ylen as i64],
    )
}

/// `x[i] *= s`.
pub(crate) fn scale(dev: &Dev, x: u64, n: usize, s: f32) -> Result<()> {
    pointwise(dev, "scale_f32", n, &mut kargs![x, n as i64, s])
}

/// `x[idx[j]] = value` for `n_idx` u32 positions at `idx`.
pub(crate) fn scatter_fill(dev: &Dev, x: u64, idx: u64, n_idx: usize, value: f32) -> Result<()> {
    pointwise(
        dev,
        "scatter_fill_f32",
        n_idx,
        &mut kargs![x, idx, n_idx as i64, value],
    )
}

pub(crate) fn repetition_penalty(
    dev: &Dev,
    x: u64,
    idx: u64,
    n_idx: usize,
    penalty: f32,
) -> Result<()> {
    pointwise(
        dev,
        "repetition_penalty_f32",
        n_idx,
        &mut kargs![x, idx, n_idx as i64, penalty],
    )
}

/// The activation code of `kernels/elementwise.cu`.
pub(crate) fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Relu => 0,
        Activation::Gelu => 1,
        Activation::GeluTanh => 2,
        Activation::Silu => 3,
        Activation::Identity => 4,
    }
}

pub(crate) fn activation(dev: &Dev, x: u64, n: usize, act: Activation) -> Result<()> {
    if act == Activation::Identity {
        return Ok(());
    }
    pointwise(
        dev,
        "activation_f32",
        n,
        &mut kargs![x, n as i64, act_code(act)],
    )
}

pub(crate) fn gated_activation(
    dev: &Dev,
    gate: u64,
    up: u64,
    out: u64,
    n: usize,
    act: Activation,
) -> Result<()> {
    pointwise(
        dev,
        "gated_activation_f32",
        n,
        &mut kargs![gate, up, out, n as i64, act_code(act)],
    )
}

/// Float to float conversion of `n` contiguous elements (`from != to`).
pub(crate) fn cast(dev: &Dev, from: DType, to: DType, src: u64, dst: u64, n: usize) -> Result<()> {
    let name = match (from, to) {
        (DType::F32, DType::F16) => "cast_f32_f16",
        (DType::F32, DType::BF16) => "cast_f32_bf16",
        (DType::F16, DType::F32) => "cast_f16_f32",
        (DType::BF16, DType::F32) => "cast_bf16_f32",
        (DType::F16, DType::BF16) => "cast_f16_bf16",
        (DType::BF16, DType::F16) => "cast_bf16_f16",
        _ => {
            return Err(Error::Invalid(format!(
                "cast: no kernel converts {from} to {to}"
            )))
        }
    };
    pointwise(dev, name, n, &mut kargs![src, dst, n as i64])
}

/// int8 rows of `cols` times their scales, into f32/f16/bf16.
pub(crate) fn dequantize(
    dev: &Dev,
    to: DType,
    q: u64,
    scales: u64,
    dst: u64,
    n: usize,
    cols: usize,
) -> Result<()> {
    let name = match to {
        DType::F32 => "dequantize_i8_f32",
        DType::F16 => "dequantize_i8_f16",
        DType::BF16 => "dequantize_i8_bf16",
        _ => return Err(Error::Invalid(format!("cast: int8 cannot become {to}"))),
    };
    pointwise(
        dev,
        name,
        n,
        &mut kargs![q, scales, dst, n as i64, cols.max(1) as i64],
    )
}

/// Per-row int8 quantisation of `rows` rows of `cols` (one block per row).
pub(crate) fn quantize(
    dev: &Dev,
    from: DType,
    src: u64,
    q: u64,
    scales: u64,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let name = match from {
        DType::F32 => "quantize_i8_f32",
        DType::F16 => "quantize_i8_f16",
        DType::BF16 => "quantize_i8_bf16",
        _ => return Err(Error::Invalid(format!("cast: {from} cannot become int8"))),
    };
    if rows == 0 {
        return Ok(());
    }
    dev.launch(
        F,
        name,
        (rows as u32, 1, 1),
        THREADS,
        0,
        &mut kargs![src, q, scales, cols as i64],
    )
}
