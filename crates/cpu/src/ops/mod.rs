//! One module per op family: `*_reference` (scalar, f64 accumulation) beside the
//! SIMD implementations and their dispatch.

pub mod gemm;
#[cfg(target_arch = "aarch64")]
pub(crate) mod gemm_neon;
pub mod gemm_pack;
#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm_x86;

pub mod activation;
pub mod attention;
pub mod cast;
pub mod copy;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod par;
pub mod softmax;
pub mod topk;
