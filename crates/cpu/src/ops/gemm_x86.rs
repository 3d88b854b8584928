//! x86-64 GEMM kernels: AVX-512 (f32 FMA, VNNI int8) and AVX2+FMA.
//!
//! Three kinds of kernel, all called by the driver in `gemm.rs`:
//! - `tile_*`: register-tiled microkernels over packed A (`[k][mr]`) and packed
//!   W panels (`[k][32]`, or `[k4][32][4]` bytes for int8), writing an
//!   `mr x nr` tile of C (nr <= 32) with bias or accumulate.
//! - `dot_*`: the GEMV path for a few rows of A against W in its own `[n, k]`
//!   layout (no packing): vectors run along k, a row of W is streamed once for
//!   up to 4 rows of A, and each (row, column) is reduced horizontally at the end.
//! - `cvt_*`, `quantize_row_*`: f16/bf16 to f32 conversion of packed blocks and
//!   the per-row u8 quantisation of activations.
//!
//! All functions are `unsafe`: they take raw pointers whose extents the caller
//! (the driver) guarantees, and require the CPU features they are compiled for.

#![allow(clippy::too_many_arguments)]
// Register tiles index several arrays with the same counter; loops read clearer.
#![allow(clippy::needless_range_loop)]

use super::gemm::{I8Epi, QRows, Store, WElem};
use super::gemm_pack::NR;
use half::{bf16, f16};
use std::arch::x86_64::*;

// ---------------------------------------------------------------------------
// Element loads (f32 / f16 / bf16 / i8 weights) for the dot kernels.
// ---------------------------------------------------------------------------

/// A weight element the dot kernels can widen to f32 in registers.
pub(crate) trait WLoad: WElem {
    /// 16 elements at `p` widened to f32 (needs AVX-512F/BW).
    ///
    /// # Safety
    /// `p..p+16` readable; caller has AVX-512F/BW.
    unsafe fn load16(p: *const Self) -> __m512;
    /// The first `mask.count_ones()` of 16 elements (needs AVX-512F/BW).
    ///
    /// # Safety
    /// The masked-in elements are readable; caller has AVX-512F/BW.
    unsafe fn load16_mask(p: *const Self, mask: u16) -> __m512;
    /// 8 elements at `p` widened to f32 (needs AVX2; f16 needs F16C).
    ///
    /// # Safety
    /// `p..p+8` readable; caller has AVX2 (+F16C for f16).
    unsafe fn load8(p: *const Self) -> __m256;
}

impl WLoad for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load16_mask(p: *const Self, mask: u16) -> __m512 {
        _mm512_maskz_loadu_ps(mask, p)
    }
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        _mm256_loadu_ps(p)
    }
}

impl WLoad for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn load16_mask(p: *const Self, mask: u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
    }
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

impl WLoad for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn load16_mask(p: *const Self, mask: u16) -> __m512 {
        let h = _mm256_maskz_loadu_epi16(mask, p as *const i16);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// int8 weights widened to f32 (the per-row scale is applied after the dot).
impl WLoad for i8 {
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
    }
    #[inline(always)]
    unsafe fn load16_mask(p: *const Self, mask: u16) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p)))
    }
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    }
}

/// How far ahead the GEMV kernels prefetch each row of W.
const PF_BYTES: usize = 1024;

