//! GEMM: `out[m, n] = sum_k a[m, k] * w[n, k] (+ bias[n])`, w in HF's `[out, in]` layout.
//!
//! Two algorithms, chosen by the number of rows of `a`:
//!
//! - **GEMV** (`m < GEMV_MAX_M` = 32 with plain [`Weights`]): decode steps are
//!   bound by the bandwidth of streaming `w`. Each row of `w` is read once, in
//!   its own layout, for up to 4 rows of `a` (vectors along k, one horizontal sum per
//!   output at the end); N is split across the rayon pool so both cores pull
//!   memory.
//! - **Blocked GEMM** (larger `m`, or any [`PackedWeights`]): BLIS-style. `w` is
//!   packed in 32-column panels (`[k][32]`, see `gemm_pack.rs`), `a` in panels of
//!   `MR` rows (`[k][MR]`); a register-tiled microkernel (AVX-512: 14 x 32, 28 zmm
//!   accumulators) computes `MR x 32` tiles over K blocks of `KC`. The output is
//!   cut into (rows x columns) tasks that rayon spreads over the cores; inside a
//!   task the loop order is K block, then W panel (its `KC x 32` block stays in
//!   L1), then A panel (the task's `mc x KC` block of A stays in L2).
//!
//! Weight dtypes: f16/bf16 are widened to f32 in registers (GEMV), or while
//! packing / per `KC x 32` block (GEMM), and always accumulate in f32; on this
//! class of CPU `vdpbf16ps` issues at a quarter of the rate of `vfmadd231ps`
//! (half its FLOP rate) and would also round the activations to bf16, so it is
//! not used. Int8 with AVX-512 VNNI
//! quantises each activation row to u8 (asymmetric: `a ~= s * (u - z)`, s and z
//! per row) and multiplies with `vpdpbusd` (u8 x i8 into i32); the zero point is
//! removed with the column sums of `w`: `sum (u - z) w = sum u w - z * sum w`.
//! Without VNNI, int8 weights are widened to f32 like the other dtypes (no
//! activation quantisation). Activation quantisation adds a relative L2 error
//! of `(range / 255) / sqrt(12) / rms(a)`: 3.9e-3 for uniform activations in
//! [-1, 1], 2.0e-3 for post-ReLU ones (measured; the int8 weights themselves
//! add about 4e-3 against the f32 weights they came from). The tests check it
//! both ways: rel L2 < 1e-2 against `gemm_reference`, and f32-tight against the
//! reference on the dequantised activations.
//!
//! Note (vdpbf16ps, measured with a 12-chain loop on this machine): 1.8
//! instructions/ns against 7.2 for `vfmadd231ps`, i.e. half the f32 FLOP rate.

pub use super::gemm_pack::PackedWeights;
use super::gemm_pack::{self, n_panels, PackedView, KC_I8, NR};
use crate::isa::{self, Isa};
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::Cell;

/// Weights of a linear layer as the GEMM reads them (row-major `[n, k]`).
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    /// int8 values with one scale per output row.
    I8 {
        data: &'a [i8],
        scales: &'a [f32],
    },
}

/// Weights as given (`[n, k]` row-major) or packed once at load time.
#[derive(Debug, Clone, Copy)]
pub enum WeightsRef<'a> {
    Plain(Weights<'a>),
    Packed(&'a PackedWeights),
}

/// Rows below which plain weights take the GEMV path (no packing). Measured
/// crossover on a 2-core Sapphire Rapids: packing `w` per call only pays from
/// about 32-48 rows (f32 1024x1024: 24 rows 167 vs 142 GFLOP/s, 48 rows 180 vs 201).
pub const GEMV_MAX_M: usize = 32;
/// K block of the f32 microkernel: a `KC x 32` W block is 32 KiB (L1).
const KC: usize = 256;

/// `out[m*n] = a[m*k] · w[n*k]^T + bias`. All contiguous row-major.
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    w: Weights,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    gemm_ex(
        isa::active(),
        m,
        n,
        k,
        a,
        k,
        WeightsRef::Plain(w),
        bias,
        out,
        n,
    )
}

/// [`gemm`] with weights packed by [`PackedWeights::new`]; `n`, `k` are theirs.
pub fn gemm_packed(m: usize, a: &[f32], w: &PackedWeights, bias: Option<&[f32]>, out: &mut [f32]) {
    let (n, k) = (w.n(), w.k());
    gemm_ex(
        isa::active(),
        m,
        n,
        k,
        a,
        k,
        WeightsRef::Packed(w),
        bias,
        out,
        n,
    )
}

/// The general entry: an explicit ISA level (clamped to what the machine
/// runs), row strides `lda >= k` of `a` and `ldc >= n` of `out`, plain or
/// packed weights.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ex(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    w: WeightsRef,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldc: usize,
) {
    let isa = isa.min(isa::detected());
    match w {
        WeightsRef::Plain(w) => gemm_pack::check_weights(n, k, &w),
        WeightsRef::Packed(p) => assert!(
            p.n() == n && p.k() == k,
            "gemm: packed weights are [{}, {}], call says [{n}, {k}]",
            p.n(),
            p.k()
        ),
    }
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        lda >= k && ldc >= n,
        "gemm: lda {lda} < k {k} or ldc {ldc} < n {n}"
    );
    assert!(
        a.len() >= (m - 1) * lda + k,
        "gemm: a holds {} values, need {}",
        a.len(),
        (m - 1) * lda + k
    );
    assert!(
        out.len() >= (m - 1) * ldc + n,
        "gemm: out holds {} values, need {}",
        out.len(),
        (m - 1) * ldc + n
    );
    if let Some(b) = bias {
        assert!(
            b.len() >= n,
            "gemm: bias holds {} values, need {n}",
            b.len()
        );
    }
    if k == 0 {
        for i in 0..m {
            let row = &mut out[i * ldc..i * ldc + n];
            match bias {
                Some(b) => row.copy_from_slice(&b[..n]),
                None => row.fill(0.0),
            }
        }
        return;
    }
    let c = Mat {
        m,
        n,
        k,
        a: a.as_ptr(),
        lda,
        out: SyncPtr(out.as_mut_ptr()),
        ldc,
        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
    };
    match w {
        WeightsRef::Plain(w) if m < GEMV_MAX_M || isa == Isa::Scalar => gemv(isa, &c, w),
        WeightsRef::Plain(w) => {
            // Pack per call (into a reused per-thread buffer); float dtypes
            // go straight to f32.
            let np = n_panels(n);
            if let (Weights::I8 { data, scales }, true) = (w, use_vnni(isa)) {
                let k4 = k.div_ceil(4);
                with_scratch(&SCRATCH_I8, np * k4 * NR * 4, |d| {
                    let (s, cs) = pack_b_i8(isa, n, k, data, scales, d);
                    let view = PackedView::I8 {
                        data: d,
                        scales: &s,
                        colsum: &cs,
                    };
                    blocked(isa, &c, view);
                });
            } else {
                with_scratch(&SCRATCH_B, np * k * NR, |d| {
                    pack_b_f32(isa, n, k, w, d);
                    blocked(isa, &c, PackedView::F32(d));
                });
            }
        }
        WeightsRef::Packed(p) => blocked(isa, &c, p.view()),
    }
}

