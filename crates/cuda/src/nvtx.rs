//! NVTX ranges, so that Nsight Systems / Nsight Compute timelines show encdec's
//! ops (and whatever else calls `Backend::range_push`) around the kernels.
//!
//! The `nvtx` crate compiles NVTX 3's header-only C API into the binary; a
//! profiler attaches by naming its injection library in `NVTX_INJECTION64_PATH`
//! (Nsight sets it when it launches the program), and NVTX loads that library at
//! the first call. Without it every NVTX call is a no-op, so the calls are skipped
//! altogether then: the crate builds a C string per push, and the decode loop
//! must not allocate when nobody is profiling.

use std::sync::OnceLock;

/// The environment variables through which NVTX finds a profiler's injection library.
const INJECTION_VARS: [&str; 2] = ["NVTX_INJECTION64_PATH", "NVTX_INJECTION32_PATH"];

/// Whether a profiler has asked for NVTX events (read once, as NVTX itself does).
pub fn attached() -> bool {
    static ATTACHED: OnceLock<bool> = OnceLock::new();
    *ATTACHED.get_or_init(|| {
        INJECTION_VARS
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
    })
}

/// Opens a range named `name` on this thread (when a profiler is attached).
pub fn range_push(name: &str) {
    if attached() {
        // A name with a NUL byte cannot cross to C; cut it there.
        let name = name.split('\0').next().unwrap_or_default();
        nvtx::range_push!("{name}");
    }
}

/// Closes this thread's innermost range (when a profiler is attached).
pub fn range_pop() {
    if attached() {
        nvtx::range_pop!();
    }
}