#[inline(always)]
fn mask16(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

// ---------------------------------------------------------------------------
// AVX-512 f32 microkernel: MR x 32 (2 zmm per row), MR <= 14.
// ---------------------------------------------------------------------------

/// Rows of the AVX-512 f32 microkernel: 14 x 2 accumulators + 2 B vectors
/// + 1 broadcast = 31 of the 32 zmm registers.
pub(crate) const MR_512: usize = 14;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn tile_f32_512<T: WLoad, const MR: usize>(
    kc: usize,
    a: *const f32,
    b: *const T,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    for i in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
    }
    let mut c0 = [_mm512_setzero_ps(); MR];
    let mut c1 = [_mm512_setzero_ps(); MR];
    let mut ap = a;
    let mut bp = b;
    // Two k-steps per trip: half the loop overhead, and the next step's B
    // loads issue while this step's FMAs drain.
    for _ in 0..kc / 2 {
        for u in 0..2 {
            let b0 = T::load16(bp.add(u * NR));
            let b1 = T::load16(bp.add(u * NR + 16));
            for i in 0..MR {
                let av = _mm512_set1_ps(*ap.add(u * MR + i));
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
        }
        ap = ap.add(2 * MR);
        bp = bp.add(2 * NR);
    }
    if kc % 2 == 1 {
        let b0 = T::load16(bp);
        let b1 = T::load16(bp.add(16));
        for i in 0..MR {
            let av = _mm512_set1_ps(*ap.add(i));
            c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
        }
    }
    let m0 = mask16(nr);
    let m1 = mask16(nr.saturating_sub(16));
    let (bias0, bias1) = if st.first && !st.bias.is_null() {
        (
            _mm512_maskz_loadu_ps(m0, st.bias),
            _mm512_maskz_loadu_ps(m1, st.bias.add(16)),
        )
    } else {
        (_mm512_setzero_ps(), _mm512_setzero_ps())
    };
    for i in 0..MR {
        let p = c.add(i * ldc);
        let (o0, o1) = if st.first {
            (bias0, bias1)
        } else {
            (
                _mm512_maskz_loadu_ps(m0, p),
                _mm512_maskz_loadu_ps(m1, p.add(16)),
            )
        };
        _mm512_mask_storeu_ps(p, m0, _mm512_add_ps(c0[i], o0));
        _mm512_mask_storeu_ps(p.add(16), m1, _mm512_add_ps(c1[i], o1));
    }
}

/// `C[mr x nr] (+)= A_panel[kc x mr] * B_panel[kc x 32]` with AVX-512.
///
/// # Safety
/// AVX-512F present; `a` holds `kc*mr`, `b` holds `kc*32` floats; `c` rows
/// `0..mr` with stride `ldc` hold `nr` writable floats; `st.bias` (if non-null) `nr`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn tile_f32_avx512(
    mr: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    match mr {
        14 => tile_f32_512::<f32, 14>(kc, a, b, c, ldc, nr, st),
        13 => tile_f32_512::<f32, 13>(kc, a, b, c, ldc, nr, st),
        12 => tile_f32_512::<f32, 12>(kc, a, b, c, ldc, nr, st),
        11 => tile_f32_512::<f32, 11>(kc, a, b, c, ldc, nr, st),
        10 => tile_f32_512::<f32, 10>(kc, a, b, c, ldc, nr, st),
        9 => tile_f32_512::<f32, 9>(kc, a, b, c, ldc, nr, st),
        8 => tile_f32_512::<f32, 8>(kc, a, b, c, ldc, nr, st),
        7 => tile_f32_512::<f32, 7>(kc, a, b, c, ldc, nr, st),
        6 => tile_f32_512::<f32, 6>(kc, a, b, c, ldc, nr, st),
        5 => tile_f32_512::<f32, 5>(kc, a, b, c, ldc, nr, st),
        4 => tile_f32_512::<f32, 4>(kc, a, b, c, ldc, nr, st),
        3 => tile_f32_512::<f32, 3>(kc, a, b, c, ldc, nr, st),
        2 => tile_f32_512::<f32, 2>(kc, a, b, c, ldc, nr, st),
        1 => tile_f32_512::<f32, 1>(kc, a, b, c, ldc, nr, st),
        _ => unreachable!("tile rows {mr}"),
    }
}

