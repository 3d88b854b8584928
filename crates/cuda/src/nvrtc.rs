//! NVRTC, the run-time CUDA C++ compiler, opened with `libloading`.
//!
//! cudarc 0.19 (built for CUDA 12.8 here) looks only for `libnvrtc.so`,
//! `libnvrtc.so.12` and older names, so it misses CUDA 13 toolkits and the
//! `nvidia-cuda-nvrtc` pip wheel, which ship `libnvrtc.so.13`; and it panics when
//! none is found. This module binds the handful of C functions it needs and
//! searches, in order:
//! 1. `$ENCDEC_NVRTC` (a path to the library; nothing else is tried when set),
//! 2. `libnvrtc.so`, `libnvrtc.so.13`, `.12`, `.11.2` through the loader's own
//!    search (`LD_LIBRARY_PATH`, the ldconfig cache),
//! 3. `lib64/` of `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`, and the
//!    `nvidia/*/lib` folders of Python environments (`$VIRTUAL_ENV`, pyenv,
//!    `/usr/local/lib/python3*`, `/opt/*/.venv`) where pip puts the wheel.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Prog = *mut c_void;
type Res = c_int;

/// The functions of libnvrtc this crate calls (copied out of the library,
/// which [`Nvrtc`] keeps loaded).
#[allow(clippy::type_complexity)]
struct Fns {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Res,
    create: unsafe extern "C" fn(
        *mut Prog,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Res,
    compile: unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> Res,
    log_size: unsafe extern "C" fn(Prog, *mut usize) -> Res,
    log: unsafe extern "C" fn(Prog, *mut c_char) -> Res,
    ptx_size: unsafe extern "C" fn(Prog, *mut usize) -> Res,
    ptx: unsafe extern "C" fn(Prog, *mut c_char) -> Res,
    cubin_size: Option<unsafe extern "C" fn(Prog, *mut usize) -> Res>,
    cubin: Option<unsafe extern "C" fn(Prog, *mut c_char) -> Res>,
    destroy: unsafe extern "C" fn(*mut Prog) -> Res,
    error_string: unsafe extern "C" fn(Res) -> *const c_char,
    num_archs: Option<unsafe extern "C" fn(*mut c_int) -> Res>,
    archs: Option<unsafe extern "C" fn(*mut c_int) -> Res>,
}

/// A loaded NVRTC library.
pub struct Nvrtc {
    fns: Fns,
    path: String,
    version: (i32, i32),
    _lib: libloading::Library,
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NVRTC {}.{} ({})",
            self.version.0, self.version.1, self.path
        )
    }
}

/// Output of one compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// PTX text (always produced).
    pub ptx: String,
    /// Machine code for a real architecture (`sm_XY` targets, NVRTC >= 11.1).
    pub cubin: Option<Vec<u8>>,
    /// The compiler's log: empty when there were no warnings.
    pub log: String,
}

/// Library names tried through the dynamic loader's own search.
const NAMES: [&str; 5] = [
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
    "libnvrtc.so.11.1",
];

/// Every place this module looks for libnvrtc, in order (see the module docs).
pub fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("ENCDEC_NVRTC") {
        return vec![PathBuf::from(p)];
    }
    let mut out: Vec<PathBuf> = NAMES.iter().map(PathBuf::from).collect();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(d) = std::env::var_os(var) {
            dirs.push(Path::new(&d).join("lib64"));
            dirs.push(Path::new(&d).join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    dirs.push("/usr/local/cuda/targets/sbsa-linux/lib".into());
    let mut py_roots: Vec<String> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        py_roots.push(format!(
            "{}/lib/python3*/site-packages",
            v.to_string_lossy()
        ));
    }
    if let Some(h) = std::env::var_os("HOME") {
        py_roots.push(format!(
            "{}/.pyenv/versions/*/lib/python3*/site-packages",
            h.to_string_lossy()
        ));
        py_roots.push(format!(
            "{}/.local/lib/python3*/site-packages",
            h.to_string_lossy()
        ));
    }
    py_roots.extend(
        [
            "/opt/*/.venv/lib/python3*/site-packages",
            "/usr/local/lib/python3*/dist-packages",
            "/usr/local/lib/python3*/site-packages",
            "/usr/lib/python3/dist-packages",
        ]
        .map(String::from),
    );
    for root in py_roots {
        for sub in [
            "nvidia/cu13/lib",
            "nvidia/cuda_nvrtc/lib",
            "nvidia/cu12/lib",
        ] {
            dirs.extend(expand(&format!("{root}/{sub}")));
        }
    }
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libnvrtc.so"))
            })
            .collect();
        // Newest first (libnvrtc.so.13 before libnvrtc.so.12).
        found.sort();
        found.reverse();
        out.extend(found);
    }
    out
}

