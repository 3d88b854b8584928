//! Packed weight layouts of the GEMM (see `gemm.rs` for the algorithm).
//!
//! The microkernels read `w` in panels of [`NR`] = 32 output columns: for every
//! `k`, the 32 weights of the panel's columns lie side by side, so one k-step is
//! two 64-byte loads. Float layouts are `[n_panels][k][32]`; the int8 layout
//! groups four consecutive `k` per column for `vpdpbusd`: `[n_panels][k4][32][4]`
//! with `k4 = ceil(k / 4)`. Padding (columns past `n`, k past `k`) is zero.
//!
//! [`PackedWeights`] keeps the weights in their own dtype (bf16 stays 2 bytes
//! per weight); the per-call path of [`super::gemm::gemm`] packs float weights
//! straight to f32 instead, since it throws the buffer away afterwards.

use super::gemm::Weights;
use half::{bf16, f16};
use rayon::prelude::*;

/// Output columns per packed panel (two AVX-512 vectors of f32).
pub(crate) const NR: usize = 32;
/// K block of the int8 layout (bytes of one row of a panel block); its column
/// sums are stored per block so every block can be corrected on its own.
pub(crate) const KC_I8: usize = 1024;

/// A borrowed view of packed weights, what the GEMM driver consumes.
#[derive(Clone, Copy)]
pub(crate) enum PackedView<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    BF16(&'a [u16]),
    /// `data`: `[n_panels][k4][32][4]`; `scales`: per column (padded with 0);
    /// `colsum`: `[k_blocks][n_panels*32]` sums of `data` over each `KC_I8` block.
    I8 {
        data: &'a [i8],
        scales: &'a [f32],
        colsum: &'a [i32],
    },
}

#[derive(Debug, Clone)]
enum PackedData {
    F32(Vec<f32>),
    F16(Vec<u16>),
    BF16(Vec<u16>),
    I8 {
        data: Vec<i8>,
        scales: Vec<f32>,
        colsum: Vec<i32>,
    },
}

/// Weights of one linear layer repacked once (at model load) into the panel
/// layout the GEMM microkernels stream, so [`super::gemm::gemm_packed`] skips
/// the per-call transpose. Keeps the source dtype, so memory does not grow
/// (int8 adds 4 bytes of column sums per column per 1024 of `k`).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    n: usize,
    k: usize,
    data: PackedData,
}

/// Number of 32-column panels for `n` columns.
pub(crate) fn n_panels(n: usize) -> usize {
    n.div_ceil(NR)
}

impl PackedWeights {
    /// Pack `w` (`[n, k]` row-major, HF layout) in its own dtype.
    pub fn new(n: usize, k: usize, w: Weights) -> Self {
        check_weights(n, k, &w);
        let data = match w {
            Weights::F32(v) => PackedData::F32(pack_float(n, k, v, |x| x, 0.0f32)),
            Weights::F16(v) => PackedData::F16(pack_float(n, k, v, |x| x.to_bits(), 0u16)),
            Weights::BF16(v) => PackedData::BF16(pack_float(n, k, v, |x| x.to_bits(), 0u16)),
            Weights::I8 { data, scales } => {
                let (d, s, c) = pack_i8(n, k, data, scales);
                PackedData::I8 {
                    data: d,
                    scales: s,
                    colsum: c,
                }
            }
        };
        PackedWeights { n, k, data }
    }

    /// Pack float weights converted to f32 (twice the memory of bf16/f16, but
    /// the GEMM then skips the per-block conversion). Int8 is packed as in [`Self::new`].
    pub fn new_f32(n: usize, k: usize, w: Weights) -> Self {
        check_weights(n, k, &w);
        let data = match w {
            Weights::F32(v) => PackedData::F32(pack_float(n, k, v, |x| x, 0.0)),
            Weights::F16(v) => PackedData::F32(pack_float(n, k, v, f16::to_f32, 0.0)),
            Weights::BF16(v) => PackedData::F32(pack_float(n, k, v, bf16::to_f32, 0.0)),
            Weights::I8 { .. } => return Self::new(n, k, w),
        };
        PackedWeights { n, k, data }
    }

    /// Output features (rows of the HF weight).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the HF weight).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        match &self.data {
            PackedData::F32(v) => v.len() * 4,
            PackedData::F16(v) | PackedData::BF16(v) => v.len() * 2,
            PackedData::I8 {
                data,
                scales,
                colsum,
            } => data.len() + scales.len() * 4 + colsum.len() * 4,
        }
    }

    pub(crate) fn view(&self) -> PackedView<'_> {
        match &self.data {
            PackedData::F32(v) => PackedView::F32(v),
            PackedData::F16(v) => PackedView::F16(v),
            PackedData::BF16(v) => PackedView::BF16(v),
            PackedData::I8 {
                data,
                scales,
                colsum,
            } => PackedView::I8 {
                data,
                scales,
                colsum,
            },
        }
    }
}