/// [`tile_f32_avx512`] reading f16 (`BF = false`) or bf16 (`BF = true`)
/// panels directly, widening each 32-wide k-row in registers (used when a W
/// block feeds only one or two A panels, so converting it first costs more).
///
/// # Safety
/// As [`tile_f32_avx512`], with `b` holding `kc*32` 16-bit values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn tile_h_avx512<const BF: bool>(
    mr: usize,
    kc: usize,
    a: *const f32,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    macro_rules! go {
        ($t:ty) => {{
            let b = b as *const $t;
            match mr {
                14 => tile_f32_512::<$t, 14>(kc, a, b, c, ldc, nr, st),
                13 => tile_f32_512::<$t, 13>(kc, a, b, c, ldc, nr, st),
                12 => tile_f32_512::<$t, 12>(kc, a, b, c, ldc, nr, st),
                11 => tile_f32_512::<$t, 11>(kc, a, b, c, ldc, nr, st),
                10 => tile_f32_512::<$t, 10>(kc, a, b, c, ldc, nr, st),
                9 => tile_f32_512::<$t, 9>(kc, a, b, c, ldc, nr, st),
                8 => tile_f32_512::<$t, 8>(kc, a, b, c, ldc, nr, st),
                7 => tile_f32_512::<$t, 7>(kc, a, b, c, ldc, nr, st),
                6 => tile_f32_512::<$t, 6>(kc, a, b, c, ldc, nr, st),
                5 => tile_f32_512::<$t, 5>(kc, a, b, c, ldc, nr, st),
                4 => tile_f32_512::<$t, 4>(kc, a, b, c, ldc, nr, st),
                3 => tile_f32_512::<$t, 3>(kc, a, b, c, ldc, nr, st),
                2 => tile_f32_512::<$t, 2>(kc, a, b, c, ldc, nr, st),
                1 => tile_f32_512::<$t, 1>(kc, a, b, c, ldc, nr, st),
                _ => unreachable!("tile rows {mr}"),
            }
        }};
    }
    if BF {
        go!(bf16)
    } else {
        go!(f16)
    }
}

// ---------------------------------------------------------------------------
// AVX-512 VNNI int8 microkernel: MR x 32 i32 accumulators, vpdpbusd.
// ---------------------------------------------------------------------------

#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_i8_512<const MR: usize>(
    kc4: usize,
    a: *const i32,
    b: *const i8,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
    e: I8Epi,
) {
    for i in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
    }
    let mut c0 = [_mm512_setzero_si512(); MR];
    let mut c1 = [_mm512_setzero_si512(); MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc4 / 2 {
        for u in 0..2 {
            let b0 = _mm512_loadu_si512(bp.add(u * NR * 4) as *const __m512i);
            let b1 = _mm512_loadu_si512(bp.add(u * NR * 4 + 64) as *const __m512i);
            for i in 0..MR {
                let av = _mm512_set1_epi32(*ap.add(u * MR + i));
                c0[i] = _mm512_dpbusd_epi32(c0[i], av, b0);
                c1[i] = _mm512_dpbusd_epi32(c1[i], av, b1);
            }
        }
        ap = ap.add(2 * MR);
        bp = bp.add(2 * NR * 4);
    }
    if kc4 % 2 == 1 {
        let b0 = _mm512_loadu_si512(bp as *const __m512i);
        let b1 = _mm512_loadu_si512(bp.add(64) as *const __m512i);
        for i in 0..MR {
            let av = _mm512_set1_epi32(*ap.add(i));
            c0[i] = _mm512_dpbusd_epi32(c0[i], av, b0);
            c1[i] = _mm512_dpbusd_epi32(c1[i], av, b1);
        }
    }
    let m0 = mask16(nr);
    let m1 = mask16(nr.saturating_sub(16));
    let cs0 = _mm512_maskz_loadu_epi32(m0, e.colsum);
    let cs1 = _mm512_maskz_loadu_epi32(m1, e.colsum.add(16));
    let sw0 = _mm512_maskz_loadu_ps(m0, e.col_s);
    let sw1 = _mm512_maskz_loadu_ps(m1, e.col_s.add(16));
    let (bias0, bias1) = if st.first && !st.bias.is_null() {
        (
            _mm512_maskz_loadu_ps(m0, st.bias),
            _mm512_maskz_loadu_ps(m1, st.bias.add(16)),
        )
    } else {
        (_mm512_setzero_ps(), _mm512_setzero_ps())
    };
    for i in 0..MR {
        let z = _mm512_set1_epi32(*e.row_z.add(i));
        let s = _mm512_set1_ps(*e.row_s.add(i));
        let v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(c0[i], _mm512_mullo_epi32(z, cs0)));
        let v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(c1[i], _mm512_mullo_epi32(z, cs1)));
        let p = c.add(i * ldc);
        let (o0, o1) = if st.first {
            (bias0, bias1)
        } else {
            (
                _mm512_maskz_loadu_ps(m0, p),
                _mm512_maskz_loadu_ps(m1, p.add(16)),
            )
        };
        let r0 = _mm512_fmadd_ps(v0, _mm512_mul_ps(s, sw0), o0);
        let r1 = _mm512_fmadd_ps(v1, _mm512_mul_ps(s, sw1), o1);
        _mm512_mask_storeu_ps(p, m0, r0);
        _mm512_mask_storeu_ps(p.add(16), m1, r1);
    }
}

