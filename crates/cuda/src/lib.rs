//! encdec-cuda: the CUDA backend.
//!
//! [`CudaBackend`] implements `encdec_core::Backend` with the hand-written
//! kernels of `kernels/*.cu` (one file per op family, see `kernels/README.md`),
//! compiled with NVRTC at first use for the device's architecture and cached
//! on disk ([`module`]), and launched through cudarc's driver API on one stream.
//! Device memory comes from a caching allocator ([`memory`]); tensors hold it as
//! [`CudaBuffer`]. Activations are f32; weights f32, f16, bf16 or int8 with
//! per-row scales. The CPU backend is the reference every op is tested against
//! (`crates/cuda/tests/`).
//!
//! Status: written without a GPU. The kernels compile with NVRTC for sm_80 and
//! sm_90 (checked by `tests/nvrtc_compile.rs`), and the conformance tests pass
//! with the kernels running on a CPU emulator of the CUDA execution model
//! ([`CudaBackend::emulated`], `crates/cuda/emu`); nothing here has run on a GPU yet.
//!
//! cudarc loads libcuda dynamically and panics if it is absent, so every entry
//! point checks [`driver_present`] first.

mod backend;
mod driver;
mod launch;
pub mod memory;
pub mod module;
pub mod nvrtc;
pub mod nvtx;
mod ops;

pub use backend::CudaBackend;
pub use memory::{CudaBuffer, MemoryStats};
pub use ops::attention::AttentionPath;
pub use ops::gemm::GemmPath;

use encdec_core::{Error, Result};

/// Name and memory of a CUDA device, or why there is none.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_memory_bytes: usize,
    pub compute_capability: (i32, i32),
    pub multiprocessors: usize,
}

impl DeviceInfo {
    /// `cuda:N`.
    pub fn label(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// The CUDA version the installed driver supports, as `13.0`; None without a driver.
pub fn driver_version() -> Option<String> {
    if !driver_present() {
        return None;
    }
    let mut v: std::ffi::c_int = 0;
    // SAFETY: the driver library is present (checked above); the call writes one int.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS && v > 0)
        .then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// Open device `ordinal` and describe it.
pub fn probe(ordinal: usize) -> Result<DeviceInfo> {
    if !driver_present() {
        return Err(Error::NoCudaDevice(
            "the CUDA driver library (libcuda.so) was not found; install the NVIDIA driver or use --device cpu".into(),
        ));
    }
    let ctx = cudarc::driver::CudaContext::new(ordinal)
        .map_err(|e| Error::NoCudaDevice(format!("cannot open cuda:{ordinal}: {e}")))?;
    info_of(&ctx)
}

pub(crate) fn info_of(ctx: &cudarc::driver::CudaContext) -> Result<DeviceInfo> {
    use cudarc::driver::sys::CUdevice_attribute as A;
    let e = |e: cudarc::driver::DriverError| Error::Cuda(e.to_string());
    let name = ctx.name().map_err(e)?;
    let cc = ctx.compute_capability().map_err(e)?;
    let total = ctx.total_mem().map_err(e)?;
    let sms = ctx
        .attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(e)?;
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name,
        total_memory_bytes: total,
        compute_capability: cc,
        multiprocessors: sms.max(1) as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_without_a_gpu_is_a_clear_error() {
        if driver_present() {
            eprintln!("SKIP probe_without_a_gpu_is_a_clear_error: a CUDA driver is present");
            return;
        }
        let err = probe(0).unwrap_err().to_string();
        assert!(err.contains("libcuda"), "{err}");
        let err = CudaBackend::new(0).unwrap_err().to_string();
        assert!(err.contains("libcuda"), "{err}");
        assert_eq!(driver_version(), None);
    }
}
