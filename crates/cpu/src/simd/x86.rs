//! AVX-512 and AVX2+FMA implementations of [`Simd`].

use std::arch::x86_64::*;

use super::Simd;
use crate::isa::{self, Isa};

/// Token proving the CPU has AVX-512 F/BW/VL and FMA.
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Avx512 {
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and FMA.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Avx512(())
    }
    pub fn try_new() -> Option<Self> {
        (isa::detected() == Isa::Avx512).then_some(Avx512(()))
    }
}

/// Token proving the CPU has AVX2 and FMA.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Avx2(())
    }
    pub fn try_new() -> Option<Self> {
        (isa::detected() >= Isa::Avx2).then_some(Avx2(()))
    }
}

/// `unsafe { $e }` for an intrinsic call whose ISA the token `self` proves.
macro_rules! avx {
    ($e:expr) => {
        // SAFETY: a token of this type exists only when the CPU supports its ISA
        // (see `new_unchecked`/`try_new`), and pointer arguments are checked by
        // the caller (slice lengths asserted, or the caller's `unsafe` contract).
        unsafe { $e }
    };
}

const ROUND_NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

#[inline(always)]
fn mask16(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        avx!(_mm512_set1_ps(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        assert!(s.len() >= 16);
        avx!(_mm512_loadu_ps(s.as_ptr()))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m512) {
        assert!(s.len() >= 16);
        avx!(_mm512_storeu_ps(s.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> __m512 {
        // Masked-off lanes are not read, so a short slice is fine.
        avx!(_mm512_mask_loadu_ps(
            _mm512_set1_ps(fill),
            mask16(s.len()),
            s.as_ptr()
        ))
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: __m512) {
        avx!(_mm512_mask_storeu_ps(s.as_mut_ptr(), mask16(s.len()), v))
    }
    #[inline(always)]
    unsafe fn load_ptr(self, p: *const f32) -> __m512 {
        avx!(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut f32, v: __m512) {
        avx!(_mm512_storeu_ps(p, v))
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        avx!(_mm512_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        avx!(_mm512_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        avx!(_mm512_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        avx!(_mm512_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        avx!(_mm512_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        avx!(_mm512_max_ps(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        avx!(_mm512_min_ps(a, b))
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        avx!(_mm512_abs_ps(a))
    }
    #[inline(always)]
    fn neg(self, a: __m512) -> __m512 {
        avx!(_mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(a),
            _mm512_set1_epi32(i32::MIN)
        )))
    }
    #[inline(always)]
    fn sqrt(self, a: __m512) -> __m512 {
        avx!(_mm512_sqrt_ps(a))
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        avx!(_mm512_roundscale_ps::<ROUND_NEAREST>(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        avx!(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
            _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127))
        )))
    }
    #[inline(always)]
    fn select_lt(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        avx!(_mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b),
            y,
            x
        ))
    }
    #[inline(always)]
    fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
        avx!(_mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(_mm512_castps_si512(mag), _mm512_set1_epi32(i32::MAX)),
            _mm512_and_si512(_mm512_castps_si512(sign), _mm512_set1_epi32(i32::MIN))
        )))
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m512) -> f32 {
        avx!(_mm512_reduce_add_ps(a))
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        avx!(_mm512_reduce_max_ps(a))
    }
}

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        avx!(_mm256_set1_ps(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        assert!(s.len() >= 8);
        avx!(_mm256_loadu_ps(s.as_ptr()))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        assert!(s.len() >= 8);
        avx!(_mm256_storeu_ps(s.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> __m256 {
        let mut buf = [fill; 8];
        let n = s.len().min(8);
        buf[..n].copy_from_slice(&s[..n]);
        avx!(_mm256_loadu_ps(buf.as_ptr()))
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: __m256) {
        let mut buf = [0.0f32; 8];
        avx!(_mm256_storeu_ps(buf.as_mut_ptr(), v));
        let n = s.len().min(8);
        s[..n].copy_from_slice(&buf[..n]);
    }
    #[inline(always)]
    unsafe fn load_ptr(self, p: *const f32) -> __m256 {
        avx!(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut f32, v: __m256) {
        avx!(_mm256_storeu_ps(p, v))
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        avx!(_mm256_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        avx!(_mm256_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        avx!(_mm256_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        avx!(_mm256_div_ps(a, b))
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        avx!(_mm256_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        avx!(_mm256_max_ps(a, b))
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        avx!(_mm256_min_ps(a, b))
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        avx!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), a))
    }
    #[inline(always)]
    fn neg(self, a: __m256) -> __m256 {
        avx!(_mm256_xor_ps(a, _mm256_set1_ps(-0.0)))
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
        avx!(_mm256_sqrt_ps(a))
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        avx!(_mm256_round_ps::<ROUND_NEAREST>(a))
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        avx!(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))
        )))
    }
    #[inline(always)]
    fn select_lt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        avx!(_mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)))
    }
    #[inline(always)]
    fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
        avx!({
            let sm = _mm256_set1_ps(-0.0);
            _mm256_or_ps(_mm256_andnot_ps(sm, mag), _mm256_and_ps(sm, sign))
        })
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m256) -> f32 {
        avx!({
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        })
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        avx!({
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        })
    }
}