/// `C[mr x nr] (+)= dequant(A_panel[kc4][mr] u8x4 . B_panel[kc4][32][4] i8)`.
///
/// # Safety
/// AVX-512F and VNNI present; `a` holds `kc4*mr` words, `b` holds `kc4*128`
/// bytes; `c`, `st.bias` as for [`tile_f32_avx512`]; `e` pointers cover `mr`
/// rows and 32 columns.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(crate) unsafe fn tile_i8_avx512(
    mr: usize,
    kc4: usize,
    a: *const i32,
    b: *const i8,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
    e: I8Epi,
) {
    match mr {
        14 => tile_i8_512::<14>(kc4, a, b, c, ldc, nr, st, e),
        13 => tile_i8_512::<13>(kc4, a, b, c, ldc, nr, st, e),
        12 => tile_i8_512::<12>(kc4, a, b, c, ldc, nr, st, e),
        11 => tile_i8_512::<11>(kc4, a, b, c, ldc, nr, st, e),
        10 => tile_i8_512::<10>(kc4, a, b, c, ldc, nr, st, e),
        9 => tile_i8_512::<9>(kc4, a, b, c, ldc, nr, st, e),
        8 => tile_i8_512::<8>(kc4, a, b, c, ldc, nr, st, e),
        7 => tile_i8_512::<7>(kc4, a, b, c, ldc, nr, st, e),
        6 => tile_i8_512::<6>(kc4, a, b, c, ldc, nr, st, e),
        5 => tile_i8_512::<5>(kc4, a, b, c, ldc, nr, st, e),
        4 => tile_i8_512::<4>(kc4, a, b, c, ldc, nr, st, e),
        3 => tile_i8_512::<3>(kc4, a, b, c, ldc, nr, st, e),
        2 => tile_i8_512::<2>(kc4, a, b, c, ldc, nr, st, e),
        1 => tile_i8_512::<1>(kc4, a, b, c, ldc, nr, st, e),
        _ => unreachable!("tile rows {mr}"),
    }
}

