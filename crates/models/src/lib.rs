//! encdec-models: checkpoints, configs and architectures of encoder-decoder models.
//!
//! - [`ModelConfig`]: a typed `config.json` (`T5Config`, `BartConfig`), its derived
//!   architecture facts, parameter count and the tensors a checkpoint must hold.
//! - [`Checkpoint`]: memory-mapped, validated safetensors (single or sharded), loading
//!   tensors as f32/f16/bf16/int8; [`VarBuilder`] builds HF weight names and checks shapes.
//! - [`catalogue`]: exact configs of known checkpoints for random-weight benchmarks.
//! - [`inspect_dir`]: config + checkpoint headers, validated, for `encdec info`.

pub mod bart;
pub mod catalogue;
pub mod config;
pub mod error;
pub mod inspect;
pub mod layers;
pub mod safetensors;
pub mod sentencepiece;
pub mod t5;
pub mod tokenizer;
pub mod var_builder;

pub use bart::{BartArch, BartConfig, PositionKind};
pub use config::{
    read_json, ModelConfig, ModelInfo, TensorKind, TensorSpec, TokenIds, SUPPORTED_MODEL_TYPES,
};
pub use error::{ModelError, Result};
pub use inspect::{inspect_dir, validate_checkpoint, ValidationReport};
pub use safetensors::{Checkpoint, StoredDType, TensorInfo};
pub use t5::{T5Arch, T5Config};
pub use var_builder::VarBuilder;
pub mod load;
pub use load::{build_model, load_model, random_model, weight_dtype_for, LoadedModel};
