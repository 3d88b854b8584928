//! Launchers of `kernels/topk.cu`, and the host fallback for large k.

use std::cmp::Ordering;

use encdec_core::Result;

use crate::launch::{kargs, Dev};
use crate::memory::Block;
use crate::module::Family;

/// Entries of one chunk (`TOPK_CHUNK` in topk.cu).
const CHUNK: usize = 4096;
/// Largest k the kernel serves; larger k runs on the host.
pub(crate) const MAX_K: usize = 64;
/// `TOPK_NONE`: an empty candidate slot.
const NONE: u32 = u32::MAX;

/// Top-`k` (1..=MAX_K) of `rows` rows of `cols` f32 at `x`: `(indices, values)`.
pub(crate) fn topk(
    dev: &Dev,
    x: u64,
    rows: usize,
    cols: usize,
    k: usize,
) -> Result<(Vec<u32>, Vec<f32>)> {
    debug_assert!((1..=MAX_K).contains(&k) && k <= cols);
    // Stages: each maps rows of `len` entries to rows of ceil(len / CHUNK) * k
    // candidates, until one chunk is left.
    let mut len = cols;
    let mut vals = x;
    let mut idx = 0u64;
    let mut stride = cols;
    let mut held = Vec::new(); // candidate buffers of earlier stages stay alive
    loop {
        let chunks = len.div_ceil(CHUNK);
        let out_stride = chunks * k;
        let vbuf = dev.alloc(rows * out_stride * 4)?;
        let ibuf = dev.alloc(rows * out_stride * 4)?;
        dev.launch(
            Family::Topk,
            "topk_stage_f32",
            (rows as u32, chunks as u32, 1),
            256,
            0,
            &mut kargs![
                vals,
                idx,
                len as i32,
                stride as i64,
                k as i32,
                vbuf.ptr,
                ibuf.ptr,
                out_stride as i64
            ],
        )?;
        vals = vbuf.ptr;
        idx = ibuf.ptr;
        stride = out_stride;
        len = out_stride;
        held.push(vbuf);
        held.push(ibuf);
        if chunks == 1 {
            break;
        }
    }
    let mut out_v = vec![0f32; rows * k];
    let mut out_i = vec![0u32; rows * k];
    // SAFETY: the last stage wrote rows * k entries at `vals`/`idx` (stride k),
    // both blocks are alive in `held`; the host slices have that length.
    unsafe {
        dev.drv.dtoh(&mut out_v, vals, "topk")?;
        dev.drv.dtoh(&mut out_i, idx, "topk")?;
    }
    drop(held);
    if out_i.contains(&NONE) {
        return Err(encdec_core::Error::Cuda(
            "topk: the kernel left an empty slot (a bug in kernels/topk.cu)".into(),
        ));
    }
    Ok((out_i, out_v))
}

/// Top-`k` (1..=MAX_K) of `rows` rows of `cols` f32 at `x` into the device
/// buffers `out_idx` / `out_val` (`[rows, k]` each), without a host copy: the
/// last stage writes there, earlier stages (rows longer than one chunk) into
/// two pairs of pool blocks used in turn, so nothing is allocated on the host
/// and, once the pool is warm, on the device.
pub(crate) fn topk_into(
    dev: &Dev,
    x: u64,
    rows: usize,
    cols: usize,
    k: usize,
    out_idx: u64,
    out_val: u64,
) -> Result<()> {
    debug_assert!((1..=MAX_K).contains(&k) && k <= cols);
    let mut len = cols;
    let mut vals = x;
    let mut idx = 0u64;
    let mut stride = cols;
    // (values, indices) of the stage before, kept alive while the next reads them
    let mut prev: Option<(Block, Block)> = None;
    loop {
        let chunks = len.div_ceil(CHUNK);
        let last = chunks == 1;
        let out_stride = if last { k } else { chunks * k };
        let next = if last {
            None
        } else {
            Some((
                dev.alloc(rows * out_stride * 4)?,
                dev.alloc(rows * out_stride * 4)?,
            ))
        };
        let (vp, ip) = match &next {
            Some((v, i)) => (v.ptr, i.ptr),
            None => (out_val, out_idx),
        };
        dev.launch(
            Family::Topk,
            "topk_stage_f32",
            (rows as u32, chunks as u32, 1),
            256,
            0,
            &mut kargs![
                vals,
                idx,
                len as i32,
                stride as i64,
                k as i32,
                vp,
                ip,
                out_stride as i64
            ],
        )?;
        if last {
            // the stream orders the kernel before any reuse of the freed blocks
            drop(prev);
            return Ok(());
        }
        vals = vp;
        idx = ip;
        stride = out_stride;
        len = out_stride;
        prev = next;
    }
}

/// `Less` if `(va, ia)` ranks before `(vb, ib)`: larger value first, then the
/// lower index; NaN after every number (the CPU op's order).
fn better(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    match (a.0.is_nan(), b.0.is_nan()) {
        (false, false) => {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        }
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (true, true) => a.1.cmp(&b.1),
    }
}

/// Host top-k of rows of `cols` (for k > MAX_K): a sort per row.
pub(crate) fn topk_host(x: &[f32], cols: usize, k: usize) -> (Vec<u32>, Vec<f32>) {
    let mut idx = Vec::new();
    let mut val = Vec::new();
    if cols == 0 {
        return (idx, val);
    }
    for row in x.chunks_exact(cols) {
        let mut e: Vec<(f32, u32)> = row
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u32))
            .collect();
        e.sort_by(better);
        for &(v, i) in &e[..k] {
            idx.push(i);
            val.push(v);
        }
    }
    (idx, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_topk_orders_ties_by_index_and_nan_last() {
        let x = [1.0, f32::NAN, 3.0, 3.0, -1.0, f32::NAN];
        let (i, v) = topk_host(&x, 6, 6);
        assert_eq!(i, vec![2, 3, 0, 4, 1, 5]);
        assert_eq!(&v[..4], &[3.0, 3.0, 1.0, -1.0]);
    }
}