pub(crate) fn check_weights(n: usize, k: usize, w: &Weights) {
    let len = match w {
        Weights::F32(v) => v.len(),
        Weights::F16(v) => v.len(),
        Weights::BF16(v) => v.len(),
        Weights::I8 { data, scales } => {
            assert!(
                scales.len() >= n,
                "gemm: {} int8 scales for n = {n}",
                scales.len()
            );
            data.len()
        }
    };
    assert!(
        len >= n * k,
        "gemm: weights hold {len} values, need n*k = {n}*{k}"
    );
}

/// Transpose-pack `[n, k]` into `[n_panels][k][32]`, converting each value.
/// Panels are packed in parallel when there is enough work.
pub(crate) fn pack_float<S: Copy + Send + Sync, D: Copy + Send + Sync>(
    n: usize,
    k: usize,
    w: &[S],
    cvt: impl Fn(S) -> D + Sync,
    zero: D,
) -> Vec<D> {
    let np = n_panels(n);
    let mut out = vec![zero; np * k * NR];
    if k == 0 {
        return out;
    }
    let body = |(p, dst): (usize, &mut [D])| {
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        // Blocks of 16 k keep the 32 source rows' cache lines hot while the
        // destination is written sequentially.
        const KB: usize = 16;
        let mut kb = 0;
        while kb < k {
            let ke = (kb + KB).min(k);
            for c in 0..cols {
                let src = &w[(j0 + c) * k + kb..(j0 + c) * k + ke];
                for (dk, &x) in src.iter().enumerate() {
                    dst[(kb + dk) * NR + c] = cvt(x);
                }
            }
            kb = ke;
        }
    };
    if n * k >= 1 << 16 {
        out.par_chunks_mut(k * NR).enumerate().for_each(body);
    } else {
        out.chunks_mut(k * NR).enumerate().for_each(body);
    }
    out
}

/// Pack int8 weights into `[n_panels][k4][32][4]` plus padded scales and
/// per-`KC_I8`-block column sums.
pub(crate) fn pack_i8(
    n: usize,
    k: usize,
    w: &[i8],
    scales: &[f32],
) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let np = n_panels(n);
    let k4 = k.div_ceil(4);
    let mut data = vec![0i8; np * k4 * NR * 4];
    let body = |(p, dst): (usize, &mut [i8])| {
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        for c in 0..cols {
            let src = &w[(j0 + c) * k..(j0 + c + 1) * k];
            for (q, &x) in src.iter().enumerate() {
                dst[(q / 4) * NR * 4 + c * 4 + q % 4] = x;
            }
        }
    };
    if n * k >= 1 << 16 {
        data.par_chunks_mut((k4 * NR * 4).max(1))
            .enumerate()
            .for_each(body);
    } else {
        data.chunks_mut((k4 * NR * 4).max(1))
            .enumerate()
            .for_each(body);
    }
    let (s, colsum) = i8_scales_colsum(n, k, w, scales);
    (data, s, colsum)
}

/// Scales padded to whole panels and the column sums of every `KC_I8` block
/// (`[k_blocks][n_panels*32]`) of int8 weights `[n, k]`.
pub(crate) fn i8_scales_colsum(
    n: usize,
    k: usize,
    w: &[i8],
    scales: &[f32],
) -> (Vec<f32>, Vec<i32>) {
    let npad = n_panels(n) * NR;
    let nkb = k.div_ceil(KC_I8).max(1);
    let mut s = vec![0.0f32; npad];
    s[..n].copy_from_slice(&scales[..n]);
    // Row sums of w (its column sums as a B operand), transposed to [kb][n].
    let mut sums = vec![0i32; n * nkb];
    let body = |(j, out): (usize, &mut [i32])| {
        for (o, chunk) in out.iter_mut().zip(w[j * k..(j + 1) * k].chunks(KC_I8)) {
            *o = chunk.iter().map(|&x| x as i32).sum();
        }
    };
    if n * k >= 1 << 18 {
        sums.par_chunks_mut(nkb).enumerate().for_each(body);
    } else {
        sums.chunks_mut(nkb).enumerate().for_each(body);
    }
    let mut colsum = vec![0i32; nkb * npad];
    for j in 0..n {
        for b in 0..nkb {
            colsum[b * npad + j] = sums[j * nkb + b];
        }
    }
    (s, colsum)
}