/// Plain loops with f64 accumulation: the ground truth.
pub fn gemm_reference(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    w: Weights,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let wv = match w {
                    Weights::F32(v) => v[j * k + p],
                    Weights::F16(v) => v[j * k + p].to_f32(),
                    Weights::BF16(v) => v[j * k + p].to_f32(),
                    Weights::I8 { data, scales } => data[j * k + p] as f32 * scales[j],
                };
                acc += a[i * k + p] as f64 * wv as f64;
            }
            out[i * n + j] = (acc + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
}

// ---------------------------------------------------------------------------
// Shared pieces: pointers, tile store mode, element trait, quantisation.
// ---------------------------------------------------------------------------

/// A raw pointer the rayon tasks share; each task writes a disjoint tile.
#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
// SAFETY: only used to hand disjoint output tiles to rayon tasks; the pointee
// outlives the parallel region (it is borrowed by the caller of `gemm_ex`).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above; tasks never touch the same elements.
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// One call's operands after validation.
#[derive(Clone, Copy)]
struct Mat {
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    out: SyncPtr<f32>,
    ldc: usize,
    bias: *const f32,
}
// SAFETY: `a` and `bias` are read-only views of slices borrowed for the call.
unsafe impl Send for Mat {}
// SAFETY: as above.
unsafe impl Sync for Mat {}

/// How a tile is written: `C = acc (+ bias)` on the first K block, `C += acc` after.
#[derive(Clone, Copy)]
pub(crate) struct Store {
    pub first: bool,
    /// Bias for the tile's first column, or null.
    pub bias: *const f32,
}

/// Per-row and per-column factors of the int8 epilogue:
/// `C[i,j] = row_s[i] * col_s[j] * (acc[i,j] - row_z[i] * colsum[j])`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct I8Epi {
    pub row_s: *const f32,
    pub row_z: *const i32,
    pub col_s: *const f32,
    pub colsum: *const i32,
}

/// Quantised activation rows for the int8 kernels: `a ~= s * (u - z)`.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct QRows {
    pub u: *const u8,
    /// Stride between rows of `u` (>= k).
    pub ldu: usize,
    pub s: *const f32,
    pub z: *const i32,
}

/// A weight element that widens to f32.
pub(crate) trait WElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}
impl WElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl WElem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}
impl WElem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}
impl WElem for i8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// Asymmetric u8 parameters for values in `[lo, hi]` (`lo <= 0 <= hi`):
/// scale `s`, its inverse, and zero point `z` with `x ~= s * (u - z)`.
pub(crate) fn quant_params(lo: f32, hi: f32) -> (f32, f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi - lo <= f32::MIN_POSITIVE || !(hi - lo).is_finite() {
        return (1.0, 1.0, 0);
    }
    let s = (hi - lo) / 255.0;
    let inv = 1.0 / s;
    let z = (-lo * inv).round_ties_even().clamp(0.0, 255.0) as i32;
    (s, inv, z)
}

/// Quantise one activation row to u8; returns `(s, z)`. Portable version,
/// bit-identical to the AVX-512 one.
pub(crate) fn quantize_row_scalar(x: &[f32], u: &mut [u8]) -> (f32, i32) {
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let (s, inv, z) = quant_params(lo, hi);
    let zf = z as f32;
    for (d, &v) in u.iter_mut().zip(x) {
        *d = (v * inv + zf).clamp(0.0, 255.0).round_ties_even() as u8;
    }
    (s, z)
}

fn use_vnni(isa: Isa) -> bool {
    isa == Isa::Avx512 && isa::has_avx512_vnni()
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    is_x86_feature_detected!("f16c")
}

/// Quantise the `m` rows of `a` into `u` (`m x ldu`, zero padded), `s`, `z`.
fn quantize_rows(isa: Isa, c: &Mat, u: &mut [u8], ldu: usize, s: &mut [f32], z: &mut [i32]) {
    let work = |(i, ((ur, sr), zr)): (usize, ((&mut [u8], &mut f32), &mut i32))| {
        // SAFETY: row `i < m` of `a` holds `k` floats (checked in `gemm_ex`).
        let x = unsafe { std::slice::from_raw_parts(c.a.add(i * c.lda), c.k) };
        (*sr, *zr) = quantize_row(isa, x, &mut ur[..c.k]);
        ur[c.k..].fill(0);
    };
    let (u, s, z) = (&mut u[..c.m * ldu], &mut s[..c.m], &mut z[..c.m]);
    if c.m * c.k >= 1 << 16 {
        u.par_chunks_mut(ldu)
            .zip(s.par_iter_mut())
            .zip(z.par_iter_mut())
            .enumerate()
            .for_each(work);
    } else {
        u.chunks_mut(ldu)
            .zip(s.iter_mut())
            .zip(z.iter_mut())
            .enumerate()
            .for_each(work);
    }
}

/// Per-row quantisation buffers of an int8 GEMM with `m` rows: `u8` rows of
/// `ldu` bytes, scales and zero points, taken from per-thread scratch.
fn with_quant_scratch<R>(
    m: usize,
    ldu: usize,
    f: impl FnOnce(&mut [u8], &mut [f32], &mut [i32]) -> R,
) -> R {
    with_scratch(&SCRATCH_U8, m * ldu, |u| {
        with_scratch(&SCRATCH_S, m, |s| {
            with_scratch(&SCRATCH_Z, m, |z| f(u, s, z))
        })
    })
}

fn quantize_row(isa: Isa, x: &[f32], u: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512F/BW/VL present (isa level Avx512); x and u hold x.len().
        return unsafe {
            super::gemm_x86::quantize_row_avx512(x.as_ptr(), x.len(), u.as_mut_ptr())
        };
    }
    let _ = isa;
    quantize_row_scalar(x, u)
}

// ---------------------------------------------------------------------------
// Per-call packing into reused per-thread buffers.
// ---------------------------------------------------------------------------

thread_local! {
    static SCRATCH_B: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_A: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_I8: Cell<Vec<i8>> = const { Cell::new(Vec::new()) };
    static SCRATCH_AW: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_U8: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static SCRATCH_S: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_Z: Cell<Vec<i32>> = const { Cell::new(Vec::new()) };
}

/// Buffers up to this many bytes are kept for the next call on the thread.
const SCRATCH_KEEP_BYTES: usize = 64 << 20;

/// Run `f` on a buffer of `len` elements taken from `key` (contents are
/// garbage: callers write what they read). A nested call on the same thread
/// finds the cell empty and allocates its own.
fn with_scratch<T: Copy + Default, R>(
    key: &'static std::thread::LocalKey<Cell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut v = key.with(|c| c.take());
    if v.len() < len {
        v = vec![T::default(); len];
    }
    let r = f(&mut v[..len]);
    if v.len() * std::mem::size_of::<T>() <= SCRATCH_KEEP_BYTES {
        key.with(|c| c.set(v));
    }
    r
}

