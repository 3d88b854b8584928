//! encdec-cpu: the CPU backend.
//!
//! Every op has a scalar `*_reference` (f64 accumulation, the ground truth), SIMD
//! paths chosen at run time (AVX-512, AVX2+FMA, NEON) and a scalar fallback,
//! all written once against the [`simd::Simd`] trait. [`CpuBackend`] implements
//! the `encdec_core::Backend` trait on top of them, with its own rayon pool.

pub mod backend;
pub mod isa;
pub mod ops;
pub mod simd;

pub use backend::CpuBackend;
