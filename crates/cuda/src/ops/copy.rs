//! Launchers of `kernels/copy.cu`.

use encdec_core::{DType, Error, Result, Tensor};

use crate::launch::{grid_for, kargs, Dev, KArg};
use crate::module::Family;

const F: Family = Family::Copy;
const THREADS: u32 = 256;

fn by_size(op: &str, base: &'static [&'static str; 3], esize: usize) -> Result<&'static str> {
    match esize {
        1 => Ok(base[0]),
        2 => Ok(base[1]),
        4 => Ok(base[2]),
        _ => Err(Error::Invalid(format!(
            "{op}: no copy kernel for {esize}-byte elements"
        ))),
    }
}

/// `dst[b, start + t, :] = src[b, t, :]` for src of dtype `sd` (rows of `c`
/// contiguous elements, batch and time element strides `src_strides`) and dst
/// of dtype `dd`: the same dtype (bits), or f32 into f16/bf16 (rounded as `cast`);
/// with `start_at` (a u32 on the device, or 0) the kernel reads `start` there.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_rows(
    dev: &Dev,
    sd: DType,
    dd: DType,
    src: u64,
    dst: u64,
    batch: usize,
    t: usize,
    tcap: usize,
    c: usize,
    src_strides: [usize; 2],
    start: usize,
    start_at: u64,
) -> Result<()> {
    let name = match (sd, dd) {
        (DType::F32, DType::F16) => "write_rows_f32_to_f16",
        (DType::F32, DType::BF16) => "write_rows_f32_to_bf16",
        _ if sd != dd => {
            return Err(Error::DTypeMismatch {
                op: "write_rows",
                lhs: sd,
                rhs: dd,
            })
        }
        _ => match sd.size_in_bytes() {
            2 => "write_rows_b2",
            4 => "write_rows_b4",
            es => {
                return Err(Error::Invalid(format!(
                    "write_rows: no kernel for {es}-byte elements"
                )))
            }
        },
    };
    let n = batch * t * c;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        F,
        name,
        (grid_for(n, THREADS), 1, 1),
        THREADS,
        0,
        &mut kargs![
            src,
            dst,
            batch as i64,
            t as i64,
            tcap as i64,
            c as i64,
            src_strides[0] as i64,
            src_strides[1] as i64,
            start as i64,
            start_at
        ],
    )
}

/// `dst[i, :] = src[index[i], :]` for rows of `row` elements of `esize` bytes.
pub(crate) fn index_select(
    dev: &Dev,
    esize: usize,
    src: u64,
    index: u64,
    dst: u64,
    n_index: usize,
    row: usize,
) -> Result<()> {
    let name = by_size(
        "index_select",
        &["index_select_b1", "index_select_b2", "index_select_b4"],
        esize,
    )?;
    let n = n_index * row;
    if n == 0 {
        return Ok(());
    }
    dev.launch(
        F,
        name,
        (grid_for(n, THREADS), 1, 1),
        THREADS,
        0,
        &mut kargs![src, index, dst, n_index as i64, row as i64],
    )
}

/// A strided view as `kernels/copy.cu`'s `View` (`#[repr(C)]`, by value).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct GatherView {
    dims: [i64; 6],
    strides: [i64; 6],
    offset: i64,
    n: i64,
    rank: i32,
    _pad: i32,
}
// SAFETY: #[repr(C)] with the field order and types of `struct View`.
unsafe impl KArg for GatherView {}

/// Copies the view `t` (of `esize`-byte elements at `src`, the start of its
/// storage) into contiguous memory at `dst`.
pub(crate) fn gather(dev: &Dev, esize: usize, t: &Tensor, src: u64, dst: u64) -> Result<()> {
    let name = by_size("gather", &["gather_b1", "gather_b2", "gather_b4"], esize)?;
    let n = t.elem_count();
    if n == 0 {
        return Ok(());
    }
    let mut v = GatherView {
        dims: [1; 6],
        strides: [0; 6],
        offset: t.offset() as i64,
        n: n as i64,
        rank: t.rank() as i32,
        _pad: 0,
    };
    for (i, (&d, &s)) in t.dims().iter().zip(t.strides()).enumerate() {
        v.dims[i] = d as i64;
        v.strides[i] = s as i64;
    }
    dev.launch(
        F,
        name,
        (grid_for(n, THREADS), 1, 1),
        THREADS,
        0,
        &mut kargs![src, dst, v],
    )
}