/// Pack plain weights as f32 panels `[np][k][32]` into `dst` (padding columns
/// are left as they were: the microkernels never store them).
fn pack_b_f32(isa: Isa, n: usize, k: usize, w: Weights, dst: &mut [f32]) {
    match w {
        Weights::F32(v) => pack_b_t(isa, n, k, v, None, dst),
        Weights::F16(v) => pack_b_t(isa, n, k, v, None, dst),
        Weights::BF16(v) => pack_b_t(isa, n, k, v, None, dst),
        Weights::I8 { data, scales } => pack_b_t(isa, n, k, data, Some(scales), dst),
    }
}

fn pack_b_t<T: WElemX>(
    isa: Isa,
    n: usize,
    k: usize,
    w: &[T],
    scales: Option<&[f32]>,
    dst: &mut [f32],
) {
    let body = |(p, panel): (usize, &mut [f32])| {
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        let mut done = true;
        for h in 0..2 {
            let rows = cols.saturating_sub(16 * h).min(16);
            if rows > 0 {
                // SAFETY: rows j0+16h.. (< n) of w hold k elements; the panel
                // holds k*32 floats, written at column offset 16h.
                done &= unsafe {
                    T::pack_t16(
                        isa,
                        w[(j0 + 16 * h) * k..].as_ptr(),
                        k,
                        rows,
                        k,
                        panel[16 * h..].as_mut_ptr(),
                        NR,
                    )
                };
            }
        }
        if !done {
            for c in 0..cols {
                for (q, &x) in w[(j0 + c) * k..(j0 + c + 1) * k].iter().enumerate() {
                    panel[q * NR + c] = x.to_f32();
                }
            }
        }
        if let Some(s) = scales {
            for row in panel.chunks_mut(NR) {
                for (v, &sc) in row[..cols].iter_mut().zip(&s[j0..j0 + cols]) {
                    *v *= sc;
                }
            }
        }
    };
    if n * k >= 1 << 16 && rayon::current_num_threads() > 1 {
        dst.par_chunks_mut(k * NR).enumerate().for_each(body);
    } else {
        dst.chunks_mut(k * NR).enumerate().for_each(body);
    }
}

/// Pack int8 weights into the VNNI layout in `dst`; returns padded scales and
/// per-`KC_I8` column sums.
// The SIMD bodies are x86-only; elsewhere (aarch64) their inputs go unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn pack_b_i8(
    isa: Isa,
    n: usize,
    k: usize,
    w: &[i8],
    scales: &[f32],
    dst: &mut [i8],
) -> (Vec<f32>, Vec<i32>) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        let k4 = k.div_ceil(4);
        let body = |(p, panel): (usize, &mut [i8])| {
            let j0 = p * NR;
            let cols = NR.min(n - j0);
            for h in 0..2 {
                let rows = cols.saturating_sub(16 * h).min(16);
                if rows > 0 {
                    // SAFETY: AVX-512F/BW/VL (isa level); rows j0+16h.. of w
                    // hold k bytes; the panel holds k4*128 bytes.
                    unsafe {
                        super::gemm_x86::pack_i8_t16_avx512(
                            w[(j0 + 16 * h) * k..].as_ptr(),
                            k,
                            rows,
                            k,
                            panel[64 * h..].as_mut_ptr(),
                        )
                    };
                }
            }
        };
        if n * k >= 1 << 17 && rayon::current_num_threads() > 1 {
            dst.par_chunks_mut(k4 * NR * 4).enumerate().for_each(body);
        } else {
            dst.chunks_mut(k4 * NR * 4).enumerate().for_each(body);
        }
        return gemm_pack::i8_scales_colsum(n, k, w, scales);
    }
    let (d, s, c) = gemm_pack::pack_i8(n, k, w, scales);
    dst.copy_from_slice(&d);
    (s, c)
}

// ---------------------------------------------------------------------------
// GEMV path: plain weights, few rows.
// ---------------------------------------------------------------------------

fn gemv(isa: Isa, c: &Mat, w: Weights) {
    match w {
        Weights::F32(v) => gemv_t(isa, c, v.as_ptr(), std::ptr::null()),
        Weights::F16(v) => gemv_t(isa, c, v.as_ptr(), std::ptr::null()),
        Weights::BF16(v) => gemv_t(isa, c, v.as_ptr(), std::ptr::null()),
        Weights::I8 { data, scales } => {
            if use_vnni(isa) {
                gemv_i8_vnni(isa, c, data.as_ptr(), scales.as_ptr())
            } else {
                gemv_t(isa, c, data.as_ptr(), scales.as_ptr())
            }
        }
    }
}

/// Column chunks (multiples of 8) so both cores stream disjoint parts of `w`.
fn gemv_chunks(n: usize, k: usize, rows: usize, elem_bytes: usize) -> usize {
    let threads = rayon::current_num_threads();
    let bytes = n * k * elem_bytes;
    let work = n * k * rows;
    // In a decode step the weights come from DRAM (a model's layers do not fit
    // in cache), where two cores stream even a 1 MiB matrix faster than one:
    // splitting from 256 KiB up made opus-mt W1 9-25 % faster than the earlier
    // 2 MiB threshold, which was tuned on L2-warm weights (1x512x512 f32 alone
    // 85 vs 49 GB/s when the same matrix is read again and again).
    if threads <= 1 || (bytes < 256 << 10 && work < 1 << 21) {
        return n;
    }
    // Several chunks per thread balance against other load on the cores.
    let tasks = threads * if bytes < 8 << 20 { 2 } else { 4 };
    (n.div_ceil(tasks)).div_ceil(8).max(1) * 8
}

#[derive(Clone, Copy)]
struct ConstPtr<T>(*const T);
// SAFETY: read-only pointers into slices borrowed for the duration of the call.
unsafe impl<T> Send for ConstPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for ConstPtr<T> {}
impl<T> ConstPtr<T> {
    fn get(self) -> *const T {
        self.0
    }
}

fn gemv_t<T: WElemX>(isa: Isa, c: &Mat, w: *const T, scale: *const f32) {
    let chunk = gemv_chunks(c.n, c.k, c.m, std::mem::size_of::<T>());
    let (w, scale) = (ConstPtr(w), ConstPtr(scale));
    let run = |j0: usize| {
        let cols = chunk.min(c.n - j0);
        let mut r0 = 0;
        while r0 < c.m {
            let rows = (c.m - r0).min(4);
            let sc = scale.get();
            // SAFETY: rows r0..r0+rows < m of a/out, columns j0..j0+cols < n of
            // w/out/bias/scale; extents checked in `gemm_ex`.
            unsafe {
                T::dot(
                    isa,
                    rows,
                    cols,
                    c.k,
                    c.a.add(r0 * c.lda),
                    c.lda,
                    w.get().add(j0 * c.k),
                    c.out.get().add(r0 * c.ldc + j0),
                    c.ldc,
                    if sc.is_null() { sc } else { sc.add(j0) },
                    if c.bias.is_null() {
                        c.bias
                    } else {
                        c.bias.add(j0)
                    },
                );
            }
            r0 += rows;
        }
    };
    if chunk >= c.n {
        run(0);
    } else {
        (0..c.n).into_par_iter().step_by(chunk).for_each(run);
    }
}

