//! encdec-cuda: the CUDA backend.
//!
//! Status: device discovery only. The kernels (`kernels/*.cu`) and the `Backend`
//! implementation are the CUDA issue's work; until then `--device cuda` reports
//! clearly whether a GPU is present and that the backend is not available yet.
//!
//! cudarc loads libcuda dynamically and panics if it is absent, so every entry
//! point checks `is_culib_present()` first.

use encdec_core::{Error, Result};

/// Name and memory of a CUDA device, or why there is none.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_memory_bytes: usize,
    pub compute_capability: (i32, i32),
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
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
    let name = ctx.name().map_err(|e| Error::Cuda(e.to_string()))?;
    let cc = ctx
        .compute_capability()
        .map_err(|e| Error::Cuda(e.to_string()))?;
    let (_free, total) =
        cudarc::driver::result::mem_get_info().map_err(|e| Error::Cuda(e.to_string()))?;
    Ok(DeviceInfo {
        ordinal,
        name,
        total_memory_bytes: total,
        compute_capability: cc,
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
    }
}
