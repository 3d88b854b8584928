//! NEON (AArch64) implementation of [`Simd`].

use std::arch::aarch64::*;

use super::Simd;
use crate::isa::{self, Isa};

/// Token proving the CPU has NEON.
#[derive(Debug, Clone, Copy)]
pub struct Neon(());

impl Neon {
    /// # Safety
    /// The CPU must support NEON.
    #[inline(always)]
    pub unsafe fn new_unchecked() -> Self {
        Neon(())
    }
    pub fn try_new() -> Option<Self> {
        (isa::detected() == Isa::Neon).then_some(Neon(()))
    }
}

/// `unsafe { $e }` for an intrinsic call whose ISA the token `self` proves.
macro_rules! neon {
    ($e:expr) => {
        // SAFETY: a `Neon` token exists only when the CPU supports NEON, and
        // pointer arguments are checked by the caller (slice lengths asserted,
        // or the caller's `unsafe` contract).
        unsafe { $e }
    };
}

impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        neon!(vdupq_n_f32(x))
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> float32x4_t {
        assert!(s.len() >= 4);
        neon!(vld1q_f32(s.as_ptr()))
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: float32x4_t) {
        assert!(s.len() >= 4);
        neon!(vst1q_f32(s.as_mut_ptr(), v))
    }
    #[inline(always)]
    fn load_partial(self, s: &[f32], fill: f32) -> float32x4_t {
        let mut buf = [fill; 4];
        let n = s.len().min(4);
        buf[..n].copy_from_slice(&s[..n]);
        neon!(vld1q_f32(buf.as_ptr()))
    }
    #[inline(always)]
    fn store_partial(self, s: &mut [f32], v: float32x4_t) {
        let mut buf = [0.0f32; 4];
        neon!(vst1q_f32(buf.as_mut_ptr(), v));
        let n = s.len().min(4);
        s[..n].copy_from_slice(&buf[..n]);
    }
    #[inline(always)]
    unsafe fn load_ptr(self, p: *const f32) -> float32x4_t {
        neon!(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut f32, v: float32x4_t) {
        neon!(vst1q_f32(p, v))
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        neon!(vaddq_f32(a, b))
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        neon!(vsubq_f32(a, b))
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        neon!(vmulq_f32(a, b))
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        neon!(vdivq_f32(a, b))
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(c, a, b) = c + a * b
        neon!(vfmaq_f32(c, a, b))
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // x86 semantics (`a > b ? a : b`) rather than vmaxq's NaN rules.
        neon!(vbslq_f32(vcgtq_f32(a, b), a, b))
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        neon!(vbslq_f32(vcltq_f32(a, b), a, b))
    }
    #[inline(always)]
    fn abs(self, a: float32x4_t) -> float32x4_t {
        neon!(vabsq_f32(a))
    }
    #[inline(always)]
    fn neg(self, a: float32x4_t) -> float32x4_t {
        neon!(vnegq_f32(a))
    }
    #[inline(always)]
    fn sqrt(self, a: float32x4_t) -> float32x4_t {
        neon!(vsqrtq_f32(a))
    }
    #[inline(always)]
    fn round(self, a: float32x4_t) -> float32x4_t {
        neon!(vrndnq_f32(a))
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        neon!(vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n),
            vdupq_n_s32(127)
        ))))
    }
    #[inline(always)]
    fn select_lt(
        self,
        a: float32x4_t,
        b: float32x4_t,
        x: float32x4_t,
        y: float32x4_t,
    ) -> float32x4_t {
        neon!(vbslq_f32(vcltq_f32(a, b), x, y))
    }
    #[inline(always)]
    fn copysign(self, mag: float32x4_t, sign: float32x4_t) -> float32x4_t {
        neon!(vbslq_f32(vdupq_n_u32(0x8000_0000), sign, mag))
    }
    #[inline(always)]
    fn reduce_sum(self, a: float32x4_t) -> f32 {
        neon!(vaddvq_f32(a))
    }
    #[inline(always)]
    fn reduce_max(self, a: float32x4_t) -> f32 {
        neon!(vmaxvq_f32(a))
    }
}
