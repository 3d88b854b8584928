//! encdec-core: the types every backend and model share.
//!
//! - [`Tensor`]: shape + strides over reference-counted storage (host or device),
//!   so slices and transposes are views, not copies.
//! - [`DType`]: f32, f16, bf16, int8 (per-row f32 scales) and u32 ids.
//! - [`Backend`]: every op the models use. Models are written once against it;
//!   the CPU backend is the reference each device kernel is tested against.
//! - [`checks`]: the shape and range checks every backend makes before an op.

pub mod backend;
pub mod checks;
pub mod dtype;
pub mod error;
pub mod profile;
pub mod shape;
pub mod tensor;
pub mod testing;

pub use backend::{
    Activation, AttentionParams, Backend, CapturedGraph, DeviceMemory, DeviceTimestamp, NormKind,
    RangeGuard,
};
pub use dtype::DType;
pub use error::{Error, Result};
pub use shape::Shape;
pub use tensor::{DeviceBuffer, HostStorage, Storage, Tensor};

pub use half::{bf16, f16};

/// Where a tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Device::Cuda(i)),
                _ => Err(Error::Invalid(format!(
                    "unknown device '{s}' (valid: cpu, cuda, cuda:N)"
                ))),
            },
        }
    }
}
