//! The error type of `encdec-models`.
//!
//! Every variant names the file, directory or tensor at fault, so the CLI can print
//! `Display` as its one-line message.

use std::path::PathBuf;

/// The command that turns a PyTorch/TF/Flax checkpoint directory into safetensors.
pub(crate) fn convert_command(dir: &std::path::Path, from: &str) -> String {
    let dir = dir.display();
    let extra = match from {
        "tf" => ", from_tf=True",
        "flax" => ", from_flax=True",
        _ => "",
    };
    format!(
        "python -c \"from transformers import AutoModelForSeq2SeqLM as M; \
         M.from_pretrained('{dir}'{extra}).save_pretrained('{dir}', safe_serialization=True)\""
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no config.json in model directory {}", dir.display())]
    MissingConfig { dir: PathBuf },

    #[error("cannot read model directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `message` is serde_json's, which carries the line and column.
    #[error("{}: invalid JSON: {message}", path.display())]
    InvalidJson { path: PathBuf, message: String },

    #[error("{}: no \"model_type\" field (supported: {supported})", path.display())]
    MissingModelType { path: PathBuf, supported: String },

    #[error("{}: unsupported model_type \"{model_type}\" (supported: {supported})", path.display())]
    UnknownModelType {
        path: PathBuf,
        model_type: String,
        supported: String,
    },

    /// A config switch we do not implement; never silently ignored.
    #[error("{}: unsupported setting {field} = {value}: {reason}", path.display())]
    UnsupportedConfig {
        path: PathBuf,
        field: String,
        value: String,
        reason: String,
    },

    #[error("{}: invalid config: {message}", path.display())]
    InvalidConfig { path: PathBuf, message: String },

    #[error(
        "{}: only a {found} checkpoint was found; encdec reads safetensors. Convert it with: {command}",
        dir.display()
    )]
    NotSafetensors {
        dir: PathBuf,
        found: String,
        command: String,
    },

    #[error(
        "{}: no model.safetensors or model.safetensors.index.json (files present: {present})",
        dir.display()
    )]
    NoCheckpoint { dir: PathBuf, present: String },

    #[error(
        "{}: truncated safetensors file: the header says {expected} bytes, the file has {actual}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error("{}: invalid safetensors header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },

    /// A header entry whose offsets lie (out of bounds, overlapping, wrong size).
    #[error("{}: tensor {tensor}: {reason}", path.display())]
    BadTensorEntry {
        path: PathBuf,
        tensor: String,
        reason: String,
    },

    #[error("{}: tensor {tensor} is stored as {dtype}, which encdec cannot load{hint}", path.display())]
    UnsupportedDType {
        path: PathBuf,
        tensor: String,
        dtype: String,
        hint: String,
    },

    #[error("tensor {name} not found in {searched}{note}")]
    MissingTensor {
        name: String,
        /// The file(s) searched, comma separated.
        searched: String,
        /// Extra context, e.g. names also tried or how many more are missing.
        note: String,
    },

    #[error("tensor {name} in {}: expected shape {expected:?} (from config.json), found {actual:?}", file.display())]
    ShapeMismatch {
        name: String,
        file: PathBuf,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("{}: tensor {tensor} is mapped to shard {shard}, which does not exist", index.display())]
    MissingShard {
        index: PathBuf,
        shard: String,
        tensor: String,
    },

    #[error("{}: {reason}", index.display())]
    BadIndex { index: PathBuf, reason: String },

    #[error("tensor {tensor}: cannot load as {dtype}: {reason}")]
    UnsupportedTarget {
        tensor: String,
        dtype: encdec_core::DType,
        reason: String,
    },

    #[error("unknown catalogue model \"{name}\" (known: {known})")]
    UnknownCatalogueName { name: String, known: String },

    #[error(transparent)]
    Core(#[from] encdec_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