// ---------------------------------------------------------------------------
// AVX-512 dot (GEMV) kernels on the unpacked `[n, k]` weights.
// ---------------------------------------------------------------------------

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn dot_block_512<T: WLoad, const R: usize, const J: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    w: *const T,
    c: *mut f32,
    ldc: usize,
    col_scale: *const f32,
    bias: *const f32,
) {
    let mut acc = [[_mm512_setzero_ps(); J]; R];
    let mut kk = 0;
    // Rows of W are short separate streams (one 4 KiB page for an int8 row
    // of 4096); prefetching ahead keeps enough lines in flight from DRAM.
    let pf = PF_BYTES / std::mem::size_of::<T>();
    while kk + 16 <= k {
        let mut wv = [_mm512_setzero_ps(); J];
        for (j, v) in wv.iter_mut().enumerate() {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(j * k + kk + pf) as *const i8);
            *v = T::load16(w.add(j * k + kk));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_loadu_ps(a.add(r * lda + kk));
            for j in 0..J {
                row[j] = _mm512_fmadd_ps(av, wv[j], row[j]);
            }
        }
        kk += 16;
    }
    if kk < k {
        let m = mask16(k - kk);
        let mut wv = [_mm512_setzero_ps(); J];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = T::load16_mask(w.add(j * k + kk), m);
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_maskz_loadu_ps(m, a.add(r * lda + kk));
            for j in 0..J {
                row[j] = _mm512_fmadd_ps(av, wv[j], row[j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let mut s = _mm512_reduce_add_ps(*v);
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

/// `C[r, j] = sum_k A[r, k] W[j, k] * col_scale[j] + bias[j]` for `rows <= 4`
/// rows of A and the `cols` columns of W starting at `w`.
///
/// # Safety
/// AVX-512F/BW/VL (+F16C) present; `a` rows `0..rows` (stride `lda`) hold `k`
/// floats; `w` holds `cols*k` elements; `c` rows (stride `ldc`) hold `cols`
/// writable floats; `col_scale`/`bias` are null or hold `cols` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn dot_avx512<T: WLoad>(
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
    let off = |p: *const f32, j: usize| if p.is_null() { p } else { p.add(j) };
    let mut j = 0;
    macro_rules! run {
        ($r:literal, $jj:literal) => {{
            while j + $jj <= cols {
                dot_block_512::<T, $r, $jj>(
                    k,
                    a,
                    lda,
                    w.add(j * k),
                    c.add(j),
                    ldc,
                    off(col_scale, j),
                    off(bias, j),
                );
                j += $jj;
            }
            while j < cols {
                dot_block_512::<T, $r, 1>(
                    k,
                    a,
                    lda,
                    w.add(j * k),
                    c.add(j),
                    ldc,
                    off(col_scale, j),
                    off(bias, j),
                );
                j += 1;
            }
        }};
    }
    match rows {
        1 => run!(1, 8),
        2 => run!(2, 6),
        3 => run!(3, 4),
        4 => run!(4, 4),
        _ => unreachable!("dot rows {rows}"),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_i8_block_512<const R: usize, const J: usize>(
    k: usize,
    q: QRows,
    w: *const i8,
    c: *mut f32,
    ldc: usize,
    col_scale: *const f32,
    bias: *const f32,
) {
    // i32 stays exact while 2 * 255 * 128 * (k of one segment) < 2^31.
    const SEG: usize = 16384;
    let ones = _mm512_set1_epi8(1);
    let mut tot = [[0i64; J]; R];
    let mut s0 = 0;
    while s0 < k {
        let s1 = (s0 + SEG).min(k);
        let mut acc = [[_mm512_setzero_si512(); J]; R];
        let mut cs = [_mm512_setzero_si512(); J];
        let mut kk = s0;
        while kk < s1 {
            let left = s1 - kk;
            let m: u64 = if left >= 64 {
                u64::MAX
            } else {
                (1u64 << left) - 1
            };
            let mut wv = [_mm512_setzero_si512(); J];
            for j in 0..J {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(j * k + kk + PF_BYTES));
                wv[j] = _mm512_maskz_loadu_epi8(m, w.add(j * k + kk));
                cs[j] = _mm512_dpbusd_epi32(cs[j], ones, wv[j]);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_maskz_loadu_epi8(m, q.u.add(r * q.ldu + kk) as *const i8);
                for j in 0..J {
                    row[j] = _mm512_dpbusd_epi32(row[j], av, wv[j]);
                }
            }
            kk += 64;
        }
        // One horizontal sum per output: subtract z * colsum lane-wise first
        // (|lane| <= 2 * 255 * 128 * SEG / 16 fits in i32).
        for j in 0..J {
            for r in 0..R {
                let z = _mm512_set1_epi32(*q.z.add(r));
                let v = _mm512_sub_epi32(acc[r][j], _mm512_mullo_epi32(z, cs[j]));
                tot[r][j] += _mm512_reduce_add_epi32(v) as i64;
            }
        }
        s0 = s1;
    }
    for (r, row) in tot.iter().enumerate() {
        let s = *q.s.add(r);
        for (j, &t) in row.iter().enumerate() {
            let mut v = t as f32 * (s * *col_scale.add(j));
            if !bias.is_null() {
                v += *bias.add(j);
            }
            *c.add(r * ldc + j) = v;
        }
    }
}

/// Int8 GEMV: `C[r, j] = s_r * scale_j * sum_k (u[r,k] - z_r) W[j,k] + bias[j]`.
///
/// # Safety
/// AVX-512F/BW and VNNI present; `q` covers `rows` (<= 4) rows of `k` bytes
/// each; `w` holds `cols*k` bytes; `col_scale` holds `cols` floats; `c`,
/// `bias` as in [`dot_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_i8_avx512(
    rows: usize,
    cols: usize,
    k: usize,
    q: QRows,
    w: *const i8,
    c: *mut f32,
    ldc: usize,
    col_scale: *const f32,
    bias: *const f32,
) {
    let off = |p: *const f32, j: usize| if p.is_null() { p } else { p.add(j) };
    let mut j = 0;
    macro_rules! run {
        ($r:literal, $jj:literal) => {{
            while j + $jj <= cols {
                dot_i8_block_512::<$r, $jj>(
                    k,
                    q,
                    w.add(j * k),
                    c.add(j),
                    ldc,
                    col_scale.add(j),
                    off(bias, j),
                );
                j += $jj;
            }
            while j < cols {
                dot_i8_block_512::<$r, 1>(
                    k,
                    q,
                    w.add(j * k),
                    c.add(j),
                    ldc,
                    col_scale.add(j),
                    off(bias, j),
                );
                j += 1;
            }
        }};
    }
    match rows {
        1 => run!(1, 8),
        2 => run!(2, 6),
        3 => run!(3, 4),
        4 => run!(4, 4),
        _ => unreachable!("dot rows {rows}"),
    }
}

/// Quantise one row to u8 with the scalar rule of `gemm::quant_params`
/// (`u = clamp(round_even(x * inv + z), 0, 255)`), bit-identical to it.
///
/// # Safety
/// AVX-512F/BW present; `x` holds `k` floats, `u` has `k` writable bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn quantize_row_avx512(x: *const f32, k: usize, u: *mut u8) -> (f32, i32) {
    let mut lo = _mm512_setzero_ps();
    let mut hi = _mm512_setzero_ps();
    let mut kk = 0;
    while kk < k {
        let m = mask16(k - kk);
        let v = _mm512_maskz_loadu_ps(m, x.add(kk));
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
        kk += 16;
    }
    let (s, inv, z) = super::gemm::quant_params(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    let vinv = _mm512_set1_ps(inv);
    let vz = _mm512_set1_ps(z as f32);
    let zero = _mm512_setzero_ps();
    let top = _mm512_set1_ps(255.0);
    let mut kk = 0;
    while kk < k {
        let m = mask16(k - kk);
        let v = _mm512_maskz_loadu_ps(m, x.add(kk));
        let t = _mm512_add_ps(_mm512_mul_ps(v, vinv), vz);
        let t = _mm512_min_ps(_mm512_max_ps(t, zero), top);
        let i = _mm512_cvtps_epi32(t); // round to nearest even (MXCSR default)
        _mm_mask_storeu_epi8(u.add(kk) as *mut i8, m, _mm512_cvtepi32_epi8(i));
        kk += 16;
    }
    (s, z)
}

/// Convert `len` f16 (bits) to f32.
///
/// # Safety
/// AVX-512F/BW present; `src` holds `len` values, `dst` `len` writable floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn cvt_f16_avx512(src: *const u16, dst: *mut f32, len: usize) {
    let mut i = 0;
    while i < len {
        let m = mask16(len - i);
        let v = f16::load16_mask(src.add(i) as *const f16, m);
        _mm512_mask_storeu_ps(dst.add(i), m, v);
        i += 16;
    }
}

/// Convert `len` bf16 (bits) to f32.
///
/// # Safety
/// As [`cvt_f16_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn cvt_bf16_avx512(src: *const u16, dst: *mut f32, len: usize) {
    let mut i = 0;
    while i < len {
        let m = mask16(len - i);
        let v = bf16::load16_mask(src.add(i) as *const bf16, m);
        _mm512_mask_storeu_ps(dst.add(i), m, v);
        i += 16;
    }
}

// ---------------------------------------------------------------------------
// AVX2 + FMA kernels.
// ---------------------------------------------------------------------------

/// Rows of the AVX2 microkernel: 3 x 4 ymm accumulators + 3 broadcasts + 1 B
/// vector = the 16 ymm registers.
pub(crate) const MR_256: usize = 3;

#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32_256<const MR: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    let mut acc = [[_mm256_setzero_ps(); 4]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        let mut av = [_mm256_setzero_ps(); MR];
        for (i, v) in av.iter_mut().enumerate() {
            *v = _mm256_broadcast_ss(&*ap.add(i));
        }
        for q in 0..4 {
            let bv = _mm256_loadu_ps(bp.add(8 * q));
            for i in 0..MR {
                acc[i][q] = _mm256_fmadd_ps(av[i], bv, acc[i][q]);
            }
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    let mut buf = [0.0f32; NR];
    for (i, row) in acc.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            _mm256_storeu_ps(buf.as_mut_ptr().add(8 * q), *v);
        }
        let p = c.add(i * ldc);
        for (j, &x) in buf.iter().enumerate().take(nr) {
            let o = if st.first {
                if st.bias.is_null() {
                    0.0
                } else {
                    *st.bias.add(j)
                }
            } else {
                *p.add(j)
            };
            *p.add(j) = x + o;
        }
    }
}

