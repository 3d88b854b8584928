//! What the backend asks of a device: memory, copies, kernel launches, waits.
//!
//! Two implementations: the CUDA driver (cudarc, one stream), and the CPU
//! emulator of `crates/cuda/emu` (a shared library built by
//! `scripts/build-cuda-emu.sh`), which runs the same `kernels/*.cu` code with
//! the same argument lists on host memory, so the conformance tests can
//! exercise the kernels on a machine without a GPU.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream};
use encdec_core::{Error, Result};

use crate::memory::cuda_err;

type EmuLaunch = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> i32;

/// The emulator has global state (one block at a time), shared by every
/// backend that loaded it: launches are serialised process-wide.
static EMU_LOCK: Mutex<()> = Mutex::new(());

/// The CPU emulator library.
pub(crate) struct Emu {
    launch: EmuLaunch,
    path: String,
    _lib: libloading::Library,
}

impl std::fmt::Debug for Emu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Emu({})", self.path)
    }
}

#[derive(Debug)]
pub(crate) enum Driver {
    Cuda {
        ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
    },
    Emu(Emu),
}

/// A point in the device's queue ([`Driver::mark`]).
#[derive(Debug)]
pub(crate) enum Mark {
    /// A timing event recorded on the stream.
    Cuda(cudarc::driver::CudaEvent),
    /// The emulator runs each launch to completion on the host: the host
    /// clock when the mark is made is the device's.
    Host(std::time::Instant),
}

impl Mark {
    /// Waits until the device has reached this mark.
    pub(crate) fn wait(&self) -> Result<()> {
        match self {
            Mark::Cuda(e) => e.synchronize().map_err(|e| {
                Error::Cuda(format!(
                    "waiting for an event: {e} (a kernel queued earlier may have failed)"
                ))
            }),
            Mark::Host(_) => Ok(()),
        }
    }

    /// Nanoseconds from `self` to `end`; waits for `end` on a GPU.
    pub(crate) fn elapsed_ns(&self, end: &Mark) -> Result<u64> {
        match (self, end) {
            (Mark::Cuda(a), Mark::Cuda(b)) => {
                // elapsed_ms waits for both events; CUDA's resolution is ~0.5 us.
                let ms = a.elapsed_ms(b).map_err(|e| {
                    Error::Cuda(format!(
                        "reading event times: {e} (a kernel queued earlier may have failed)"
                    ))
                })?;
                Ok((f64::from(ms.max(0.0)) * 1e6).round() as u64)
            }
            (Mark::Host(a), Mark::Host(b)) => Ok(b.saturating_duration_since(*a).as_nanos() as u64),
            _ => Err(Error::Invalid(
                "device timestamps of different drivers".into(),
            )),
        }
    }
}

/// Host allocations of the emulator are aligned like cudaMalloc's.
const EMU_ALIGN: usize = 256;

