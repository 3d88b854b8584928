//! Errors of the eval crate. Each names the file, line or option at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line} is not valid UTF-8")]
    InvalidUtf8 { path: PathBuf, line: usize },
    #[error("hypotheses have {hyp} lines but references {reference} have {ref_count}")]
    LineCountMismatch {
        hyp: usize,
        reference: String,
        ref_count: usize,
    },
    #[error("{path}: file is empty")]
    EmptyFile { path: PathBuf },
    #[error("unknown {what} '{name}' (valid: {valid})")]
    Unknown {
        what: &'static str,
        name: String,
        valid: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;