/// Expands `*` in path segments (no other glob syntax), existing paths only.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut acc = vec![PathBuf::from("/")];
    for seg in pattern.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for base in &acc {
            if let Some((pre, post)) = seg.split_once('*') {
                let Ok(rd) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
                    })
                    .map(|e| e.path())
                    .collect();
                names.sort();
                next.extend(names);
            } else {
                let p = base.join(seg);
                if p.exists() {
                    next.push(p);
                }
            }
        }
        acc = next;
    }
    acc
}

/// The process-wide NVRTC, loaded on first use; `Err` says where it looked.
pub fn get() -> Result<&'static Nvrtc, String> {
    static NVRTC: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    NVRTC.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Nvrtc, String> {
    let cands = candidates();
    let mut errors = Vec::new();
    for c in &cands {
        // SAFETY: loading libnvrtc runs no initialisers with preconditions.
        match unsafe { libloading::Library::new(c.as_os_str()) } {
            Ok(lib) => match Nvrtc::bind(lib, c.display().to_string()) {
                Ok(n) => return Ok(n),
                Err(e) => errors.push(format!("{}: {e}", c.display())),
            },
            Err(e) => {
                if c.is_absolute() {
                    errors.push(format!("{}: {e}", c.display()))
                }
            }
        }
    }
    Err(format!(
        "NVRTC (libnvrtc.so) was not found: install the CUDA toolkit or `pip install \
         nvidia-cuda-nvrtc`, or set ENCDEC_NVRTC=/path/to/libnvrtc.so.N (tried {}{})",
        cands
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if errors.is_empty() {
            String::new()
        } else {
            format!("; {}", errors.join("; "))
        }
    ))
}

impl Nvrtc {
    fn bind(lib: libloading::Library, path: String) -> Result<Self, String> {
        // SAFETY: each symbol is looked up by its C name and given the signature
        // of the NVRTC C API (nvrtc.h, stable since CUDA 7); the function
        // pointers stay valid while `_lib` keeps the library loaded.
        unsafe {
            macro_rules! req {
                ($name:literal) => {
                    *lib.get($name)
                        .map_err(|e| format!("missing {}: {e}", stringify!($name)))?
                };
            }
            macro_rules! opt {
                ($name:literal) => {
                    lib.get($name).ok().map(|s| *s)
                };
            }
            let fns = Fns {
                version: req!(b"nvrtcVersion\0"),
                create: req!(b"nvrtcCreateProgram\0"),
                compile: req!(b"nvrtcCompileProgram\0"),
                log_size: req!(b"nvrtcGetProgramLogSize\0"),
                log: req!(b"nvrtcGetProgramLog\0"),
                ptx_size: req!(b"nvrtcGetPTXSize\0"),
                ptx: req!(b"nvrtcGetPTX\0"),
                cubin_size: opt!(b"nvrtcGetCUBINSize\0"),
                cubin: opt!(b"nvrtcGetCUBIN\0"),
                destroy: req!(b"nvrtcDestroyProgram\0"),
                error_string: req!(b"nvrtcGetErrorString\0"),
                num_archs: opt!(b"nvrtcGetNumSupportedArchs\0"),
                archs: opt!(b"nvrtcGetSupportedArchs\0"),
            };
            let (mut major, mut minor) = (0, 0);
            let r = (fns.version)(&mut major, &mut minor);
            if r != 0 {
                return Err(format!("nvrtcVersion failed ({r})"));
            }
            Ok(Nvrtc {
                fns,
                path,
                version: (major, minor),
                _lib: lib,
            })
        }
    }

    /// `(major, minor)` of the library.
    pub fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Compute capabilities this NVRTC can target as `sm_XY` (e.g. 90 for sm_90),
    /// or None when the library cannot tell (NVRTC < 11.2).
    pub fn supported_archs(&self) -> Option<Vec<i32>> {
        let (num, archs) = (self.fns.num_archs?, self.fns.archs?);
        let mut n: c_int = 0;
        // SAFETY: the out-pointer is valid; the second call writes n ints.
        unsafe {
            if num(&mut n) != 0 || n <= 0 {
                return None;
            }
            let mut v = vec![0 as c_int; n as usize];
            if archs(v.as_mut_ptr()) != 0 {
                return None;
            }
            Some(v)
        }
    }

