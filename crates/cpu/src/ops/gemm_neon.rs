//! aarch64 NEON GEMM microkernel (f32 FMA). Only the register-tiled f32 tile is
//! NEON-specific; the GEMV path and dtype conversions use the portable code in
//! `gemm.rs`, which LLVM vectorises for NEON. (Not testable on the x86 CI
//! machines; kept small and written against the stable `core::arch::aarch64` API.)

#![allow(clippy::too_many_arguments)]
// Register tiles index several arrays with the same counter; loops read clearer.
#![allow(clippy::needless_range_loop)]

use super::gemm::Store;
use super::gemm_pack::NR;
use std::arch::aarch64::*;

/// Rows of the NEON microkernel: 3 x 8 q-register accumulators + B + A.
pub(crate) const MR_NEON: usize = 3;

#[target_feature(enable = "neon")]
unsafe fn tile_f32_n<const MR: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    st: Store,
) {
    let mut acc = [[vdupq_n_f32(0.0); 8]; MR];
    let mut ap = a;
    let mut bp = b;
    for _ in 0..kc {
        for q in 0..8 {
            let bv = vld1q_f32(bp.add(4 * q));
            for i in 0..MR {
                acc[i][q] = vfmaq_n_f32(acc[i][q], bv, *ap.add(i));
            }
        }
        ap = ap.add(MR);
        bp = bp.add(NR);
    }
    let mut buf = [0.0f32; NR];
    for (i, row) in acc.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            vst1q_f32(buf.as_mut_ptr().add(4 * q), *v);
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

/// `C[mr x nr] (+)= A_panel[kc x mr] * B_panel[kc x 32]` with NEON.
///
/// # Safety
/// NEON present; `a` holds `kc*mr`, `b` `kc*32` floats; `c` rows `0..mr`
/// (stride `ldc`) hold `nr` writable floats; `st.bias` null or `nr` floats.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn tile_f32_neon(
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
        3 => tile_f32_n::<3>(kc, a, b, c, ldc, nr, st),
        2 => tile_f32_n::<2>(kc, a, b, c, ldc, nr, st),
        1 => tile_f32_n::<1>(kc, a, b, c, ldc, nr, st),
        _ => unreachable!("tile rows {mr}"),
    }
}