/// AVX2 version of [`tile_f32_avx512`] (mr <= [`MR_256`]).
///
/// # Safety
/// AVX2+FMA present; extents as for [`tile_f32_avx512`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tile_f32_avx2(
    mr: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    match mr {
        3 => tile_f32_256::<3>(kc, a, b, c, ldc, nr, st),
        2 => tile_f32_256::<2>(kc, a, b, c, ldc, nr, st),
        1 => tile_f32_256::<1>(kc, a, b, c, ldc, nr, st),
        _ => unreachable!("tile rows {mr}"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_block_256<T: WLoad, const R: usize, const J: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    w: *const T,
    c: *mut f32,
    ldc: usize,
    col_scale: *const f32,
    bias: *const f32,
) {
    let mut acc = [[_mm256_setzero_ps(); J]; R];
    let mut kk = 0;
    while kk + 8 <= k {
        let mut wv = [_mm256_setzero_ps(); J];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = T::load8(w.add(j * k + kk));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_loadu_ps(a.add(r * lda + kk));
            for j in 0..J {
                row[j] = _mm256_fmadd_ps(av, wv[j], row[j]);
            }
        }
        kk += 8;
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let mut s = hsum256(*v);
            for t in kk..k {
                s += *a.add(r * lda + t) * (*w.add(j * k + t)).to_f32();
            }
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

/// AVX2 version of [`dot_avx512`].
///
/// # Safety
/// AVX2+FMA+F16C present; extents as for [`dot_avx512`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_avx2<T: WLoad>(
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
    let off = |p: *const f32, j: usize| if p.is_null() { p } else { p.add(j) };
    let mut j = 0;
    macro_rules! run {
        ($r:literal, $jj:literal) => {{
            while j + $jj <= cols {
                dot_block_256::<T, $r, $jj>(
                    k,
                    a,
                    lda,
                    w.add(j * k),
                    c.add(j),
                    ldc,
                    off(col_scale, j),
                    off(bias, j),
                );
                j += $jj;
            }
            while j < cols {
                dot_block_256::<T, $r, 1>(
                    k,
                    a,
                    lda,
                    w.add(j * k),
                    c.add(j),
                    ldc,
                    off(col_scale, j),
                    off(bias, j),
                );
                j += 1;
            }
        }};
    }
    match rows {
        1 => run!(1, 4),
        2 => run!(2, 4),
        3 => run!(3, 2),
        4 => run!(4, 2),
        _ => unreachable!("dot rows {rows}"),
    }
}

/// Convert `len` f16 (bits) to f32 with F16C.
///
/// # Safety
/// AVX2+F16C present; `src` holds `len` values, `dst` `len` writable floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn cvt_f16_avx2(src: *const u16, dst: *mut f32, len: usize) {
    let mut i = 0;
    while i + 8 <= len {
        _mm256_storeu_ps(dst.add(i), f16::load8(src.add(i) as *const f16));
        i += 8;
    }
    for t in i..len {
        *dst.add(t) = f16::from_bits(*src.add(t)).to_f32();
    }
}

