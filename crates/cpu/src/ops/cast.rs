//! Dtype conversion: f32 <-> f16 <-> bf16 (round to nearest even) and float ->
//! int8 quantisation per row: `scale = absmax / 127`,
//! `q = round_half_even(x / scale)` clamped to `[-127, 127]` (a zero row gets
//! scale 0 and q 0), so `x ~= scale * q`.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::isa::Isa;
use crate::simd::{multiversion, Simd};

use super::par;

/// Elements per parallel conversion task.
const CAST_CHUNK: usize = 1 << 16;

/// f32 -> f16, split over the pool when large.
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    if par::worth_parallel(src.len()) {
        dst.par_chunks_mut(CAST_CHUNK)
            .zip(src.par_chunks(CAST_CHUNK))
            .for_each(|(d, s)| d.convert_from_f32_slice(s));
    } else {
        dst.convert_from_f32_slice(src);
    }
}

/// f32 -> bf16, split over the pool when large.
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    if par::worth_parallel(src.len()) {
        dst.par_chunks_mut(CAST_CHUNK)
            .zip(src.par_chunks(CAST_CHUNK))
            .for_each(|(d, s)| d.convert_from_f32_slice(s));
    } else {
        dst.convert_from_f32_slice(src);
    }
}

/// f16 -> f32.
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    if par::worth_parallel(src.len()) {
        src.par_chunks(CAST_CHUNK)
            .zip(dst.par_chunks_mut(CAST_CHUNK))
            .for_each(|(s, d)| s.convert_to_f32_slice(d));
    } else {
        src.convert_to_f32_slice(dst);
    }
}

/// bf16 -> f32.
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    if par::worth_parallel(src.len()) {
        src.par_chunks(CAST_CHUNK)
            .zip(dst.par_chunks_mut(CAST_CHUNK))
            .for_each(|(s, d)| s.convert_to_f32_slice(d));
    } else {
        src.convert_to_f32_slice(dst);
    }
}

// ---- int8 quantisation -----------------------------------------------------

/// Plain loops: per row of `cols`, `scale = absmax / 127`, `q = round(x / scale)`.
pub fn quantize_i8_reference(src: &[f32], cols: usize, data: &mut [i8], scales: &mut [f32]) {
    for ((row, q), s) in src
        .chunks_exact(cols.max(1))
        .zip(data.chunks_exact_mut(cols.max(1)))
        .zip(scales.iter_mut())
    {
        let amax = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        *s = amax / 127.0;
        for (o, &v) in q.iter_mut().zip(row) {
            *o = if *s == 0.0 {
                0
            } else {
                (v / *s).round_ties_even().clamp(-127.0, 127.0) as i8
            };
        }
    }
}

#[inline(always)]
fn quantize_generic<S: Simd>(s: S, src: &[f32], cols: usize, data: &mut [i8], scales: &mut [f32]) {
    if cols == 0 {
        return;
    }
    let l = S::LANES;
    let mut buf = [0.0f32; 16];
    for ((row, q), sc) in src
        .chunks_exact(cols)
        .zip(data.chunks_exact_mut(cols))
        .zip(scales.iter_mut())
    {
        let mut m = s.zero();
        let mut chunks = row.chunks_exact(l);
        for c in &mut chunks {
            m = s.max(m, s.abs(s.load(c)));
        }
        m = s.max(m, s.abs(s.load_partial(chunks.remainder(), 0.0)));
        let amax = s.reduce_max(m);
        let scale = amax / 127.0;
        *sc = scale;
        if scale == 0.0 || scale.is_nan() {
            q.fill(0);
            continue;
        }
        let (vs, lo, hi) = (s.splat(scale), s.splat(-127.0), s.splat(127.0));
        for (c, qo) in row.chunks(l).zip(q.chunks_mut(l)) {
            let v = s.min(hi, s.max(lo, s.round(s.div(s.load_partial(c, 0.0), vs))));
            s.store_partial(&mut buf[..c.len()], v);
            for (o, &f) in qo.iter_mut().zip(&buf[..c.len()]) {
                *o = f as i8;
            }
        }
    }
}

multiversion! {
    /// Per-row int8 quantisation of rows of `cols`, on this thread.
    pub fn quantize_i8_rows[quantize_i8_avx512, quantize_i8_avx2, quantize_i8_neon,
        quantize_i8_scalar](src: &[f32], cols: usize, data: &mut [i8], scales: &mut [f32])
        => quantize_generic;
}

