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
//! Recorded steps: [`CudaBackend`] implements `Backend::begin_capture`,
//! `end_capture` and `replay` with CUDA graphs (on the emulator, with stored
//! launches). While recording, ops are recorded, not run, and what crosses to
//! or from the host fails. Memory rule: blocks freed while recording stay
//! reserved for the recording until its `CapturedGraph` is dropped; tensors
//! the recording uses must be kept alive by the caller while it replays
//! (see `graph.rs`).
//!
//! cudarc loads libcuda dynamically and panics if it is absent, so every entry
//! point checks [`driver_present`] first.

mod backend;
mod driver;
mod graph;
mod launch;
pub mod memory;
pub mod module;
pub mod nvrtc;
pub mod nvtx;
mod ops;
mod staging;

pub use backend::CudaBackend;
pub use memory::{device_ptr, CudaBuffer, MemoryStats};
pub use ops::attention::AttentionPath;
pub use ops::gemm::GemmPath;

use encdec_core::profile::DevicePeaks;
use encdec_core::{DType, Error, Result};

/// Name and memory of a CUDA device, or why there is none.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_memory_bytes: usize,
    pub compute_capability: (i32, i32),
    pub multiprocessors: usize,
    /// Peak SM clock (kHz; 0: unknown).
    pub clock_khz: u32,
    /// Peak memory clock (kHz; 0: unknown) and bus width (bits).
    pub memory_clock_khz: u32,
    pub memory_bus_bits: u32,
}

impl DeviceInfo {
    /// `cuda:N`.
    pub fn label(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    /// Theoretical peaks from the device's attributes, for the profiler's
    /// "% of peak" columns: compute for the units `dtype`'s matmuls run on
    /// (f32: FMA on the CUDA cores; f16/bf16: dense tensor-core mma with f32
    /// accumulation; int8: int8 mma), memory = 2 (DDR) x memory clock x bus
    /// width. None when the attributes are unknown (the emulator).
    pub fn peaks(&self, dtype: DType) -> Option<DevicePeaks> {
        if self.clock_khz == 0 || self.memory_clock_khz == 0 || self.memory_bus_bits == 0 {
            return None;
        }
        let (major, minor) = self.compute_capability;
        // FP32 lanes per SM (sm_80 and older data-centre parts: 64).
        let fp32_lanes = match (major, minor) {
            (..=7, _) | (8, 0) => 64.0,
            _ => 128.0,
        };
        // Dense FLOP per clock per SM of the tensor cores (f16/bf16 inputs, f32
        // accumulation), for the parts whose rates are published: V100/T4,
        // A100, H100/H200. GeForce/workstation parts differ by model.
        let tensor_f16 = match (major, minor) {
            (7, 0) | (7, 5) => Some(1024.0),
            (8, 0) => Some(2048.0),
            (9, 0) => Some(4096.0),
            _ => None,
        };
        let (per_sm_clk, unit) = match dtype {
            DType::F16 | DType::BF16 => match tensor_f16 {
                Some(f) => (f, "f16/bf16 tensor-core mma (dense)".to_string()),
                None => (
                    2.0 * fp32_lanes,
                    format!(
                        "FP32 FMA (the tensor-core rate of sm_{major}{minor} is not tabulated)"
                    ),
                ),
            },
            DType::I8 => match tensor_f16 {
                Some(f) if (major, minor) != (7, 0) => {
                    (2.0 * f, "int8 tensor-core mma (dense)".to_string())
                }
                _ => (
                    2.0 * fp32_lanes,
                    format!("FP32 FMA (no int8 tensor-core rate for sm_{major}{minor})"),
                ),
            },
            _ => (2.0 * fp32_lanes, "FP32 FMA on the CUDA cores".to_string()),
        };
        let clock_ghz = f64::from(self.clock_khz) * 1e-6;
        let gflops = self.multiprocessors as f64 * per_sm_clk * clock_ghz;
        let gbs = 2.0 * f64::from(self.memory_clock_khz) * 1e3 * f64::from(self.memory_bus_bits)
            / 8.0
            * 1e-9;
        Some(DevicePeaks {
            gflops,
            gbs,
            description: format!(
                "{} (sm_{major}{minor}): {} SMs x {per_sm_clk:.0} FLOP/clock ({unit}) x {clock_ghz:.3} GHz; \
                 bandwidth 2 x {:.0} MHz x {}-bit bus (theoretical, from the device attributes)",
                self.name,
                self.multiprocessors,
                f64::from(self.memory_clock_khz) * 1e-3,
                self.memory_bus_bits
            ),
        })
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
    // Only for the profiler's peaks: unknown (0) if the driver will not say.
    let attr = |a| ctx.attribute(a).map_or(0, |v| v.max(0) as u32);
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name,
        total_memory_bytes: total,
        compute_capability: cc,
        multiprocessors: sms.max(1) as usize,
        clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
        memory_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
        memory_bus_bits: attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
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

    /// H100 SXM5 as its driver reports it (132 SMs, 1980 MHz, HBM3 at
    /// 2619 MHz on a 5120-bit bus); NVIDIA's datasheet: 67 TFLOP/s FP32,
    /// 989 TFLOP/s dense FP16/BF16 tensor (quoted at 1830 MHz), 3.35 TB/s.
    #[test]
    fn peaks_from_device_attributes() {
        let h100 = DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            total_memory_bytes: 80 << 30,
            compute_capability: (9, 0),
            multiprocessors: 132,
            clock_khz: 1_980_000,
            memory_clock_khz: 2_619_000,
            memory_bus_bits: 5120,
        };
        let f32p = h100.peaks(DType::F32).unwrap();
        assert!((f32p.gflops - 66_908.0).abs() < 10.0, "{f32p:?}");
        assert!((f32p.gbs - 3352.3).abs() < 0.5, "{f32p:?}");
        let at_1830 = DeviceInfo {
            clock_khz: 1_830_000,
            ..h100.clone()
        };
        let f16p = at_1830.peaks(DType::F16).unwrap();
        assert!((f16p.gflops - 989_429.0).abs() < 100.0, "{f16p:?}");
        assert!(f16p.description.contains("tensor-core"));
        let i8p = at_1830.peaks(DType::I8).unwrap();
        assert!((i8p.gflops - 2.0 * f16p.gflops).abs() < 1.0);
        // A100 SXM: 108 SMs at 1410 MHz: 19.5 TFLOP/s FP32, 312 dense FP16.
        let a100 = DeviceInfo {
            compute_capability: (8, 0),
            multiprocessors: 108,
            clock_khz: 1_410_000,
            ..h100.clone()
        };
        assert!((a100.peaks(DType::F32).unwrap().gflops - 19_491.0).abs() < 10.0);
        assert!((a100.peaks(DType::BF16).unwrap().gflops - 311_869.0).abs() < 100.0);
        // Unknown attributes (the emulator): no peaks rather than made-up ones.
        let unknown = DeviceInfo {
            clock_khz: 0,
            ..h100
        };
        assert!(unknown.peaks(DType::F32).is_none());
    }
}