/// Dispatch of the dot kernels per element type.
trait WElemX: WElem {
    /// # Safety
    /// As the `dot_*` kernels: `rows <= 4`, pointers cover their extents.
    #[allow(clippy::too_many_arguments)]
    unsafe fn dot(
        isa: Isa,
        rows: usize,
        cols: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        w: *const Self,
        c: *mut f32,
        ldc: usize,
        col_scale: *const f32,
        bias: *const f32,
    );

    /// Transpose-pack `rows <= 16` rows (see `gemm_x86::pack_t16_avx512`);
    /// returns false where this ISA level has no SIMD packer (nothing written).
    ///
    /// # Safety
    /// As `gemm_x86::pack_t16_avx512`.
    unsafe fn pack_t16(
        isa: Isa,
        src: *const Self,
        ld: usize,
        rows: usize,
        k: usize,
        dst: *mut f32,
        dst_stride: usize,
    ) -> bool;
}

macro_rules! impl_welemx {
    ($t:ty) => {
        impl WElemX for $t {
            unsafe fn dot(
                isa: Isa,
                rows: usize,
                cols: usize,
                k: usize,
                a: *const f32,
                lda: usize,
                w: *const Self,
                c: *mut f32,
                ldc: usize,
                col_scale: *const f32,
                bias: *const f32,
            ) {
                #[cfg(target_arch = "x86_64")]
                {
                    if isa == Isa::Avx512 && has_f16c() {
                        // SAFETY: features checked; extents per the caller's contract.
                        return unsafe {
                            super::gemm_x86::dot_avx512::<$t>(
                                rows, cols, k, a, lda, w, c, ldc, col_scale, bias,
                            )
                        };
                    }
                    if isa >= Isa::Avx2 && has_f16c() {
                        // SAFETY: as above.
                        return unsafe {
                            super::gemm_x86::dot_avx2::<$t>(
                                rows, cols, k, a, lda, w, c, ldc, col_scale, bias,
                            )
                        };
                    }
                }
                let _ = isa;
                // SAFETY: extents per the caller's contract.
                unsafe { dot_scalar::<$t>(rows, cols, k, a, lda, w, c, ldc, col_scale, bias) }
            }

            unsafe fn pack_t16(
                isa: Isa,
                src: *const Self,
                ld: usize,
                rows: usize,
                k: usize,
                dst: *mut f32,
                dst_stride: usize,
            ) -> bool {
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512 && has_f16c() {
                    // SAFETY: features checked; extents per the caller's contract.
                    unsafe {
                        super::gemm_x86::pack_t16_avx512::<$t>(src, ld, rows, k, dst, dst_stride)
                    };
                    return true;
                }
                let _ = (isa, src, ld, rows, k, dst, dst_stride);
                false
            }
        }
    };
}
impl_welemx!(f32);
impl_welemx!(f16);
impl_welemx!(bf16);
impl_welemx!(i8);

/// Portable dot kernel: 4 partial sums along k per output (vectorisable).
///
/// # Safety
/// As [`WElemX::dot`].
#[allow(clippy::too_many_arguments)]
unsafe fn dot_scalar<T: WElem>(
    rows: usize,
    cols: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    w: *const T,
    c: *mut f32,
    ldc: usize,
    col_scale: *const f32,
    bias: *const f32,
) {
    for j in 0..cols {
        // SAFETY: row j of the chunk holds k elements.
        let wr = unsafe { std::slice::from_raw_parts(w.add(j * k), k) };
        for r in 0..rows {
            // SAFETY: row r of a holds k floats.
            let ar = unsafe { std::slice::from_raw_parts(a.add(r * lda), k) };
            let mut acc = [0.0f32; 8];
            let mut ch_a = ar.chunks_exact(8);
            let mut ch_w = wr.chunks_exact(8);
            for (xa, xw) in (&mut ch_a).zip(&mut ch_w) {
                for t in 0..8 {
                    acc[t] += xa[t] * xw[t].to_f32();
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (x, y) in ch_a.remainder().iter().zip(ch_w.remainder()) {
                s += x * y.to_f32();
            }
            // SAFETY: col_scale/bias are null or hold `cols` floats; c row r holds `cols`.
            unsafe {
                if !col_scale.is_null() {
                    s *= *col_scale.add(j);
                }
                if !bias.is_null() {
                    s += *bias.add(j);
                }
                *c.add(r * ldc + j) = s;
            }
        }
    }
}

// The SIMD bodies are x86-only; elsewhere (aarch64) their inputs go unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn gemv_i8_vnni(isa: Isa, c: &Mat, w: *const i8, scales: *const f32) {
    let ldu = c.k.div_ceil(64) * 64;
    with_quant_scratch(c.m, ldu, |u, s, z| {
        quantize_rows(isa, c, u, ldu, s, z);
        gemv_i8_run(c, w, scales, (u, ldu, s, z));
    });
}

/// The column loop of [`gemv_i8_vnni`] over rows quantised into `u`, `s`, `z`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn gemv_i8_run(
    c: &Mat,
    w: *const i8,
    scales: *const f32,
    (u, ldu, s, z): (&[u8], usize, &[f32], &[i32]),
) {
    let chunk = gemv_chunks(c.n, c.k, c.m, 1);
    let (w, scales) = (ConstPtr(w), ConstPtr(scales));
    let q_all = (
        ConstPtr(u.as_ptr()),
        ConstPtr(s.as_ptr()),
        ConstPtr(z.as_ptr()),
    );
    let run = |j0: usize| {
        let cols = chunk.min(c.n - j0);
        let mut r0 = 0;
        while r0 < c.m {
            let rows = (c.m - r0).min(4);
            // SAFETY: rows r0..r0+rows of the quantised buffers, columns j0.. of
            // w/scales/out/bias; VNNI checked by `use_vnni`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let q = QRows {
                    u: q_all.0.get().add(r0 * ldu),
                    ldu,
                    s: q_all.1.get().add(r0),
                    z: q_all.2.get().add(r0),
                };
                super::gemm_x86::dot_i8_avx512(
                    rows,
                    cols,
                    c.k,
                    q,
                    w.get().add(j0 * c.k),
                    c.out.get().add(r0 * c.ldc + j0),
                    c.ldc,
                    scales.get().add(j0),
                    if c.bias.is_null() {
                        c.bias
                    } else {
                        c.bias.add(j0)
                    },
                );
            }
            r0 += rows;
        }
    };
    let _ = (&q_all, &w, &scales);
    if chunk >= c.n {
        run(0);
    } else {
        (0..c.n).into_par_iter().step_by(chunk).for_each(run);
    }
}

