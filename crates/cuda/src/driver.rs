//! What the backend asks of a device: memory, copies, kernel launches, waits.
//!
//! Two implementations: the CUDA driver (cudarc, one stream), and the CPU
//! emulator of `crates/cuda/emu` (a shared library built by
//! `scripts/build-cuda-emu.sh`), which runs the same `kernels/*.cu` code with
//! the same argument lists on host memory, so the conformance tests can
//! exercise the kernels on a machine without a GPU.
//!
//! Both record a CUDA graph between [`Driver::begin_capture`] and
//! [`Driver::end_capture`] (see `crate::graph`): the CUDA driver by stream
//! capture, the emulator by storing its launches, copies and memsets.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

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

type EmuRecord = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> *mut c_void;
type EmuRunRecorded = unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> i32;
type EmuFreeRecorded = unsafe extern "C" fn(*mut c_void);

/// The emulator has global state (one block at a time), shared by every
/// backend that loaded it: launches are serialised process-wide.
static EMU_LOCK: Mutex<()> = Mutex::new(());

/// The CPU emulator library.
pub(crate) struct Emu {
    launch: EmuLaunch,
    record: EmuRecord,
    run_recorded: EmuRunRecorded,
    free_recorded: EmuFreeRecorded,
    rec: Rec,
    path: String,
    _lib: libloading::Library,
}

impl Drop for Emu {
    fn drop(&mut self) {
        // A recording never ended (the backend dropped mid-recording): free
        // its stored launches while the library is still loaded.
        let nodes = std::mem::take(&mut self.rec.lock().nodes);
        self.free_nodes(nodes);
    }
}

/// The recording state of a driver (one recording at a time).
///
/// A recording takes every op queued on the stream, whichever thread queues
/// it, so while one thread records, other threads' ops wait in
/// [`Driver::bind`] (every op binds first) until it ends. An op of another
/// thread already past its bind when the recording starts would still be
/// recorded: record while no other thread is in the middle of an op on this
/// backend (the generator records from the thread that drives it).
#[derive(Debug, Default)]
pub(crate) struct Rec {
    /// Set between begin_capture and end_capture: what ops check (one
    /// atomic load, so the eager path stays as cheap as before).
    active: AtomicBool,
    state: Mutex<RecState>,
    /// Notified when a recording ends.
    ended: Condvar,
}

#[derive(Debug, Default)]
struct RecState {
    /// The thread that records.
    owner: Option<ThreadId>,
    /// The first error of an op while recording; end_capture returns it.
    failed: Option<String>,
    /// Emulator only: what replay runs, in order.
    nodes: Vec<EmuNode>,
}

