//! Row reductions of the decode loop: max / argmax, log-sum-exp, log-softmax.
//!
//! One vocabulary row (30k-250k entries) per beam or sequence per step goes
//! through these, so they are written to auto-vectorise: `exp` is Cephes'
//! single-precision polynomial (about 1 ulp, the accuracy of torch's vectorised
//! `expf`) and sums accumulate in f64 lanes.

/// `e^x` for `x <= 0` (values after subtracting a row maximum); exactly 0 below
/// -87 and for -inf, so filtered entries carry no mass.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to nearest
    let xc = x.clamp(-87.0, 0.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    // the integer n sits in the low mantissa bits of t: no float-to-int cast,
    // so the loops around this vectorise
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * scale
    }
}

/// `out[i] = e^(row[i] - max)` (a plain map: vectorised).
#[inline(always)]
fn exp_block_generic(row: &[f32], max: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(row) {
        *o = exp_nonpos(x - max);
    }
}

/// Sum of f32 values in f64 lanes.
#[inline(always)]
fn sum_f64(xs: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x);
        }
    }
    let mut s: f64 = lanes.iter().sum();
    for &x in chunks.remainder() {
        s += f64::from(x);
    }
    s
}

/// What [`sum_f64`] gives for a row of `len` entries that are 0 except
/// `vals[j]` at position `at[j]` (ascending, < len): the same lanes in the same
/// order, so a sum over a row's candidates is bit for bit the sum over the
/// whole row when every other entry is 0.
pub fn sum_f64_at(vals: &[f32], at: &[u32], len: usize) -> f64 {
    let body = len - len % 8;
    let mut lanes = [0f64; 8];
    for (&x, &i) in vals.iter().zip(at) {
        if (i as usize) < body {
            lanes[i as usize % 8] += f64::from(x);
        }
    }
    let mut s: f64 = lanes.iter().sum();
    for (&x, &i) in vals.iter().zip(at) {
        if (i as usize) >= body {
            s += f64::from(x);
        }
    }
    s
}

/// The maximum of a row and the first index holding it (`torch.argmax`'s tie rule).
/// An all -inf (or empty) row gives `(-inf, 0)`.
pub fn max_argmax(row: &[f32]) -> (f32, usize) {
    // vectorised max, then the first block holding it, then the position in it
    let max = max_of(row);
    for (b, block) in row.chunks(256).enumerate() {
        if max_of(block) == max {
            let at = block.iter().position(|&x| x == max).unwrap_or(0);
            return (max, b * 256 + at);
        }
    }
    (max, 0)
}

/// The maximum of a row (-inf when empty).
pub fn max_of(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { max_of_avx2(row) };
    }
    max_of_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_of_avx2(row: &[f32]) -> f32 {
    max_of_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_block_avx2(row: &[f32], max: f32, out: &mut [f32]) {
    exp_block_generic(row, max, out)
}

/// `out[i] = e^(row[i] - max)`, 8 lanes wide where the CPU has AVX2.
fn exp_block(row: &[f32], max: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { exp_block_avx2(row, max, out) };
    }
    exp_block_generic(row, max, out)
}

#[inline(always)]
fn max_of_generic(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    let mut m = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in chunks.remainder() {
        if x > m {
            m = x;
        }
    }
    m
}

/// `sum(e^(x - max))` in f64.
pub fn sum_exp(row: &[f32], max: f32) -> f64 {
    let mut buf = [0f32; 256];
    let mut s = 0f64;
    for block in row.chunks(256) {
        let b = &mut buf[..block.len()];
        exp_block(block, max, b);
        s += sum_f64(b);
    }
    s
}

/// `(max, ln(sum(e^(x - max))))`: `x - max - second` is the log-softmax of `x`.
/// An all -inf row gives `(-inf, 0)`.
pub fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = max_of(row);
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    (max, sum_exp(row, max).ln() as f32)
}

/// `row = log_softmax(row)`, computed as torch does: `(x - max) - ln(sum)`.
pub fn log_softmax_in_place(row: &mut [f32]) {
    let (max, ls) = log_sum_exp(row);
    for x in row.iter_mut() {
        *x = (*x - max) - ls;
    }
}

/// `out[i] = e^(row[i] - max)`; returns the sum (f64).
pub fn exp_into(row: &[f32], max: f32, out: &mut [f32]) -> f64 {
    let out = &mut out[..row.len()];
    exp_block(row, max, out);
    sum_f64(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpos(x));
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(0.0), 1.0);
    }

    #[test]
    fn reductions() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.3 - 2.0)
            .collect();
        let (m, at) = max_argmax(&row);
        assert_eq!(m, row.iter().copied().fold(f32::MIN, f32::max));
        assert_eq!(at, row.iter().position(|&x| x == m).unwrap_or(99));
        let (mx, ls) = log_sum_exp(&row);
        let want: f64 = row
            .iter()
            .map(|&x| f64::from(x - mx).exp())
            .sum::<f64>()
            .ln();
        assert!((f64::from(ls) - want).abs() < 1e-6);
        assert_eq!(
            log_sum_exp(&[f32::NEG_INFINITY; 3]),
            (f32::NEG_INFINITY, 0.0)
        );
    }

    /// The sparse sum is the dense one bit for bit, for rows whose length is
    /// and is not a multiple of the 8 lanes, with entries in the tail; and it
    /// would not be with a plain sequential sum (values of mixed magnitude).
    #[test]
    fn sum_at_positions_is_the_row_sum() {
        let mut sequential_differs = false;
        for len in [8usize, 13, 64, 101, 1003] {
            for seed in 0..20u64 {
                let mut row = vec![0f32; len];
                let mut at = Vec::new();
                let mut vals = Vec::new();
                for (i, slot) in row.iter_mut().enumerate() {
                    let h = crate::rng::splitmix64(seed * 7919 + i as u64);
                    if h % 3 == 0 || i + 2 >= len {
                        let x =
                            (h >> 11) as f32 / (1u64 << 53) as f32 * 10f32.powi((h % 9) as i32 - 4);
                        *slot = x;
                        at.push(i as u32);
                        vals.push(x);
                    }
                }
                let want = sum_f64(&row);
                assert_eq!(
                    sum_f64_at(&vals, &at, len).to_bits(),
                    want.to_bits(),
                    "len {len} seed {seed}"
                );
                let seq: f64 = vals.iter().map(|&x| f64::from(x)).sum();
                sequential_differs |= seq.to_bits() != want.to_bits();
            }
        }
        assert!(
            sequential_differs,
            "the test rows cannot tell the lane order apart"
        );
    }
}