/// Rows per task of the parallel quantisation.
fn quant_rows(cols: usize) -> usize {
    (CAST_CHUNK / cols.max(1)).max(1)
}

/// Per-row int8 quantisation of f32 rows, split over the pool when large.
pub fn quantize_i8(isa: Isa, src: &[f32], cols: usize, data: &mut [i8], scales: &mut [f32]) {
    if cols == 0 {
        return;
    }
    let r = quant_rows(cols);
    if par::worth_parallel(src.len()) {
        src.par_chunks(r * cols)
            .zip(data.par_chunks_mut(r * cols))
            .zip(scales.par_chunks_mut(r))
            .for_each(|((s, d), sc)| quantize_i8_rows(isa, s, cols, d, sc));
    } else {
        quantize_i8_rows(isa, src, cols, data, scales);
    }
}

/// Per-row int8 quantisation of f16/bf16 rows: each block of rows goes through an
/// f32 buffer (never the whole tensor).
pub fn quantize_i8_from<T: Sync>(
    isa: Isa,
    src: &[T],
    cols: usize,
    data: &mut [i8],
    scales: &mut [f32],
    to_f32: impl Fn(&[T], &mut [f32]) + Sync,
) {
    if cols == 0 {
        return;
    }
    let r = quant_rows(cols);
    let run = |s: &[T], d: &mut [i8], sc: &mut [f32]| {
        let mut buf = vec![0.0f32; s.len()];
        to_f32(s, &mut buf);
        quantize_i8_rows(isa, &buf, cols, d, sc);
    };
    if par::worth_parallel(src.len()) {
        src.par_chunks(r * cols)
            .zip(data.par_chunks_mut(r * cols))
            .zip(scales.par_chunks_mut(r))
            .for_each(|((s, d), sc)| run(s, d, sc));
    } else {
        for ((s, d), sc) in src
            .chunks(r * cols)
            .zip(data.chunks_mut(r * cols))
            .zip(scales.chunks_mut(r))
        {
            run(s, d, sc);
        }
    }
}

/// int8 -> f32: `x = q * scale[row]`.
pub fn dequantize_i8(data: &[i8], scales: &[f32], cols: usize, dst: &mut [f32]) {
    if cols == 0 {
        return;
    }
    for ((q, o), &s) in data.chunks(cols).zip(dst.chunks_mut(cols)).zip(scales) {
        for (x, &v) in o.iter_mut().zip(q) {
            *x = v as f32 * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa;
    use encdec_core::testing::random_normal;

    #[test]
    fn quantisation_matches_reference_on_every_isa() {
        for isa in isa::available() {
            for &cols in &[1usize, 3, 17, 31, 33, 100, 257, 1000] {
                let rows = 4;
                let mut x = random_normal(cols as u64, rows * cols, 2.0);
                x[cols..2 * cols].fill(0.0); // a zero row
                let mut wd = vec![0i8; rows * cols];
                let mut ws = vec![0.0; rows];
                quantize_i8_reference(&x, cols, &mut wd, &mut ws);
                let mut gd = vec![0i8; rows * cols];
                let mut gs = vec![f32::NAN; rows];
                quantize_i8(isa, &x, cols, &mut gd, &mut gs);
                assert_eq!(gs, ws, "{} cols {cols}", isa.name());
                assert_eq!(gd, wd, "{} cols {cols}", isa.name());
                // Round trip within half a step.
                let mut back = vec![0.0; rows * cols];
                dequantize_i8(&gd, &gs, cols, &mut back);
                for (i, (&a, &b)) in x.iter().zip(&back).enumerate() {
                    assert!((a - b).abs() <= gs[i / cols] * 0.5001, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn half_conversions_round_to_nearest_even() {
        let x = random_normal(3, 100_000, 10.0);
        let mut h = vec![f16::ZERO; x.len()];
        f32_to_f16(&x, &mut h);
        let mut b = vec![bf16::ZERO; x.len()];
        f32_to_bf16(&x, &mut b);
        for i in 0..x.len() {
            assert_eq!(h[i], f16::from_f32(x[i]));
            assert_eq!(b[i], bf16::from_f32(x[i]));
        }
        let mut back = vec![0.0; x.len()];
        f16_to_f32(&h, &mut back);
        assert_eq!(back[7], h[7].to_f32());
        bf16_to_f32(&b, &mut back);
        assert_eq!(back[9], b[9].to_f32());
    }
}