// ---------------------------------------------------------------------------
// Blocked GEMM on packed weights.
// ---------------------------------------------------------------------------

type TileFn = unsafe fn(usize, usize, *const f32, *const f32, *mut f32, usize, usize, Store);
type CvtFn = unsafe fn(*const u16, *mut f32, usize);
type TileHFn = unsafe fn(usize, usize, *const f32, *const u16, *mut f32, usize, usize, Store);

/// The f32 microkernel and block converters of one ISA level.
struct FKern {
    mr: usize,
    tile: TileFn,
    cvt_f16: CvtFn,
    cvt_bf16: CvtFn,
    /// Tiles that read f16 / bf16 panels directly, where the ISA has them.
    tile_h: Option<(TileHFn, TileHFn)>,
}

fn fkern(isa: Isa) -> FKern {
    #[cfg(target_arch = "x86_64")]
    {
        use super::gemm_x86 as x;
        if isa == Isa::Avx512 && has_f16c() {
            return FKern {
                mr: x::MR_512,
                tile: x::tile_f32_avx512,
                cvt_f16: x::cvt_f16_avx512,
                cvt_bf16: x::cvt_bf16_avx512,
                tile_h: Some((x::tile_h_avx512::<false>, x::tile_h_avx512::<true>)),
            };
        }
        if isa >= Isa::Avx2 && has_f16c() {
            return FKern {
                mr: x::MR_256,
                tile: x::tile_f32_avx2,
                cvt_f16: x::cvt_f16_avx2,
                cvt_bf16: x::cvt_bf16_avx2,
                tile_h: None,
            };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if isa == Isa::Neon {
            return FKern {
                mr: super::gemm_neon::MR_NEON,
                tile: super::gemm_neon::tile_f32_neon,
                cvt_f16: cvt_f16_scalar,
                cvt_bf16: cvt_bf16_scalar,
                tile_h: None,
            };
        }
    }
    let _ = isa;
    FKern {
        mr: MR_SCALAR,
        tile: tile_f32_scalar,
        cvt_f16: cvt_f16_scalar,
        cvt_bf16: cvt_bf16_scalar,
        tile_h: None,
    }
}

const MR_SCALAR: usize = 4;

/// Portable microkernel: `C[mr x nr] (+)= A[kc][mr] * B[kc][32]`.
///
/// # Safety
/// As `tile_f32_avx512` (without the CPU feature).
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32_scalar(
    mr: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    let mut acc = [[0.0f32; NR]; MR_SCALAR];
    // SAFETY: a holds kc*mr, b kc*32 floats (caller's contract).
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * mr),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    for p in 0..kc {
        let bp = &b[p * NR..p * NR + NR];
        for i in 0..mr {
            let av = a[p * mr + i];
            for (x, &y) in acc[i].iter_mut().zip(bp) {
                *x += av * y;
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (j, &x) in row.iter().enumerate().take(nr) {
            // SAFETY: c row i holds nr floats, bias (if set) nr floats.
            unsafe {
                let p = c.add(i * ldc + j);
                let o = if st.first {
                    if st.bias.is_null() {
                        0.0
                    } else {
                        *st.bias.add(j)
                    }
                } else {
                    *p
                };
                *p = x + o;
            }
        }
    }
}

/// # Safety
/// `src` holds `len` values, `dst` `len` writable floats.
unsafe fn cvt_f16_scalar(src: *const u16, dst: *mut f32, len: usize) {
    for i in 0..len {
        // SAFETY: i < len.
        unsafe { *dst.add(i) = f16::from_bits(*src.add(i)).to_f32() };
    }
}

/// # Safety
/// As [`cvt_f16_scalar`].
unsafe fn cvt_bf16_scalar(src: *const u16, dst: *mut f32, len: usize) {
    for i in 0..len {
        // SAFETY: i < len.
        unsafe { *dst.add(i) = bf16::from_bits(*src.add(i)).to_f32() };
    }
}

/// Task grid: `mc` rows x `ncp` panels per task.
struct Grid {
    mc: usize,
    ncp: usize,
    tasks_m: usize,
    tasks_n: usize,
}

fn grid(m: usize, n: usize, k: usize, mr: usize) -> Grid {
    let threads = rayon::current_num_threads();
    let np = n_panels(n);
    let mc_max = mr * 12;
    let tasks_m = m.div_ceil(mc_max);
    let mc = m.div_ceil(tasks_m).div_ceil(mr) * mr;
    let tasks_m = m.div_ceil(mc);
    let par = threads > 1 && 2 * m * n * k >= 1 << 21;
    let want = if par { threads * 4 } else { 1 };
    let per_m = want.div_ceil(tasks_m).max(1);
    let ncp = np.div_ceil(per_m).clamp(1, 16);
    Grid {
        mc,
        ncp,
        tasks_m,
        tasks_n: np.div_ceil(ncp),
    }
}

/// Balanced K blocks of at most `kc_max`, each a multiple of `q`.
fn k_blocks(k: usize, kc_max: usize, q: usize) -> usize {
    let nb = k.div_ceil(kc_max);
    k.div_ceil(nb).div_ceil(q) * q
}

fn run_tasks(g: &Grid, par: bool, f: impl Fn(usize, usize) + Sync) {
    let total = g.tasks_m * g.tasks_n;
    if par && total > 1 {
        (0..total)
            .into_par_iter()
            .for_each(|t| f(t / g.tasks_n, t % g.tasks_n));
    } else {
        for t in 0..total {
            f(t / g.tasks_n, t % g.tasks_n);
        }
    }
}

fn blocked(isa: Isa, c: &Mat, w: PackedView) {
    if let PackedView::I8 {
        data,
        scales,
        colsum,
    } = w
    {
        if use_vnni(isa) {
            return blocked_i8(isa, c, data, scales, colsum);
        }
    }
    let fk = fkern(isa);
    let (m, n, k) = (c.m, c.n, c.k);
    let mr = fk.mr;
    let np_m = m.div_ceil(mr);
    let par = rayon::current_num_threads() > 1 && 2 * m * n * k >= 1 << 21;
    with_scratch(&SCRATCH_A, np_m * mr * k, |ap| {
        pack_a(isa, c, mr, ap, par);
        blocked_f32(&fk, c, w, ap, par)
    });
}

/// Pack A into panels of `mr` rows: panel p holds `[k][rows_p]` at `p*mr*k`.
fn pack_a(isa: Isa, c: &Mat, mr: usize, ap: &mut [f32], par: bool) {
    let (m, k) = (c.m, c.k);
    let pack = |(p, dst): (usize, &mut [f32])| {
        let r0 = p * mr;
        let rows = mr.min(m - r0);
        // SAFETY: rows r0..r0+rows < m of a hold k floats; dst holds k*rows.
        if unsafe {
            f32::pack_t16(
                isa,
                c.a.add(r0 * c.lda),
                c.lda,
                rows,
                k,
                dst.as_mut_ptr(),
                rows,
            )
        } {
            return;
        }
        for i in 0..rows {
            // SAFETY: row r0+i < m of a holds k floats.
            let src = unsafe { std::slice::from_raw_parts(c.a.add((r0 + i) * c.lda), k) };
            for (q, &x) in src.iter().enumerate() {
                dst[q * rows + i] = x;
            }
        }
    };
    if par && m * k >= 1 << 15 {
        ap.par_chunks_mut(mr * k).enumerate().for_each(pack);
    } else {
        ap.chunks_mut(mr * k).enumerate().for_each(pack);
    }
}

fn blocked_f32(fk: &FKern, c: &Mat, w: PackedView, ap: &[f32], par: bool) {
    let (m, n, k) = (c.m, c.n, c.k);
    let mr = fk.mr;
    let g = grid(m, n, k, mr);
    // i8 blocks must start on a multiple of 4 of k (its layout groups k by 4).
    let kc = k_blocks(k, KC, 4).min(k);
    let np = n_panels(n);
    let ap = ConstPtr(ap.as_ptr());
    run_tasks(&g, par, |tm, tn| {
        let i0 = tm * g.mc;
        let i1 = (i0 + g.mc).min(m);
        let p0 = tn * g.ncp;
        let p1 = (p0 + g.ncp).min(np);
        let mut scratch = match w {
            PackedView::F32(_) => Vec::new(),
            _ => vec![0.0f32; kc * NR],
        };
        let mut k0 = 0;
        while k0 < k {
            let kcur = kc.min(k - k0);
            for jp in p0..p1 {
                let j0 = jp * NR;
                let nr = NR.min(n - j0);
                let off = jp * k * NR + k0 * NR;
                // A W block that feeds one or two A panels is read in place
                // by a widening tile instead of being converted first.
                let direct = match (w, fk.tile_h) {
                    (PackedView::F16(v), Some((h, _))) if i1 - i0 <= 2 * mr => Some((h, v)),
                    (PackedView::BF16(v), Some((_, h))) if i1 - i0 <= 2 * mr => Some((h, v)),
                    _ => None,
                };
                let b: *const f32 = match (direct, w) {
                    (Some(_), _) => std::ptr::null(),
                    (None, PackedView::F32(v)) => v[off..].as_ptr(),
                    (None, PackedView::F16(v)) => {
                        // SAFETY: the panel block holds kcur*32 values; scratch kc*32.
                        unsafe { (fk.cvt_f16)(v[off..].as_ptr(), scratch.as_mut_ptr(), kcur * NR) };
                        scratch.as_ptr()
                    }
                    (None, PackedView::BF16(v)) => {
                        // SAFETY: as above.
                        unsafe {
                            (fk.cvt_bf16)(v[off..].as_ptr(), scratch.as_mut_ptr(), kcur * NR)
                        };
                        scratch.as_ptr()
                    }
                    (None, PackedView::I8 { data, scales, .. }) => {
                        dequant_i8_block(data, scales, k, jp, k0, kcur, &mut scratch);
                        scratch.as_ptr()
                    }
                };
                let mut i = i0;
                while i < i1 {
                    let rows = mr.min(m - i);
                    let st = Store {
                        first: k0 == 0,
                        bias: if c.bias.is_null() {
                            c.bias
                        } else {
                            // SAFETY: j0 < n and bias holds n floats.
                            unsafe { c.bias.add(j0) }
                        },
                    };
                    if let Some((h, v)) = direct {
                        // SAFETY: as below, with the 16-bit panel block holding
                        // kcur*32 values at `off`.
                        unsafe {
                            h(
                                rows,
                                kcur,
                                ap.get().add(i * k + k0 * rows),
                                v[off..].as_ptr(),
                                c.out.get().add(i * c.ldc + j0),
                                c.ldc,
                                nr,
                                st,
                            );
                        }
                        i += rows;
                        continue;
                    }
                    // SAFETY: panel i/mr of packed A holds [k][rows]; b holds
                    // kcur*32 floats; out rows i..i+rows, columns j0..j0+nr are
                    // in bounds and belong to this task only.
                    unsafe {
                        (fk.tile)(
                            rows,
                            kcur,
                            ap.get().add(i * k + k0 * rows),
                            b,
                            c.out.get().add(i * c.ldc + j0),
                            c.ldc,
                            nr,
                            st,
                        );
                    }
                    i += rows;
                }
            }
            k0 += kcur;
        }
    });
}

/// Widen one `[kcur][32]` block of int8 panel `jp` (layout `[k4][32][4]`) to f32
/// times the column scales (the non-VNNI consumer of the int8 layout).
fn dequant_i8_block(
    data: &[i8],
    scales: &[f32],
    k: usize,
    jp: usize,
    k0: usize,
    kcur: usize,
    dst: &mut [f32],
) {
    let k4 = k.div_ceil(4);
    let panel = &data[jp * k4 * NR * 4..(jp + 1) * k4 * NR * 4];
    let sc = &scales[jp * NR..jp * NR + NR];
    for q in 0..kcur {
        let kk = k0 + q;
        let base = (kk / 4) * NR * 4 + kk % 4;
        for j in 0..NR {
            dst[q * NR + j] = panel[base + j * 4] as f32 * sc[j];
        }
    }
}

/// One A row panel being quantised: index, packed words, row scales, zero points.
type PanelQuant<'a> = (usize, ((&'a mut [i32], &'a mut [f32]), &'a mut [i32]));

