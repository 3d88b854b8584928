//! GEMM: `out[m, n] = sum_k a[m, k] * w[n, k] (+ bias[n])`, w in HF's `[out, in]` layout.
//!
//! (Placeholder scalar implementation; the SIMD kernels replace the bodies.)

use half::{bf16, f16};

/// Weights of a linear layer as the GEMM reads them (row-major `[n, k]`).
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    /// int8 values with one scale per output row.
    I8 { data: &'a [i8], scales: &'a [f32] },
}

/// `out[m*n] = a[m*k] · w[n*k]^T + bias`. All contiguous row-major.
pub fn gemm(m: usize, n: usize, k: usize, a: &[f32], w: Weights, bias: Option<&[f32]>, out: &mut [f32]) {
    gemm_reference(m, n, k, a, w, bias, out)
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