    fn err(&self, r: Res) -> String {
        // SAFETY: nvrtcGetErrorString returns a static C string for any code.
        let s = unsafe { (self.fns.error_string)(r) };
        if s.is_null() {
            format!("NVRTC error {r}")
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
        }
    }

    /// Compiles `source` named `name` (the name prefixes every log line, e.g.
    /// `kernels/norm.cu(12): error: ...`), with `headers` as `(include name,
    /// text)` and the given options. `arch` is `sm_XY` (PTX and CUBIN) or
    /// `compute_XY` (PTX only). `Err` holds the full log.
    pub fn compile(
        &self,
        name: &str,
        source: &str,
        headers: &[(&str, &str)],
        arch: &str,
        extra_options: &[&str],
    ) -> Result<Compiled, String> {
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("{name}: NUL byte in input"));
        let src = cstr(source)?;
        let cname = cstr(name)?;
        let hdr_text: Vec<CString> = headers
            .iter()
            .map(|h| cstr(h.1))
            .collect::<Result<_, _>>()?;
        let hdr_name: Vec<CString> = headers
            .iter()
            .map(|h| cstr(h.0))
            .collect::<Result<_, _>>()?;
        let hdr_text_p: Vec<*const c_char> = hdr_text.iter().map(|c| c.as_ptr()).collect();
        let hdr_name_p: Vec<*const c_char> = hdr_name.iter().map(|c| c.as_ptr()).collect();
        let mut opts: Vec<CString> = vec![cstr(&format!("--gpu-architecture={arch}"))?];
        for o in extra_options {
            opts.push(cstr(o)?);
        }
        let opts_p: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();

        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: all pointers reference live CStrings/Vecs above, with the
        // counts NVRTC is told; `prog` is destroyed on every path below.
        unsafe {
            let r = (self.fns.create)(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                headers.len() as c_int,
                hdr_text_p.as_ptr(),
                hdr_name_p.as_ptr(),
            );
            if r != 0 {
                return Err(format!(
                    "{name}: nvrtcCreateProgram failed: {}",
                    self.err(r)
                ));
            }
            let r = (self.fns.compile)(prog, opts_p.len() as c_int, opts_p.as_ptr());
            let log = self.read(prog, self.fns.log_size, self.fns.log);
            let log = log
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .trim_end_matches('\0')
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            if r != 0 {
                (self.fns.destroy)(&mut prog);
                return Err(format!(
                    "{name}: NVRTC {}.{} ({arch}) failed: {}\n{log}",
                    self.version.0,
                    self.version.1,
                    self.err(r)
                ));
            }
            let ptx = self.read(prog, self.fns.ptx_size, self.fns.ptx).map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_string()
            });
            let cubin = match (arch.starts_with("sm_"), self.fns.cubin_size, self.fns.cubin) {
                (true, Some(sz), Some(get)) => self.read(prog, sz, get).ok(),
                _ => None,
            };
            (self.fns.destroy)(&mut prog);
            Ok(Compiled {
                ptx: ptx.map_err(|e| format!("{name}: {e}"))?,
                cubin,
                log,
            })
        }
    }

    /// Reads one of the program's outputs through its size/get pair.
    ///
    /// # Safety
    /// `prog` must be a live program and the pair must be matching NVRTC getters.
    unsafe fn read(
        &self,
        prog: Prog,
        size: unsafe extern "C" fn(Prog, *mut usize) -> Res,
        get: unsafe extern "C" fn(Prog, *mut c_char) -> Res,
    ) -> Result<Vec<u8>, String> {
        let mut n = 0usize;
        let r = size(prog, &mut n);
        if r != 0 {
            return Err(self.err(r));
        }
        let mut buf = vec![0u8; n.max(1)];
        let r = get(prog, buf.as_mut_ptr() as *mut c_char);
        if r != 0 {
            return Err(self.err(r));
        }
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_finds_existing_paths_only() {
        assert!(expand("/definitely/not/here/*").is_empty());
        let root = expand("/");
        assert_eq!(root, vec![PathBuf::from("/")]);
        // A pattern matching this crate's own sources.
        let manifest = env!("CARGO_MANIFEST_DIR");
        let found = expand(&format!("{manifest}/src/nv*.rs"));
        assert!(
            found.iter().any(|p| p.ends_with("src/nvrtc.rs")),
            "{found:?}"
        );
    }
}