fn blocked_i8(isa: Isa, c: &Mat, data: &[i8], scales: &[f32], colsum: &[i32]) {
    let (m, n, k) = (c.m, c.n, c.k);
    #[cfg(target_arch = "x86_64")]
    let mr = super::gemm_x86::MR_512;
    #[cfg(not(target_arch = "x86_64"))]
    let mr = 1;
    let k4 = k.div_ceil(4);
    let ldu = k4 * 4;
    let np_m = m.div_ceil(mr);
    let par = rayon::current_num_threads() > 1 && 2 * m * n * k >= 1 << 22;
    // Quantise and pack one row panel at a time, so the u8 rows stay in L1:
    // panel p holds [k4][rows_p] 4-byte words at p*mr*k4.
    let pack = |(p, ((dst, sp), zp)): PanelQuant| {
        let r0 = p * mr;
        let rows = sp.len();
        with_scratch(&SCRATCH_U8, ldu, |u| {
            for i in 0..rows {
                // SAFETY: row `r0 + i < m` of `a` holds `k` floats (checked in `gemm_ex`).
                let x = unsafe { std::slice::from_raw_parts(c.a.add((r0 + i) * c.lda), k) };
                (sp[i], zp[i]) = quantize_row(isa, x, &mut u[..k]);
                u[k..].fill(0);
                for (q, w) in u.chunks_exact(4).enumerate() {
                    dst[q * rows + i] = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                }
            }
        });
    };
    with_scratch(&SCRATCH_AW, np_m * mr * k4, |ap| {
        with_scratch(&SCRATCH_S, m, |s| {
            with_scratch(&SCRATCH_Z, m, |z| {
                if par && m * k >= 1 << 16 {
                    ap.par_chunks_mut(mr * k4)
                        .zip(s.par_chunks_mut(mr))
                        .zip(z.par_chunks_mut(mr))
                        .enumerate()
                        .for_each(pack);
                } else {
                    ap.chunks_mut(mr * k4)
                        .zip(s.chunks_mut(mr))
                        .zip(z.chunks_mut(mr))
                        .enumerate()
                        .for_each(pack);
                }
                blocked_i8_run(c, mr, ap, (s, z), (data, scales, colsum), par);
            })
        })
    });
}

