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
    /// A data set's files were not found under any data directory.
    #[error("data set '{name}' not found; looked for: {looked}; {hint}")]
    DataNotFound {
        name: String,
        /// Every file (or file pair) that was tried, in order.
        looked: String,
        /// How to get the files.
        hint: String,
    },
    /// Source and reference files of a data set do not align line by line.
    #[error("{}: {src_count} lines, but {}: {ref_count} lines (source and reference must align line by line)", src_path.display(), ref_path.display())]
    SourceRefMismatch {
        src_path: PathBuf,
        src_count: usize,
        ref_path: PathBuf,
        ref_count: usize,
    },
    /// A data set has a different number of examples than its registry entry says.
    #[error("data set '{name}': {} has {found} examples, expected {expected}", path.display())]
    UnexpectedCount {
        name: String,
        path: PathBuf,
        found: usize,
        expected: String,
    },
    #[error("{hyp} hypotheses but {reference} references: they must pair up one to one")]
    ExampleCountMismatch { hyp: usize, reference: usize },
}

pub type Result<T> = std::result::Result<T, EvalError>;