impl Rec {
    fn lock(&self) -> MutexGuard<'_, RecState> {
        // Every mutation is a push or a take: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Waits while another thread records (returns at once if none does).
    fn wait_for_others(&self) {
        let me = std::thread::current().id();
        let mut st = self.lock();
        while self.active() && st.owner.is_some_and(|o| o != me) {
            st = self.ended.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Keeps the first error of the recording for end_capture.
    fn note(&self, e: &Error) {
        let mut st = self.lock();
        if st.failed.is_none() {
            st.failed = Some(e.to_string());
        }
    }
}

/// One step of an emulated graph.
#[derive(Debug)]
pub(crate) enum EmuNode {
    /// A launch stored by `emu_record` (freed by `emu_free_recorded`).
    Kernel(EmuRecorded),
    /// A device-to-device copy (host memory on the emulator).
    Copy { dst: u64, src: u64, bytes: usize },
    /// A memset to zero.
    Zero { ptr: u64, bytes: usize },
}

/// A handle `emu_record` returned.
#[derive(Debug)]
pub(crate) struct EmuRecorded(*mut c_void);

// SAFETY: the handle points to an immutable C++ object (the kernel, shape and
// argument copies) that is only read, under EMU_LOCK, and freed once.
unsafe impl Send for EmuRecorded {}
// SAFETY: as above.
unsafe impl Sync for EmuRecorded {}

/// A finished recording, as the driver runs it.
#[derive(Debug)]
pub(crate) enum Exec {
    /// An instantiated CUDA graph.
    Cuda(CudaExec),
    /// The emulator's stored launches, copies and memsets.
    Emu(Vec<EmuNode>),
}

/// A `CUgraphExec` (destroyed by [`Driver::destroy_exec`]).
#[derive(Debug)]
pub(crate) struct CudaExec(sys::CUgraphExec);

// SAFETY: a graph exec is a driver handle usable from any thread with the
// context bound; `crate::graph` serialises the calls on one exec (CUDA graph
// objects are not internally synchronised).
unsafe impl Send for CudaExec {}
// SAFETY: as above.
unsafe impl Sync for CudaExec {}

/// The error of a host crossing while recording.
fn host_while_recording(op: &str) -> Error {
    Error::Invalid(format!(
        "{op}: cannot copy to or from the host while recording a CUDA graph \
         (upload step inputs before begin_capture, read results after replay)"
    ))
}

/// The emulator's error text in `err` (NUL-terminated).
fn emu_err(err: &[u8]) -> Error {
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Error::Cuda(format!(
        "emulator: {}",
        String::from_utf8_lossy(&err[..end])
    ))
}

impl Emu {
    fn free_nodes(&self, nodes: Vec<EmuNode>) {
        for n in nodes {
            if let EmuNode::Kernel(h) = n {
                // SAFETY: a handle of emu_record, freed once (moved out here).
                unsafe { (self.free_recorded)(h.0) };
            }
        }
    }
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
        rec: Rec,
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

    /// Whether the device has reached this mark, without waiting (the
    /// emulator runs every op at once: always).
    pub(crate) fn is_reached(&self) -> Result<bool> {
        match self {
            Mark::Cuda(e) => e.try_is_complete().map_err(|e| {
                Error::Cuda(format!(
                    "querying an event: {e} (a kernel queued earlier may have failed)"
                ))
            }),
            Mark::Host(_) => Ok(true),
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
        // An emulator built before recording existed lacks these: rebuild it.
        let missing = |name: &str, e: libloading::Error| {
            Error::NoCudaDevice(format!(
                "{path}: no {name} ({e}); rebuild it with scripts/build-cuda-emu.sh"
            ))
        };
        // SAFETY: these have these C signatures in crates/cuda/emu/emu.cpp.
        let record: EmuRecord = unsafe { lib.get::<EmuRecord>(b"emu_record\0") }
            .map(|s| *s)
            .map_err(|e| missing("emu_record", e))?;
        // SAFETY: as above.
        let run_recorded: EmuRunRecorded =
            unsafe { lib.get::<EmuRunRecorded>(b"emu_run_recorded\0") }
                .map(|s| *s)
                .map_err(|e| missing("emu_run_recorded", e))?;
        // SAFETY: as above.
        let free_recorded: EmuFreeRecorded =
            unsafe { lib.get::<EmuFreeRecorded>(b"emu_free_recorded\0") }
                .map(|s| *s)
                .map_err(|e| missing("emu_free_recorded", e))?;
        Ok(Driver::Emu(Emu {
            launch,
            record,
            run_recorded,
            free_recorded,
            rec: Rec::default(),
            path: path.to_string(),
            _lib: lib,
        }))
    }

    /// A CUDA driver on `stream` of `ctx`.
    pub(crate) fn cuda(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Self {
        Driver::Cuda {
            ctx,
            stream,
            rec: Rec::default(),
        }
    }

    fn rec(&self) -> &Rec {
        match self {
            Driver::Cuda { rec, .. } => rec,
            Driver::Emu(emu) => &emu.rec,
        }
    }

    /// Whether a recording is in progress.
    pub(crate) fn recording(&self) -> bool {
        self.rec().active()
    }

    /// Fails (and marks the recording failed) when a recording is in
    /// progress: `op` would cross to or from the host, or wait for the device.
    pub(crate) fn host_guard(&self, op: &str) -> Result<()> {
        let rec = self.rec();
        if rec.active() {
            let e = host_while_recording(op);
            rec.note(&e);
            return Err(e);
        }
        Ok(())
    }

    /// Marks the recording in progress (if any) failed with `e`; returns `e`.
    pub(crate) fn fail_recording(&self, e: Error) -> Error {
        let rec = self.rec();
        if rec.active() {
            rec.note(&e);
        }
        e
    }

    /// Passes `r` on, keeping its error for end_capture when recording.
    fn noted<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            let rec = self.rec();
            if rec.active() {
                rec.note(e);
            }
        }
        r
    }

    /// Starts recording the stream's work (the caller checked that no
    /// recording is in progress: the pool's recording is the lock).
    pub(crate) fn begin_capture(&self) -> Result<()> {
        let rec = self.rec();
        rec.wait_for_others();
        if rec.active() {
            return Err(Error::Invalid(
                "begin_capture: a recording is already in progress".into(),
            ));
        }
        let stray = {
            let mut st = rec.lock();
            st.failed = None;
            st.owner = Some(std::thread::current().id());
            // Launches another thread stored as the last recording ended.
            std::mem::take(&mut st.nodes)
        };
        self.free_nodes(stray);
        if let Driver::Cuda { ctx, stream, .. } = self {
            ctx.bind_to_thread()
                .map_err(|e| cuda_err("begin_capture", e))?;
            // Relaxed: the pool may call cuMemAlloc during a first recording,
            // which the global and thread-local modes forbid.
            // SAFETY: the backend's own live stream, not capturing (checked above).
            unsafe {
                result::stream::begin_capture(
                    stream.cu_stream(),
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
                )
            }
            .map_err(|e| cuda_err("begin_capture (cuStreamBeginCapture)", e))?;
        }
        rec.active.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the recording: what replay runs, or the first error of an op
    /// while recording (the recording is then discarded). Ops run as usual
    /// afterwards either way.
    pub(crate) fn end_capture(&self) -> Result<Exec> {
        let rec = self.rec();
        if let Driver::Cuda { ctx, .. } = self {
            // Before the state changes, so a failure leaves the recording as it was.
            ctx.bind_to_thread()
                .map_err(|e| cuda_err("end_capture", e))?;
        }
        if !rec.active.swap(false, Ordering::AcqRel) {
            return Err(Error::Invalid(
                "end_capture: no recording in progress (begin_capture first)".into(),
            ));
        }
        let (failed, nodes) = {
            let mut st = rec.lock();
            st.owner = None;
            (st.failed.take(), std::mem::take(&mut st.nodes))
        };
        rec.ended.notify_all();
        let failure = |msg: String| {
            Error::Invalid(format!(
                "end_capture: an op failed while recording, the recording is discarded: {msg}"
            ))
        };
        match self {
            Driver::Cuda { stream, .. } => {
                // Always end the capture on the stream, even after a failure,
                // so the stream runs work again.
                // SAFETY: the backend's stream, capturing since begin_capture.
                let graph = unsafe { result::stream::end_capture(stream.cu_stream()) };
                let graph = match (graph, failed) {
                    (Ok(g), None) if !g.is_null() => g,
                    (Ok(g), failed) => {
                        if !g.is_null() {
                            // SAFETY: the partial graph just returned, destroyed once.
                            let _ = unsafe { result::graph::destroy(g) };
                        }
                        return Err(failure(
                            failed.unwrap_or_else(|| "the driver returned no graph".into()),
                        ));
                    }
                    (Err(e), Some(msg)) => {
                        return Err(failure(format!("{msg} (then cuStreamEndCapture: {e})")))
                    }
                    (Err(e), None) => {
                        return Err(cuda_err(
                            "end_capture (cuStreamEndCapture: the capture was invalidated, \
                             e.g. by work that cannot be recorded)",
                            e,
                        ))
                    }
                };
                // SAFETY: a complete graph of this context.
                let exec =
                    unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
                // The executable graph is independent of the graph it came from.
                // SAFETY: `graph` came from end_capture above and is destroyed once.
                let _ = unsafe { result::graph::destroy(graph) };
                exec.map(|x| Exec::Cuda(CudaExec(x)))
                    .map_err(|e| cuda_err("end_capture (cuGraphInstantiate)", e))
            }
            Driver::Emu(_) => match failed {
                Some(msg) => {
                    self.free_nodes(nodes);
                    Err(failure(msg))
                }
                None => Ok(Exec::Emu(nodes)),
            },
        }
    }

    /// Queues a finished recording (no wait on a GPU; the emulator runs it).
    pub(crate) fn replay(&self, exec: &Exec) -> Result<()> {
        match (self, exec) {
            (Driver::Cuda { stream, .. }, Exec::Cuda(x)) => {
                // SAFETY: a live exec of this context, launched on its stream.
                unsafe { result::graph::launch(x.0, stream.cu_stream()) }
                    .map_err(|e| cuda_err("replay (cuGraphLaunch)", e))
            }
            (Driver::Emu(emu), Exec::Emu(nodes)) => {
                let mut err = [0u8; 1024];
                // The whole replay at once, as one launch would be.
                let _guard = EMU_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                for n in nodes {
                    match *n {
                        EmuNode::Kernel(ref h) => {
                            // SAFETY: a live handle of emu_record; `err` is writable.
                            let rc = unsafe {
                                (emu.run_recorded)(h.0, err.as_mut_ptr() as *mut c_char, err.len())
                            };
                            if rc != 0 {
                                return Err(emu_err(&err));
                            }
                        }
                        // SAFETY: the addresses were live blocks when recorded, and the
                        // caller keeps them alive while replaying (crate::graph).
                        EmuNode::Copy { dst, src, bytes } => unsafe {
                            std::ptr::copy(src as *const u8, dst as *mut u8, bytes)
                        },
                        // SAFETY: as above.
                        EmuNode::Zero { ptr, bytes } => unsafe {
                            std::ptr::write_bytes(ptr as *mut u8, 0, bytes)
                        },
                    }
                }
                Ok(())
            }
            _ => Err(Error::Invalid(
                "replay: a recording of another driver".into(),
            )),
        }
    }

    /// Frees what `end_capture` returned (a GPU finishes a replay in flight first).
    pub(crate) fn destroy_exec(&self, exec: Exec) {
        match (self, exec) {
            (Driver::Cuda { ctx, .. }, Exec::Cuda(x)) => {
                let _ = ctx.bind_to_thread();
                // SAFETY: a live exec, destroyed once; the driver defers freeing
                // it until a launch in flight has completed.
                let _ = unsafe { result::graph::exec_destroy(x.0) };
            }
            (_, Exec::Emu(nodes)) => self.free_nodes(nodes),
            (Driver::Emu(_), Exec::Cuda(_)) => {}
        }
    }

    fn free_nodes(&self, nodes: Vec<EmuNode>) {
        if let Driver::Emu(emu) = self {
            emu.free_nodes(nodes);
        }
    }

    pub(crate) fn is_emulated(&self) -> bool {
        matches!(self, Driver::Emu(_))
    }

    /// Makes the context current on this thread.
    pub(crate) fn bind(&self) -> Result<()> {
        let rec = self.rec();
        if rec.active() {
            rec.wait_for_others();
        }
        match self {
            Driver::Cuda { ctx, .. } => ctx
                .bind_to_thread()
                .map_err(|e| cuda_err("bind context", e)),
            Driver::Emu(_) => Ok(()),
        }
    }

    /// Waits for all queued work; a fault of an earlier kernel surfaces here.
    pub(crate) fn sync(&self, op: &str) -> Result<()> {
        self.host_guard(op)?;
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
        // A timestamp inside a recording would be one of the recording, not of a replay.
        self.host_guard("device_timestamp")?;
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
        self.host_guard("record event")?;
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
        self.host_guard(op)?;
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
        // Waiting for the device would break a recording in progress.
        if self.recording() {
            return false;
        }
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
            Driver::Cuda { stream, .. } => self.noted(
                result::memset_d8_async(ptr, 0, bytes, stream.cu_stream())
                    .map_err(|e| cuda_err("memset", e)),
            ),
            Driver::Emu(emu) if emu.rec.active() => {
                emu.rec.lock().nodes.push(EmuNode::Zero { ptr, bytes });
                Ok(())
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
        self.host_guard("upload")?;
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
        self.host_guard(op)?;
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

    /// Queues a copy of `bytes` from the device at `src` to the pinned host
    /// buffer `dst` without waiting (the emulator copies at once); the bytes
    /// are there after the next [`Driver::sync`].
    ///
    /// # Safety
    /// `dst` is pinned host memory of at least `bytes`, untouched until the
    /// sync; `src` starts a live device allocation of at least `bytes`.
    pub(crate) unsafe fn dtoh_pinned_queued(
        &self,
        dst: *mut u8,
        src: u64,
        bytes: usize,
        op: &str,
    ) -> Result<()> {
        self.host_guard(op)?;
        if bytes == 0 {
            return Ok(());
        }
        match self {
            Driver::Cuda { stream, .. } => {
                // SAFETY: per the contract above.
                let d = unsafe { std::slice::from_raw_parts_mut(dst, bytes) };
                // SAFETY: as above (pinned: the copy is truly asynchronous).
                unsafe { result::memcpy_dtoh_async(d, src, stream.cu_stream()) }
                    .map_err(|e| cuda_err(op, e))
            }
            Driver::Emu(_) => {
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst, bytes) };
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
            Driver::Cuda { stream, .. } => self.noted(
                result::memcpy_dtod_async(dst, src, bytes, stream.cu_stream())
                    .map_err(|e| cuda_err("copy", e)),
            ),
            Driver::Emu(emu) if emu.rec.active() => {
                emu.rec.lock().nodes.push(EmuNode::Copy { dst, src, bytes });
                Ok(())
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
                self.noted(
                    result::launch_kernel(
                        f.cu_function(),
                        grid,
                        (block, 1, 1),
                        smem,
                        stream.cu_stream(),
                        args,
                    )
                    .map_err(|e| cuda_err(name, e)),
                )
            }
            Driver::Emu(emu) => {
                // On the stack: a launch allocates nothing, as on a GPU.
                let mut cname = [0u8; 128];
                if name.len() >= cname.len() || name.contains('\0') {
                    return Err(Error::Invalid(format!("kernel name {name:?}")));
                }
                cname[..name.len()].copy_from_slice(name.as_bytes());
                let mut err = [0u8; 1024];
                if emu.rec.active() {
                    // Recorded, not run: emu_record copies the argument values
                    // (they are the caller's temporaries).
                    let h = (emu.record)(
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
                    if h.is_null() {
                        return self.noted(Err(emu_err(&err)));
                    }
                    emu.rec.lock().nodes.push(EmuNode::Kernel(EmuRecorded(h)));
                    return Ok(());
                }
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
                    return Err(emu_err(&err));
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