/// The task loop of the int8 GEMM over packed A words `ap`.
// The SIMD bodies are x86-only; elsewhere (aarch64) their inputs go unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn blocked_i8_run(
    c: &Mat,
    mr: usize,
    ap: &[i32],
    (s, z): (&[f32], &[i32]),
    (data, scales, colsum): (&[i8], &[f32], &[i32]),
    par: bool,
) {
    let (m, n, k) = (c.m, c.n, c.k);
    let k4 = k.div_ceil(4);
    let g = grid(m, n, k / 4, mr);
    let np = n_panels(n);
    let npad = np * NR;
    let kc4 = KC_I8 / 4;
    let (ap, sp, zp) = (
        ConstPtr(ap.as_ptr()),
        ConstPtr(s.as_ptr()),
        ConstPtr(z.as_ptr()),
    );
    let (dp, scp, csp) = (
        ConstPtr(data.as_ptr()),
        ConstPtr(scales.as_ptr()),
        ConstPtr(colsum.as_ptr()),
    );
    let _ = (&ap, &sp, &zp, &dp, &scp, &csp, npad, kc4, mr);
    run_tasks(&g, par, |tm, tn| {
        let i0 = tm * g.mc;
        let i1 = (i0 + g.mc).min(m);
        let p0 = tn * g.ncp;
        let p1 = (p0 + g.ncp).min(np);
        let mut q0 = 0;
        while q0 < k4 {
            let qcur = kc4.min(k4 - q0);
            let kb = q0 / kc4;
            for jp in p0..p1 {
                let j0 = jp * NR;
                let nr = NR.min(n - j0);
                let mut i = i0;
                while i < i1 {
                    let rows = mr.min(m - i);
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: VNNI checked by the caller (`use_vnni`); packed A
                    // panel i/mr holds [k4][rows] words, the W panel block
                    // qcur*128 bytes; epilogue vectors cover the 32 (padded)
                    // columns and `rows` rows; the out tile is this task's only.
                    unsafe {
                        let st = Store {
                            first: q0 == 0,
                            bias: if c.bias.is_null() {
                                c.bias
                            } else {
                                c.bias.add(j0)
                            },
                        };
                        let e = I8Epi {
                            row_s: sp.get().add(i),
                            row_z: zp.get().add(i),
                            col_s: scp.get().add(j0),
                            colsum: csp.get().add(kb * npad + j0),
                        };
                        super::gemm_x86::tile_i8_avx512(
                            rows,
                            qcur,
                            ap.get().add(i * k4 + q0 * rows),
                            dp.get().add(jp * k4 * NR * 4 + q0 * NR * 4),
                            c.out.get().add(i * c.ldc + j0),
                            c.ldc,
                            nr,
                            st,
                            e,
                        );
                    }
                    i += rows;
                }
            }
            q0 += qcur;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use encdec_core::testing::{compare, random_vec, Tol};

    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        w: Weights,
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let mut out = vec![0.0f32; m * n];
        gemm_reference(m, n, k, a, w, bias, &mut out);
        out.iter().map(|&x| x as f64).collect()
    }

    struct Case {
        w32: Vec<f32>,
        w16: Vec<f16>,
        wb16: Vec<bf16>,
        wi8: Vec<i8>,
        scales: Vec<f32>,
    }

    fn case(seed: u64, n: usize, k: usize) -> Case {
        let w32 = random_vec(seed, n * k);
        let w16 = w32.iter().map(|&x| f16::from_f32(x)).collect();
        let wb16 = w32.iter().map(|&x| bf16::from_f32(x)).collect();
        let mut wi8 = vec![0i8; n * k];
        let mut scales = vec![0.0f32; n];
        for j in 0..n {
            let row = &w32[j * k..(j + 1) * k];
            let amax = row.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scales[j] = s;
            for (d, &x) in wi8[j * k..(j + 1) * k].iter_mut().zip(row) {
                *d = (x / s).round().clamp(-127.0, 127.0) as i8;
            }
        }
        Case {
            w32,
            w16,
            wb16,
            wi8,
            scales,
        }
    }

    /// Run one shape on every dtype, ISA level, plain and packed weights.
    fn check_shape(m: usize, n: usize, k: usize, with_bias: bool, seed: u64) {
        let a = random_vec(seed, m * k);
        let bias_v = random_vec(seed + 1, n);
        let bias = with_bias.then_some(&bias_v[..]);
        let cs = case(seed + 2, n, k);
        let dtypes: [(&str, Weights, Tol); 4] = [
            ("f32", Weights::F32(&cs.w32), Tol::F32),
            ("f16", Weights::F16(&cs.w16), Tol::F32),
            ("bf16", Weights::BF16(&cs.wb16), Tol::F32),
            (
                "i8",
                Weights::I8 {
                    data: &cs.wi8,
                    scales: &cs.scales,
                },
                Tol::F32,
            ),
        ];
        for (name, w, tol) in dtypes {
            let want = reference(m, n, k, &a, w, bias);
            let packed = PackedWeights::new(n, k, w);
            let packed32 = PackedWeights::new_f32(n, k, w);
            for isa in isa::available() {
                let int8_quant = matches!(w, Weights::I8 { .. }) && use_vnni(isa);
                // Activation quantisation: compare with a looser bound here and
                // with a tight one against dequantised activations below.
                let tol = if int8_quant {
                    Tol {
                        rel_l2: 1e-2,
                        abs: 3e-2 * (k as f64).sqrt().max(1.0),
                        rel: 0.0,
                    }
                } else {
                    tol
                };
                let wrefs = [
                    ("plain", WeightsRef::Plain(w)),
                    ("packed", WeightsRef::Packed(&packed)),
                    ("packed32", WeightsRef::Packed(&packed32)),
                ];
                for (how, wr) in wrefs {
                    let mut out = vec![f32::NAN; m * n];
                    gemm_ex(isa, m, n, k, &a, k, wr, bias, &mut out, n);
                    let what = format!(
                        "gemm {name} {how} isa={} m={m} n={n} k={k} bias={with_bias} seed={seed}",
                        isa.name()
                    );
                    if let Err(e) = compare(&what, &out, &want, tol) {
                        panic!("{e}");
                    }
                    if int8_quant {
                        // Against the reference on the dequantised activations
                        // the only error left is f32 rounding.
                        let mut adq = vec![0.0f32; m * k];
                        let mut u = vec![0u8; k];
                        for i in 0..m {
                            let (s, z) = quantize_row_scalar(&a[i * k..(i + 1) * k], &mut u);
                            for q in 0..k {
                                adq[i * k + q] = s * (u[q] as f32 - z as f32);
                            }
                        }
                        let want_q = reference(m, n, k, &adq, w, bias);
                        let tol_q = Tol {
                            rel_l2: 1e-5,
                            abs: 1e-4,
                            rel: 1e-4,
                        };
                        if let Err(e) =
                            compare(&format!("{what} (dequantised a)"), &out, &want_q, tol_q)
                        {
                            panic!("{e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_matches_reference_small_m() {
        let mut seed = 100;
        for &m in &[1, 2, 3, 4, 5, 15] {
            for &(n, k) in &[
                (1, 1),
                (7, 31),
                (33, 7),
                (100, 257),
                (257, 100),
                (31, 513),
                (64, 64),
            ] {
                check_shape(m, n, k, seed % 2 == 0, seed);
                seed += 1;
            }
        }
    }

    #[test]
    fn gemm_matches_reference_large_m() {
        let mut seed = 1000;
        for &m in &[16, 17, 33, 64, 129] {
            for &(n, k) in &[(1, 7), (7, 33), (33, 1), (100, 257), (257, 100), (31, 513)] {
                check_shape(m, n, k, seed % 2 == 1, seed);
                seed += 1;
            }
        }
    }

    #[test]
    fn gemm_multiple_k_blocks_and_tasks() {
        // k > KC (several K blocks) and > KC_I8; n over several tasks.
        check_shape(40, 96, 1100, true, 7);
        check_shape(3, 70, 1100, false, 8);
    }

    #[test]
    fn gemm_strided_and_k0() {
        let (m, n, k, lda, ldc) = (20, 37, 45, 50, 40);
        let a = random_vec(1, m * lda);
        let w = random_vec(2, n * k);
        let bias = random_vec(3, n);
        let dense: Vec<f32> = (0..m)
            .flat_map(|i| a[i * lda..i * lda + k].to_vec())
            .collect();
        for isa in isa::available() {
            for mm in [m, 3] {
                let want = reference(mm, n, k, &dense, Weights::F32(&w), Some(&bias));
                let mut out = vec![f32::NAN; mm * ldc];
                gemm_ex(
                    isa,
                    mm,
                    n,
                    k,
                    &a,
                    lda,
                    WeightsRef::Plain(Weights::F32(&w)),
                    Some(&bias),
                    &mut out,
                    ldc,
                );
                let got: Vec<f32> = (0..mm)
                    .flat_map(|i| out[i * ldc..i * ldc + n].to_vec())
                    .collect();
                compare(
                    &format!("strided isa={} m={mm}", isa.name()),
                    &got,
                    &want,
                    Tol::F32,
                )
                .unwrap();
                // Padding between rows is never written.
                assert!(out[n..ldc].iter().all(|x| x.is_nan()));
            }
        }
        let mut out = vec![f32::NAN; 2 * 3];
        gemm(
            2,
            3,
            0,
            &[],
            Weights::F32(&[]),
            Some(&[1.0, 2.0, 3.0]),
            &mut out,
        );
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn quantize_simd_matches_scalar() {
        for (seed, k) in [(1u64, 1usize), (2, 17), (3, 100), (4, 1000)] {
            let mut x = random_vec(seed, k);
            if seed == 3 {
                x.iter_mut().for_each(|v| *v = v.abs()); // post-ReLU-like, z = 0
            }
            let mut u0 = vec![0u8; k];
            let p0 = quantize_row_scalar(&x, &mut u0);
            for isa in isa::available() {
                let mut u1 = vec![0u8; k];
                let p1 = quantize_row(isa, &x, &mut u1);
                assert_eq!((p0, &u0), (p1, &u1), "isa {}", isa.name());
            }
            let (s, z) = p0;
            for (&v, &q) in x.iter().zip(&u0) {
                assert!((v - s * (q as f32 - z as f32)).abs() <= 0.5001 * s);
            }
        }
    }

    /// Microkernel throughput on L1/L2-resident operands (not a correctness
    /// test): `cargo test -p encdec-cpu --release -- --ignored --nocapture tile_speed`.
    #[test]
    #[ignore = "a throughput measurement, not a correctness test: run with --ignored --nocapture"]
    #[cfg(target_arch = "x86_64")]
    fn tile_speed() {
        use std::time::Instant;
        if !isa::has_avx512_vnni() {
            return;
        }
        let kc: usize = std::env::var("KC")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256);
        let panels = 8;
        let a = random_vec(1, 14 * kc * panels);
        let bv = random_vec(2, kc * NR + 16);
        let sh: usize = std::env::var("SHIFT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let off = (16 - (bv.as_ptr() as usize % 64) / 4) % 16 + sh;
        let b = &bv[off..];
        let mut c = vec![0.0f32; 14 * panels * NR];
        let st = Store {
            first: false,
            bias: std::ptr::null(),
        };
        let mut best = f64::MAX;
        for _ in 0..50 {
            let t = Instant::now();
            for _ in 0..100 {
                for p in 0..panels {
                    // SAFETY: buffers sized above; AVX-512 checked.
                    unsafe {
                        super::super::gemm_x86::tile_f32_avx512(
                            14,
                            kc,
                            a[p * 14 * kc..].as_ptr(),
                            b.as_ptr(),
                            c[p * 14 * NR..].as_mut_ptr(),
                            NR,
                            NR,
                            st,
                        )
                    };
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let flops = (100 * panels * 2 * 14 * NR * kc) as f64;
        println!(
            "f32 tile 14x32 kc={kc}: {:.1} GFLOP/s (one core, best of 50)",
            flops / best / 1e9
        );
        let a8: Vec<i32> = (0..14 * kc / 4 * panels)
            .map(|i| (i as i32).wrapping_mul(2654435761u32 as i32))
            .collect();
        let b8v: Vec<i8> = (0..kc * NR + 64).map(|i| (i % 251) as i8).collect();
        let off8 = (64 - b8v.as_ptr() as usize % 64) % 64 + 4 * sh;
        let b8 = &b8v[off8..];
        let e = I8Epi {
            row_s: a.as_ptr(),
            row_z: a8.as_ptr(),
            col_s: b.as_ptr(),
            colsum: a8.as_ptr(),
        };
        let mut best = f64::MAX;
        for _ in 0..50 {
            let t = Instant::now();
            for _ in 0..100 {
                for p in 0..panels {
                    // SAFETY: buffers sized above; VNNI checked.
                    unsafe {
                        super::super::gemm_x86::tile_i8_avx512(
                            14,
                            kc / 4,
                            a8[p * 14 * kc / 4..].as_ptr(),
                            b8.as_ptr(),
                            c[p * 14 * NR..].as_mut_ptr(),
                            NR,
                            NR,
                            st,
                            e,
                        )
                    };
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "i8 tile 14x32 kc={kc}: {:.1} GOP/s (one core, best of 50)",
            flops / best / 1e9
        );
    }
}