impl Driver {
    pub(crate) fn emu(path: &str) -> Result<Self> {
        // SAFETY: loading the emulator runs no initialisers with preconditions.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
            Error::NoCudaDevice(format!("cannot load the CUDA emulator {path}: {e}"))
        })?;
        // SAFETY: `emu_launch` has this C signature in crates/cuda/emu/emu.cpp.
        let launch: EmuLaunch = unsafe { lib.get::<EmuLaunch>(b"emu_launch\0") }
            .map(|s| *s)
            .map_err(|e| Error::NoCudaDevice(format!("{path}: no emu_launch: {e}")))?;
        Ok(Driver::Emu(Emu {
            launch,
            path: path.to_string(),
            _lib: lib,
        }))
    }

    pub(crate) fn is_emulated(&self) -> bool {
        matches!(self, Driver::Emu(_))
    }

    /// Makes the context current on this thread.
    pub(crate) fn bind(&self) -> Result<()> {
        match self {
            Driver::Cuda { ctx, .. } => ctx
                .bind_to_thread()
                .map_err(|e| cuda_err("bind context", e)),
            Driver::Emu(_) => Ok(()),
        }
    }

    /// Waits for all queued work; a fault of an earlier kernel surfaces here.
    pub(crate) fn sync(&self, op: &str) -> Result<()> {
        match self {
            Driver::Cuda { stream, .. } => stream.synchronize().map_err(|e| {
                Error::Cuda(format!(
                    "{op}: {e} (a kernel queued earlier may have failed)"
                ))
            }),
            Driver::Emu(_) => Ok(()),
        }
    }

    /// Marks the current end of the stream (no wait).
    pub(crate) fn mark(&self) -> Result<Mark> {
        match self {
            Driver::Cuda { stream, .. } => stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map(Mark::Cuda)
                .map_err(|e| cuda_err("record event", e)),
            Driver::Emu(_) => Ok(Mark::Host(std::time::Instant::now())),
        }
    }

    /// Marks the current end of the stream in `fence` for waiting only (no
    /// timing), re-recording the event already there.
    pub(crate) fn record_fence(&self, fence: &mut Option<Mark>) -> Result<()> {
        match (self, fence.as_ref()) {
            (Driver::Cuda { stream, .. }, Some(Mark::Cuda(e))) => {
                e.record(stream).map_err(|e| cuda_err("record event", e))
            }
            (Driver::Cuda { stream, .. }, _) => {
                let e = stream
                    .record_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                    .map_err(|e| cuda_err("record event", e))?;
                *fence = Some(Mark::Cuda(e));
                Ok(())
            }
            (Driver::Emu(_), _) => {
                *fence = Some(Mark::Host(std::time::Instant::now()));
                Ok(())
            }
        }
    }

    /// `bytes` (> 0) of page-locked host memory (`cuMemHostAlloc`; plain host
    /// memory on the emulator).
    pub(crate) fn alloc_pinned(&self, bytes: usize) -> Result<*mut u8> {
        match self {
            Driver::Cuda { ctx, .. } => {
                ctx.bind_to_thread()
                    .map_err(|e| cuda_err("pinned host allocation", e))?;
                // SAFETY: a plain allocation in the bound context.
                unsafe { result::malloc_host(bytes, 0) }
                    .map(|p| p as *mut u8)
                    .map_err(|e| {
                        Error::Cuda(format!("pinned host allocation of {bytes} bytes: {e}"))
                    })
            }
            Driver::Emu(_) => self
                .malloc(bytes)
                .map(|p| p as *mut u8)
                .map_err(|e| Error::Cuda(format!("pinned host allocation: {e}"))),
        }
    }

    /// Frees what `alloc_pinned(bytes)` returned.
    ///
    /// # Safety
    /// `ptr` came from `alloc_pinned(bytes)`, is freed once, and no queued copy uses it.
    pub(crate) unsafe fn free_pinned(&self, ptr: *mut u8, bytes: usize) {
        match self {
            Driver::Cuda { ctx, .. } => {
                let _ = ctx.bind_to_thread();
                // SAFETY: per the contract above.
                let _ = unsafe { result::free_host(ptr as *mut c_void) };
            }
            Driver::Emu(_) => self.free(ptr as u64, bytes),
        }
    }

    /// Queues a copy of `bytes` from pinned host memory to the device.
    ///
    /// # Safety
    /// `src` is pinned memory of at least `bytes` left untouched until the copy
    /// has run; `dst` starts a live allocation of at least `bytes`.
    pub(crate) unsafe fn htod_pinned(
        &self,
        dst: u64,
        src: *const u8,
        bytes: usize,
        op: &str,
    ) -> Result<()> {
        match self {
            Driver::Cuda { stream, .. } => {
                // SAFETY: per the contract above.
                let src = unsafe { std::slice::from_raw_parts(src, bytes) };
                // SAFETY: as above.
                unsafe { result::memcpy_htod_async(dst, src, stream.cu_stream()) }
                    .map_err(|e| cuda_err(op, e))
            }
            Driver::Emu(_) => {
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(src, dst as *mut u8, bytes) };
                Ok(())
            }
        }
    }

    /// Copies `bytes` from the device into pinned host memory and waits.
    ///
    /// # Safety
    /// `dst` is host memory of at least `bytes`; `src` starts a live
    /// allocation of at least `bytes`.
    pub(crate) unsafe fn dtoh_pinned(
        &self,
        dst: *mut u8,
        src: u64,
        bytes: usize,
        op: &str,
    ) -> Result<()> {
        // SAFETY: per the contract above.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst, bytes) };
        // SAFETY: as above.
        unsafe { self.dtoh(dst, src, op) }
    }

    /// `bytes` (> 0) of device memory.
    pub(crate) fn malloc(&self, bytes: usize) -> std::result::Result<u64, String> {
        match self {
            Driver::Cuda { ctx, .. } => {
                ctx.bind_to_thread().map_err(|e| e.to_string())?;
                // SAFETY: a plain allocation in the bound context.
                unsafe { result::malloc_sync(bytes) }.map_err(|e| e.to_string())
            }
            Driver::Emu(_) => {
                let layout = std::alloc::Layout::from_size_align(bytes, EMU_ALIGN)
                    .map_err(|e| e.to_string())?;
                // SAFETY: bytes > 0 (the pool never asks for 0).
                let p = unsafe { std::alloc::alloc(layout) };
                if p.is_null() {
                    Err(format!("host allocation of {bytes} bytes failed"))
                } else {
                    Ok(p as u64)
                }
            }
        }
    }

    /// Frees what `malloc(bytes)` returned; the caller made sure no queued
    /// work uses it.
    pub(crate) fn free(&self, ptr: u64, bytes: usize) {
        match self {
            Driver::Cuda { .. } => {
                // SAFETY: ptr came from malloc_sync and is freed once.
                let _ = unsafe { result::free_sync(ptr) };
            }
            Driver::Emu(_) => {
                if let Ok(layout) = std::alloc::Layout::from_size_align(bytes, EMU_ALIGN) {
                    // SAFETY: allocated above with this layout, freed once.
                    unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
                }
            }
        }
    }

    /// Waits for the device before memory is given back to it.
    pub(crate) fn quiesce(&self) -> bool {
        match self {
            Driver::Cuda { ctx, .. } => ctx.bind_to_thread().is_ok() && ctx.synchronize().is_ok(),
            Driver::Emu(_) => true,
        }
    }

    /// Zeroes `bytes` at `ptr`.
    ///
    /// # Safety
    /// `ptr` starts a live allocation of at least `bytes`.
    pub(crate) unsafe fn memset0(&self, ptr: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match self {
            Driver::Cuda { stream, .. } => {
                result::memset_d8_async(ptr, 0, bytes, stream.cu_stream())
                    .map_err(|e| cuda_err("memset", e))
            }
            Driver::Emu(_) => {
                std::ptr::write_bytes(ptr as *mut u8, 0, bytes);
                Ok(())
            }
        }
    }

    /// Copies `src` to the device at `dst` (`src` may be dropped on return).
    ///
    /// # Safety
    /// `dst` starts a live allocation of at least `size_of_val(src)` bytes.
    pub(crate) unsafe fn htod<T>(&self, dst: u64, src: &[T]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        match self {
            // A copy from pageable memory has read `src` when the call returns.
            Driver::Cuda { stream, .. } => result::memcpy_htod_async(dst, src, stream.cu_stream())
                .map_err(|e| cuda_err("upload", e)),
            Driver::Emu(_) => {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr() as *const u8,
                    dst as *mut u8,
                    std::mem::size_of_val(src),
                );
                Ok(())
            }
        }
    }

    /// Copies `dst.len()` elements from the device to the host and waits.
    ///
    /// # Safety
    /// `src` starts a live allocation of at least `size_of_val(dst)` bytes.
    pub(crate) unsafe fn dtoh<T>(&self, dst: &mut [T], src: u64, op: &str) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        match self {
            Driver::Cuda { stream, .. } => {
                result::memcpy_dtoh_async(dst, src, stream.cu_stream())
                    .map_err(|e| cuda_err(op, e))?;
                self.sync(op)
            }
            Driver::Emu(_) => {
                std::ptr::copy_nonoverlapping(
                    src as *const u8,
                    dst.as_mut_ptr() as *mut u8,
                    std::mem::size_of_val(dst),
                );
                Ok(())
            }
        }
    }

    /// Device-to-device copy of `bytes`.
    ///
    /// # Safety
    /// Both addresses start live allocations of at least `bytes`.
    pub(crate) unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match self {
            Driver::Cuda { stream, .. } => {
                result::memcpy_dtod_async(dst, src, bytes, stream.cu_stream())
                    .map_err(|e| cuda_err("copy", e))
            }
            Driver::Emu(_) => {
                std::ptr::copy(src as *const u8, dst as *mut u8, bytes);
                Ok(())
            }
        }
    }

    /// Launches `func` (CUDA) or the emulator's kernel `name`.
    ///
    /// # Safety
    /// `args` holds one pointer per kernel parameter, each to a live value of
    /// exactly the parameter's type, and every device address among them is
    /// valid for the launch shape.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn launch(
        &self,
        func: Option<&cudarc::driver::CudaFunction>,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        match self {
            Driver::Cuda { stream, .. } => {
                let f = func.ok_or_else(|| Error::Cuda(format!("{name}: no CUDA function")))?;
                result::launch_kernel(
                    f.cu_function(),
                    grid,
                    (block, 1, 1),
                    smem,
                    stream.cu_stream(),
                    args,
                )
                .map_err(|e| cuda_err(name, e))
            }
            Driver::Emu(emu) => {
                // On the stack: a launch allocates nothing, as on a GPU.
                let mut cname = [0u8; 128];
                if name.len() >= cname.len() || name.contains('\0') {
                    return Err(Error::Invalid(format!("kernel name {name:?}")));
                }
                cname[..name.len()].copy_from_slice(name.as_bytes());
                let mut err = [0u8; 1024];
                let _guard = EMU_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                let rc = (emu.launch)(
                    cname.as_ptr() as *const c_char,
                    grid.0,
                    grid.1,
                    grid.2,
                    block,
                    smem,
                    args.as_mut_ptr(),
                    err.as_mut_ptr() as *mut c_char,
                    err.len(),
                );
                if rc != 0 {
                    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
                    return Err(Error::Cuda(format!(
                        "emulator: {}",
                        String::from_utf8_lossy(&err[..end])
                    )));
                }
                Ok(())
            }
        }
    }

    /// Sets the dynamic shared memory opt-in of a CUDA function.
    pub(crate) fn allow_smem(
        &self,
        func: Option<&cudarc::driver::CudaFunction>,
        smem: u32,
    ) -> Result<()> {
        if let (Driver::Cuda { .. }, Some(f)) = (self, func) {
            // SAFETY: sets an attribute of a loaded function of this context.
            unsafe {
                result::function::set_function_attribute(
                    f.cu_function(),
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .map_err(|e| cuda_err("set shared memory", e))?;
        }
        Ok(())
    }
}
