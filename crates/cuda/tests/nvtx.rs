//! NVTX ranges reach a profiler: a stand-in for Nsight's injection library
//! (built here from C with the system compiler) is named in
//! `NVTX_INJECTION64_PATH`, and the ranges `encdec_cuda::nvtx` opens and closes
//! must arrive at it in order. Runs without a GPU; skips without a C compiler.
//!
//! The stand-in speaks NVTX 3's injection protocol as its headers define it
//! (nvtxDetail/nvtxInit.h, nvtxTypes.h): NVTX calls `InitializeInjectionNvtx2`
//! with its export-table getter; the tool asks for the callbacks table
//! (`NVTX_ETID_CALLBACKS` = 1), gets the core module's function table
//! (`NVTX_CB_MODULE_CORE` = 1) and fills the slots of `nvtxRangePushA`
//! (`NVTX_CBID_CORE_RangePushA` = 9) and `nvtxRangePop` (11).

use std::path::PathBuf;
use std::process::Command;

const STAND_IN: &str = r#"
#include <stddef.h>
#include <string.h>

typedef void (*fn_ptr)(void);
typedef fn_ptr** function_table;
typedef struct {
    size_t struct_size;
    int (*get_module_function_table)(int module, function_table* out_table, unsigned* out_size);
} callbacks_table;
typedef const void* (*get_export_table_fn)(unsigned id);

static char log_buf[4096];

static void log_str(const char* s) {
    size_t used = strlen(log_buf);
    size_t n = strlen(s);
    if (used + n + 1 < sizeof log_buf) memcpy(log_buf + used, s, n + 1);
}

static int push_a(const char* message) {
    log_str("push ");
    log_str(message);
    log_str(";");
    return 0;
}

static int pop(void) {
    log_str("pop;");
    return 0;
}

const char* stand_in_log(void) { return log_buf; }

int InitializeInjectionNvtx2(get_export_table_fn get_export_table) {
    const callbacks_table* cb = (const callbacks_table*)get_export_table(1);
    function_table table = 0;
    unsigned size = 0;
    if (!cb || !cb->get_module_function_table(1, &table, &size) || size <= 11) return 0;
    *table[9] = (fn_ptr)push_a;
    *table[11] = (fn_ptr)pop;
    return 1;
}
"#;

fn build_stand_in() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("encdec-nvtx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("stand_in.c");
    let lib = dir.join("libnvtx_stand_in.so");
    std::fs::write(&src, STAND_IN).ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let ok = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(lib)
}

#[test]
fn ranges_reach_an_attached_profiler() {
    let Some(lib) = build_stand_in() else {
        eprintln!("SKIP: no C compiler (`cc`) to build the NVTX stand-in profiler");
        return;
    };
    // Before the first NVTX call of this process (this file is its own test binary).
    std::env::set_var("NVTX_INJECTION64_PATH", &lib);
    assert!(encdec_cuda::nvtx::attached());

    encdec_cuda::nvtx::range_push("decoder.layer.0");
    encdec_cuda::nvtx::range_push("linear");
    encdec_cuda::nvtx::range_pop();
    encdec_cuda::nvtx::range_pop();

    // SAFETY: the library built above; `stand_in_log` returns its static buffer.
    let log = unsafe {
        let handle = libloading::Library::new(&lib).expect("load the stand-in");
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const std::ffi::c_char> =
            handle.get(b"stand_in_log").expect("stand_in_log");
        std::ffi::CStr::from_ptr(get())
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(log, "push decoder.layer.0;push linear;pop;pop;");
}
