//! The device state every launcher uses, and the raw kernel launch.

use std::ffi::c_void;
use std::sync::Arc;

use encdec_core::{Error, Result};

use crate::driver::Driver;
use crate::memory::{Block, Pool};
use crate::module::{Family, Kernels};
use crate::staging::Staging;
use crate::DeviceInfo;

/// One device: its driver (context and the one stream all work runs on, or
/// the CPU emulator), the caching allocator and the kernel modules.
#[derive(Debug)]
pub(crate) struct Dev {
    pub(crate) drv: Arc<Driver>,
    pub(crate) pool: Arc<Pool>,
    /// Pinned host buffers of the per-step copies.
    pub(crate) staging: Staging,
    /// None when emulated (the emulator has every kernel built in).
    pub(crate) kernels: Option<Kernels>,
    pub(crate) info: DeviceInfo,
    /// Opt-in limit of dynamic shared memory per block (bytes).
    pub(crate) max_smem_optin: u32,
}

impl Dev {
    pub(crate) fn alloc(&self, bytes: usize) -> Result<Block> {
        self.pool.alloc(bytes)
    }

    /// Makes the context current on this thread (every op calls this first).
    pub(crate) fn bind(&self) -> Result<()> {
        self.drv.bind()
    }

    /// Waits for all queued work; a fault of an earlier kernel surfaces here.
    pub(crate) fn sync(&self, op: &str) -> Result<()> {
        self.drv.sync(op)
    }

    /// Enqueues kernel `name` of `family` on the stream.
    ///
    /// `args` holds one pointer per kernel parameter, in order, each to a value
    /// of exactly the parameter's type (see [`KArg`]). While recording, a
    /// failure also marks the recording failed (end_capture returns it).
    pub(crate) fn launch(
        &self,
        family: Family,
        name: &'static str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.launch_unnoted(family, name, grid, block, smem, args)
            .map_err(|e| self.drv.fail_recording(e))
    }

    fn launch_unnoted(
        &self,
        family: Family,
        name: &'static str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        if grid.1 > 65535 || grid.2 > 65535 {
            return Err(Error::Invalid(format!(
                "{name}: grid {grid:?} exceeds CUDA's 65535 blocks in y/z on {}",
                self.info.label()
            )));
        }
        let f = match &self.kernels {
            Some(k) => Some(k.function(family, name)?),
            // the emulator finds kernels by name: hold it to the registry a
            // GPU's modules are loaded from
            None if !family.kernels().contains(&name) => {
                return Err(Error::Cuda(format!(
                    "kernels/{}: no kernel `{name}` is registered",
                    family.file()
                )))
            }
            None => None,
        };
        if smem > 48 * 1024 {
            if smem > self.max_smem_optin {
                return Err(Error::Invalid(format!(
                    "{name}: needs {smem} bytes of shared memory, {} allows {}",
                    self.info.label(),
                    self.max_smem_optin
                )));
            }
            self.drv.allow_smem(f, smem)?;
        }
        // SAFETY: the caller passes one correctly typed value per kernel
        // parameter (`karg`), and every device pointer among them addresses a
        // live allocation large enough for the launch shape it computed; the
        // kernel runs on this backend's stream, ordered after the writes that
        // produced its inputs.
        unsafe { self.drv.launch(f, name, grid, block, smem, args) }
    }
}

/// A value that may be passed as a kernel parameter: its Rust type has the
/// size and layout of the CUDA parameter type (u64 device pointers, i64 = long
/// long, i32 = int, f32 = float, `#[repr(C)]` argument structs).
///
/// # Safety
/// Implement only for types whose layout matches the kernel parameter.
pub(crate) unsafe trait KArg {}
// SAFETY: plain scalars of the same size as their CUDA counterparts.
unsafe impl KArg for u64 {}
// SAFETY: as above.
unsafe impl KArg for i64 {}
// SAFETY: as above.
unsafe impl KArg for i32 {}
// SAFETY: as above.
unsafe impl KArg for f32 {}

/// Pointer to a kernel argument (the value must outlive the launch call).
pub(crate) fn karg<T: KArg>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

/// `[karg(&a), karg(&b), ..]`: the values are temporaries of the enclosing
/// statement, so use it inside the `launch(..)` call expression.
macro_rules! kargs {
    ($($a:expr),* $(,)?) => { [$($crate::launch::karg(&$a)),*] };
}
pub(crate) use kargs;

/// Blocks for a grid-stride loop over `n` elements with `threads` per block.
pub(crate) fn grid_for(n: usize, threads: u32) -> u32 {
    n.div_ceil(threads as usize).clamp(1, 65535) as u32
}
