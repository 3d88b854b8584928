//! A small portable SIMD layer: one [`Simd`] trait implemented per ISA, so each
//! op is written once as an `#[inline(always)]` generic kernel and compiled once
//! per ISA inside a `#[target_feature]` wrapper (the `pulp`/`macerator` pattern).
//!
//! A value of an ISA token type ([`Avx512`], [`Avx2`], [`Neon`]) proves that the
//! CPU supports that ISA: the tokens are only made by [`Simd`]-specific
//! `new_unchecked` (unsafe) or by run-time detection. That makes the trait's
//! methods safe to call.

pub mod math;
mod scalar;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
pub use neon::Neon;
pub use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

use crate::isa::{self, Isa};

/// f32 vector operations of one ISA. `V` holds `LANES` f32 values.
///
/// `max`/`min` follow x86 semantics: `max(a, b)` is `if a > b { a } else { b }`
/// (so a NaN in `b` propagates, a NaN in `a` does not).
pub trait Simd: Copy + Send + Sync + 'static {
    type V: Copy;
    const LANES: usize;

    fn splat(self, x: f32) -> Self::V;
    #[inline(always)]
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }
    /// The first `LANES` elements of `s`; panics if `s` is shorter.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores into the first `LANES` elements of `s`; panics if `s` is shorter.
    fn store(self, s: &mut [f32], v: Self::V);
    /// Loads `min(s.len(), LANES)` elements, the other lanes set to `fill`.
    fn load_partial(self, s: &[f32], fill: f32) -> Self::V;
    /// Stores the first `min(s.len(), LANES)` lanes.
    fn store_partial(self, s: &mut [f32], v: Self::V);
    /// Loads `LANES` elements at `p`.
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable f32s.
    unsafe fn load_ptr(self, p: *const f32) -> Self::V;
    /// Stores `LANES` elements at `p`.
    ///
    /// # Safety
    /// `p .. p + LANES` must be writable f32s.
    unsafe fn store_ptr(self, p: *mut f32, v: Self::V);

    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` (fused where the ISA has FMA).
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// Flips the sign bit (exact, `-0.0` for `0.0`).
    fn neg(self, a: Self::V) -> Self::V;
    fn sqrt(self, a: Self::V) -> Self::V;
    /// Round to nearest, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `[-127, 127]` (`n = -127` gives 0).
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Per lane `if a < b { x } else { y }`.
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// `|mag|` with the sign of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    fn reduce_sum(self, a: Self::V) -> f32;
    fn reduce_max(self, a: Self::V) -> f32;
}

/// Whether this machine can run `isa` (scalar always can).
pub fn supported(isa: Isa) -> bool {
    let det = isa::detected();
    match isa {
        Isa::Scalar => true,
        Isa::Neon => det == Isa::Neon,
        Isa::Avx2 => det == Isa::Avx2 || det == Isa::Avx512,
        Isa::Avx512 => det == Isa::Avx512,
    }
}

/// f32 lanes of one vector of `isa`.
pub fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => 1,
        Isa::Neon => 4,
        Isa::Avx2 => 8,
        Isa::Avx512 => 16,
    }
}

/// Defines the per-ISA entry points of one generic kernel and a dispatcher.
///
/// ```ignore
/// multiversion! {
///     /// Docs of the dispatcher.
///     pub fn softmax_rows[softmax_rows_avx512, softmax_rows_avx2, softmax_rows_neon,
///         softmax_rows_scalar](x: &mut [f32], cols: usize) => softmax_rows_generic;
/// }
/// ```
/// gives `unsafe fn softmax_rows_avx512(..)` (and avx2/neon, each under its
/// `cfg(target_arch)` and compiled with `#[target_feature]`), a safe
/// `softmax_rows_scalar(..)`, and `softmax_rows(isa, ..)`, which runs the
/// variant of `isa` (scalar if this machine cannot run `isa`).
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident [$avx512:ident, $avx2:ident, $neon:ident, $scalar:ident]
        ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? => $generic:path;
    ) => {
        /// AVX-512 variant.
        ///
        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL and FMA.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $avx512($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: this function's contract is that the CPU has AVX-512.
            $generic(unsafe { $crate::simd::Avx512::new_unchecked() }, $($arg),*)
        }
        /// AVX2 + FMA variant.
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $avx2($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: this function's contract is that the CPU has AVX2 and FMA.
            $generic(unsafe { $crate::simd::Avx2::new_unchecked() }, $($arg),*)
        }
        /// NEON variant.
        ///
        /// # Safety
        /// The CPU must support NEON.
        #[cfg(target_arch = "aarch64")]
        #[target_feature(enable = "neon")]
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $neon($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: this function's contract is that the CPU has NEON.
            $generic(unsafe { $crate::simd::Neon::new_unchecked() }, $($arg),*)
        }
        /// Portable scalar variant.
        #[allow(clippy::too_many_arguments)]
        $vis fn $scalar($($arg: $ty),*) $(-> $ret)? {
            $generic($crate::simd::Scalar, $($arg),*)
        }
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            let isa = if $crate::simd::supported(isa) { isa } else { $crate::isa::Isa::Scalar };
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `supported` checked that this CPU has AVX-512.
                $crate::isa::Isa::Avx512 => unsafe { $avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `supported` checked that this CPU has AVX2 and FMA.
                $crate::isa::Isa::Avx2 => unsafe { $avx2($($arg),*) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: `supported` checked that this CPU has NEON.
                $crate::isa::Isa::Neon => unsafe { $neon($($arg),*) },
                _ => $scalar($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
