//! The error type of the library crates.

use crate::DType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    #[error("{op}: dtype {dtype} is not supported on {device}")]
    UnsupportedDType {
        op: &'static str,
        dtype: DType,
        device: String,
    },
    #[error("{op}: dtype mismatch: {lhs} vs {rhs}")]
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    #[error("{op}: tensor on {got} but the backend is {want}")]
    WrongDevice {
        op: &'static str,
        got: String,
        want: String,
    },
    #[error("{op}: input must be contiguous")]
    NotContiguous { op: &'static str },
    #[error(
        "{op}: output tensor is shared (views alive); it must be uniquely owned to be written"
    )]
    SharedOutput { op: &'static str },
    #[error("no CUDA device: {0}")]
    NoCudaDevice(String),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;
