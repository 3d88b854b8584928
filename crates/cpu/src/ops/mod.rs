//! One module per op family: `*_reference` (scalar, f64 accumulation) beside the
//! SIMD implementations and their dispatch.

pub mod gemm;
