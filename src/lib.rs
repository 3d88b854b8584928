//! encdec: a runtime and evaluation harness for transformer encoder-decoder models.
//!
//! This facade re-exports the workspace crates; the `encdec` binary (src/main.rs)
//! is a thin clap layer over them.

pub use encdec_core as core;
pub use encdec_cpu as cpu;
pub use encdec_cuda as cuda;
pub use encdec_eval as eval;
pub use encdec_generate as generate;
pub use encdec_models as models;