/// Convert `len` bf16 (bits) to f32.
///
/// # Safety
/// AVX2 present; `src` holds `len` values, `dst` `len` writable floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn cvt_bf16_avx2(src: *const u16, dst: *mut f32, len: usize) {
    let mut i = 0;
    while i + 8 <= len {
        _mm256_storeu_ps(dst.add(i), bf16::load8(src.add(i) as *const bf16));
        i += 8;
    }
    for t in i..len {
        *dst.add(t) = bf16::from_bits(*src.add(t)).to_f32();
    }
}

// ---------------------------------------------------------------------------
// AVX-512 packing: 16 x 16 transposes of 32-bit elements.
// ---------------------------------------------------------------------------

/// Transpose 16 rows of 16 32-bit elements in registers (64 shuffles).
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c]: rows 4g..4g+4 of columns 4l + c in lane l.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(a, c);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    // v[c] / v[4 + c] (rows 0..8) and v[8 + c] / v[12 + c] (rows 8..16).
    let mut v = [_mm512_setzero_ps(); 16];
    for h in 0..2 {
        for c in 0..4 {
            let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
            v[8 * h + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
            v[8 * h + 4 + c] = _mm512_shuffle_f32x4::<0xDD>(a, b);
        }
    }
    for c in 0..8 {
        r[c] = _mm512_shuffle_f32x4::<0x88>(v[c], v[8 + c]);
        r[8 + c] = _mm512_shuffle_f32x4::<0xDD>(v[c], v[8 + c]);
    }
}

