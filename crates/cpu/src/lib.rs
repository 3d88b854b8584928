//! encdec-cpu: the CPU backend.
//!
//! Every op has a scalar `*_reference` (f64 accumulation, the ground truth), SIMD
//! paths chosen once at run time (AVX-512, AVX2+FMA, NEON) and a scalar fallback.

pub mod isa;
pub mod ops;