/// Write `rows` (<= 16) rows of `src` (stride `ld`, `k` elements each),
/// widened to f32, transposed: `dst[q * dst_stride + r] = src[r][q]`.
///
/// # Safety
/// AVX-512F/BW/VL (+F16C) present; `src` rows `0..rows` hold `k` elements;
/// `dst` holds `(k - 1) * dst_stride + rows` writable floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn pack_t16_avx512<T: WLoad>(
    src: *const T,
    ld: usize,
    rows: usize,
    k: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    let smask = mask16(rows);
    let mut q = 0;
    while q < k {
        let cols = (k - q).min(16);
        let m = mask16(cols);
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate().take(rows) {
            let p = src.add(i * ld + q);
            *v = if cols == 16 {
                T::load16(p)
            } else {
                T::load16_mask(p, m)
            };
        }
        transpose16(&mut r);
        for (t, v) in r.iter().enumerate().take(cols) {
            _mm512_mask_storeu_ps(dst.add((q + t) * dst_stride), smask, *v);
        }
        q += 16;
    }
}

/// Int8 version of [`pack_t16_avx512`] on 4-byte groups: `dst` is the
/// `[k4][32][4]` panel at this half's column offset (`dst_stride` = 128 bytes).
///
/// # Safety
/// AVX-512F/BW present; `src` rows `0..rows` (<= 16) hold `k` bytes; `dst`
/// holds `(k4 - 1) * 128 + rows * 4` writable bytes, `k4 = ceil(k / 4)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn pack_i8_t16_avx512(
    src: *const i8,
    ld: usize,
    rows: usize,
    k: usize,
    dst: *mut i8,
) {
    let smask = mask16(rows);
    let k4 = k.div_ceil(4);
    let mut q = 0;
    while q < k4 {
        let bytes = (k - 4 * q).min(64);
        let m: u64 = if bytes == 64 {
            u64::MAX
        } else {
            (1u64 << bytes) - 1
        };
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate().take(rows) {
            *v = _mm512_castsi512_ps(_mm512_maskz_loadu_epi8(m, src.add(i * ld + 4 * q)));
        }
        transpose16(&mut r);
        for (t, v) in r.iter().enumerate().take((k4 - q).min(16)) {
            _mm512_mask_storeu_ps(dst.add((q + t) * NR * 4) as *mut f32, smask, *v);
        }
        q += 16;
    }
}
