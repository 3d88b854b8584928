//! The kernels of `kernels/`: one module per `.cu` file, compiled with NVRTC at
//! first use for the device's architecture and cached on disk.
//!
//! The sources are embedded with `include_str!`, so a binary needs no source
//! tree. Compiled images are cached under `$ENCDEC_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/encdec/kernels`, else `~/.cache/encdec/kernels` (an empty
//! `ENCDEC_KERNEL_CACHE` turns the cache off), in files named
//! `<file stem>-<target>-<hash>.{cubin,ptx}` where the hash covers the source,
//! `common.cuh`, the NVRTC options and the target. The target is `sm_XY` (machine
//! code, loaded as is) when NVRTC knows the device's architecture, else the
//! newest `compute_XY` it knows below it (PTX, compiled by the driver).
//! Machine code rather than PTX is preferred because a driver refuses PTX from
//! a newer NVRTC than itself, while it runs cubins built by newer 12.x/13.x minor versions.
//!
//! A compile error carries NVRTC's log, whose lines name the file and line:
//! `kernels/norm.cu(42): error: ...` (or `common.cuh(7): ...`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use encdec_core::{Error, Result};

use crate::nvrtc::{self, Compiled};

/// `kernels/common.cuh`, handed to NVRTC as the header `common.cuh`.
pub const COMMON_HEADER: &str = include_str!("../../../kernels/common.cuh");

/// Options every kernel file is compiled with (besides the target).
pub const NVRTC_OPTIONS: [&str; 2] = ["--std=c++17", "-lineinfo"];

/// One `kernels/*.cu` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Elementwise,
    Copy,
    Embedding,
    Norm,
    Softmax,
    Topk,
    Gemm,
    GemmTc,
    GemmI8Tc,
    Attention,
    AttentionTc,
    DecodeAttention,
}

impl Family {
    pub const ALL: [Family; 12] = [
        Family::Elementwise,
        Family::Copy,
        Family::Embedding,
        Family::Norm,
        Family::Softmax,
        Family::Topk,
        Family::Gemm,
        Family::GemmTc,
        Family::GemmI8Tc,
        Family::Attention,
        Family::AttentionTc,
        Family::DecodeAttention,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// File name inside `kernels/`.
    pub fn file(self) -> &'static str {
        match self {
            Family::Elementwise => "elementwise.cu",
            Family::Copy => "copy.cu",
            Family::Embedding => "embedding.cu",
            Family::Norm => "norm.cu",
            Family::Softmax => "softmax.cu",
            Family::Topk => "topk.cu",
            Family::Gemm => "gemm.cu",
            Family::GemmTc => "gemm_tc.cu",
            Family::GemmI8Tc => "gemm_i8_tc.cu",
            Family::Attention => "attention.cu",
            Family::AttentionTc => "attention_tc.cu",
            Family::DecodeAttention => "decode_attention.cu",
        }
    }

    /// The embedded source.
    pub fn source(self) -> &'static str {
        match self {
            Family::Elementwise => include_str!("../../../kernels/elementwise.cu"),
            Family::Copy => include_str!("../../../kernels/copy.cu"),
            Family::Embedding => include_str!("../../../kernels/embedding.cu"),
            Family::Norm => include_str!("../../../kernels/norm.cu"),
            Family::Softmax => include_str!("../../../kernels/softmax.cu"),
            Family::Topk => include_str!("../../../kernels/topk.cu"),
            Family::Gemm => include_str!("../../../kernels/gemm.cu"),
            Family::GemmTc => include_str!("../../../kernels/gemm_tc.cu"),
            Family::GemmI8Tc => include_str!("../../../kernels/gemm_i8_tc.cu"),
            Family::Attention => include_str!("../../../kernels/attention.cu"),
            Family::AttentionTc => include_str!("../../../kernels/attention_tc.cu"),
            Family::DecodeAttention => include_str!("../../../kernels/decode_attention.cu"),
        }
    }

    /// Every `extern "C"` kernel of the file (the launchers use exactly these).
    pub fn kernels(self) -> &'static [&'static str] {
        match self {
            Family::Elementwise => &[
                "add_assign_f32",
                "mul_assign_f32",
                "scale_f32",
                "scatter_fill_f32",
                "repetition_penalty_f32",
                "activation_f32",
                "gated_activation_f32",
                "cast_f32_f16",
                "cast_f32_bf16",
                "cast_f16_f32",
                "cast_bf16_f32",
                "cast_f16_bf16",
                "cast_bf16_f16",
                "dequantize_i8_f32",
                "dequantize_i8_f16",
                "dequantize_i8_bf16",
                "quantize_i8_f32",
                "quantize_i8_f16",
                "quantize_i8_bf16",
            ],
            Family::Copy => &[
                "write_rows_b2",
                "write_rows_b4",
                "write_rows_f32_to_f16",
                "write_rows_f32_to_bf16",
                "index_select_b1",
                "index_select_b2",
                "index_select_b4",
                "gather_b1",
                "gather_b2",
                "gather_b4",
            ],
            Family::Embedding => &[
                "embedding_f32",
                "embedding_f16",
                "embedding_bf16",
                "embedding_i8",
            ],
            Family::Norm => &[
                "layer_norm_f32",
                "rms_norm_f32",
                "add_layer_norm_f32",
                "add_rms_norm_f32",
                "layer_norm_f32_to_f16",
                "rms_norm_f32_to_f16",
                "add_layer_norm_f32_to_f16",
                "add_rms_norm_f32_to_f16",
                "layer_norm_f32_to_bf16",
                "rms_norm_f32_to_bf16",
                "add_layer_norm_f32_to_bf16",
                "add_rms_norm_f32_to_bf16",
            ],
            Family::Softmax => &["softmax_f32", "log_softmax_f32", "softmax_stats_f32"],
            Family::Topk => &["topk_stage_f32"],
            Family::Gemm => &[
                "linear_f32",
                "linear_f16",
                "linear_bf16",
                "linear_i8",
                "gemv_f32",
                "gemv_f16",
                "gemv_bf16",
                "gemv_i8",
                "batched_matmul_f32",
                "linear_gated_f32",
                "linear_gated_f16",
                "linear_gated_bf16",
                "linear_gated_i8",
                "gemv_gated_f32",
                "gemv_gated_f16",
                "gemv_gated_bf16",
                "gemv_gated_i8",
            ],
            Family::GemmTc => &[
                "linear_tc_f16",
                "linear_tc_bf16",
                "linear_gated_tc_f16",
                "linear_gated_tc_bf16",
                "linear_tc_f16_hx",
                "linear_tc_bf16_hx",
                "linear_gated_tc_f16_hx",
                "linear_gated_tc_bf16_hx",
                "splitk_reduce_f32",
                "splitk_reduce_gated_f32",
            ],
            Family::GemmI8Tc => &["linear_i8_tc", "linear_gated_i8_tc"],
            Family::Attention => &[
                "attention_f32_d32",
                "attention_f32_d64",
                "attention_f32_d128",
                "attention_f32_d256",
                "attention_kvf16_d32",
                "attention_kvf16_d64",
                "attention_kvf16_d128",
                "attention_kvf16_d256",
                "attention_kvbf16_d32",
                "attention_kvbf16_d64",
                "attention_kvbf16_d128",
                "attention_kvbf16_d256",
            ],
            Family::AttentionTc => &[
                "attention_tc_f16_d64",
                "attention_tc_f16_d128",
                "attention_tc_bf16_d64",
                "attention_tc_bf16_d128",
                "attention_tc_f16_hx_d64",
                "attention_tc_f16_hx_d128",
                "attention_tc_bf16_hx_d64",
                "attention_tc_bf16_hx_d128",
            ],
            Family::DecodeAttention => &[
                "attention_split_f32_d32",
                "attention_split_f32_d64",
                "attention_split_f32_d128",
                "attention_split_f32_d256",
                "attention_split_kvf16_d32",
                "attention_split_kvf16_d64",
                "attention_split_kvf16_d128",
                "attention_split_kvf16_d256",
                "attention_split_kvbf16_d32",
                "attention_split_kvbf16_d64",
                "attention_split_kvbf16_d128",
                "attention_split_kvbf16_d256",
                "attention_combine_f32",
                "attention_combine_kvf16",
                "attention_combine_kvbf16",
            ],
        }
    }
}

/// Compiles one kernel file for `target` (`sm_XY` or `compute_XY`) with the
/// process-wide NVRTC. `Err` is NVRTC's log (file and line on every message).
pub fn compile(family: Family, target: &str) -> std::result::Result<Compiled, String> {
    let nv = nvrtc::get()?;
    nv.compile(
        &format!("kernels/{}", family.file()),
        family.source(),
        &[("common.cuh", COMMON_HEADER)],
        target,
        &NVRTC_OPTIONS,
    )
}

/// FNV-1a, 64 bits: a stable hash for cache keys (std's hasher may change
/// between Rust releases).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes().iter().chain([0xffu8].iter()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The on-disk cache folder, or None when caching is off or there is no home.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("ENCDEC_KERNEL_CACHE") {
        return (!v.is_empty()).then(|| PathBuf::from(v));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("encdec/kernels"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/encdec/kernels"))
}

fn cache_path(family: Family, target: &str) -> Option<PathBuf> {
    let h = fnv1a(&[
        family.source(),
        COMMON_HEADER,
        &NVRTC_OPTIONS.join(" "),
        target,
    ]);
    let stem = family.file().trim_end_matches(".cu");
    let ext = if target.starts_with("sm_") {
        "cubin"
    } else {
        "ptx"
    };
    cache_dir().map(|d| d.join(format!("{stem}-{target}-{h:016x}.{ext}")))
}

/// The image of a family for the device: from the cache, or compiled (and cached).
fn image(family: Family, cc: (i32, i32)) -> std::result::Result<(Ptx, String), String> {
    let want = cc.0 * 10 + cc.1;
    let sm = format!("sm_{want}");
    // What NVRTC can target; without NVRTC only a cached cubin can help.
    let nv = nvrtc::get();
    let target = match &nv {
        Ok(n) => match n.supported_archs() {
            Some(archs) if archs.contains(&want) => sm.clone(),
            Some(archs) => match archs.iter().filter(|&&a| a <= want).max() {
                Some(a) => format!("compute_{a}"),
                None => {
                    return Err(format!(
                        "NVRTC {}.{} cannot target sm_{want} (it knows {archs:?})",
                        n.version().0,
                        n.version().1
                    ))
                }
            },
            None => sm.clone(),
        },
        Err(_) => sm.clone(),
    };
    let path = cache_path(family, &target);
    if let Some(p) = path.as_ref().filter(|p| p.exists()) {
        if let Ok(bytes) = std::fs::read(p) {
            let how = format!("{target} from {}", p.display());
            return Ok(if target.starts_with("sm_") {
                (Ptx::from_binary(bytes), how)
            } else {
                (
                    Ptx::from_src(String::from_utf8_lossy(&bytes).into_owned()),
                    how,
                )
            });
        }
    }
    let nv = nv?;
    let c = compile(family, &target)?;
    let how = format!(
        "{target} compiled by NVRTC {}.{}",
        nv.version().0,
        nv.version().1
    );
    let (ptx, bytes) = match c.cubin {
        Some(bin) if target.starts_with("sm_") => (Ptx::from_binary(bin.clone()), bin),
        _ => (Ptx::from_src(c.ptx.clone()), c.ptx.into_bytes()),
    };
    if let Some(p) = path {
        write_atomically(&p, &bytes);
    }
    Ok((ptx, how))
}

/// Best effort: a cache that cannot be written only costs a recompile.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

struct Loaded {
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
    how: String,
}

/// The loaded kernel modules of one device, each loaded at first use.
pub(crate) struct Kernels {
    ctx: Arc<CudaContext>,
    cc: (i32, i32),
    slots: [OnceLock<std::result::Result<Loaded, String>>; 10],
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded: Vec<&str> = Family::ALL
            .iter()
            .filter(|fam| matches!(self.slots[fam.index()].get(), Some(Ok(_))))
            .map(|fam| fam.file())
            .collect();
        write!(f, "Kernels {{ cc: {:?}, loaded: {loaded:?} }}", self.cc)
    }
}

impl Kernels {
    pub(crate) fn new(ctx: Arc<CudaContext>, cc: (i32, i32)) -> Self {
        Kernels {
            ctx,
            cc,
            slots: Default::default(),
        }
    }

    fn load(&self, family: Family) -> std::result::Result<Loaded, String> {
        let file = format!("kernels/{}", family.file());
        let (ptx, how) = image(family, self.cc).map_err(|e| {
            if e.starts_with(&file) {
                e
            } else {
                format!("{file}: {e}")
            }
        })?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("{file}: {e}"))?;
        let module = match self.ctx.load_module(ptx) {
            Ok(m) => m,
            Err(e) => {
                // A stale or foreign cache entry: drop it and compile afresh once.
                let target = format!("sm_{}{}", self.cc.0, self.cc.1);
                if let Some(p) = cache_path(family, &target) {
                    let _ = std::fs::remove_file(p);
                }
                let retry = compile(family, &target)
                    .ok()
                    .and_then(|c| c.cubin)
                    .map(Ptx::from_binary);
                match retry.map(|p| self.ctx.load_module(p)) {
                    Some(Ok(m)) => m,
                    _ => return Err(format!("{file}: loading its {how} failed: {e}")),
                }
            }
        };
        let mut funcs = HashMap::new();
        for &name in family.kernels() {
            let f = module
                .load_function(name)
                .map_err(|e| format!("{file}: kernel `{name}` not found in the module: {e}"))?;
            funcs.insert(name, f);
        }
        Ok(Loaded {
            _module: module,
            funcs,
            how,
        })
    }

    fn loaded(&self, family: Family) -> Result<&Loaded> {
        self.slots[family.index()]
            .get_or_init(|| self.load(family))
            .as_ref()
            .map_err(|e| Error::Cuda(e.clone()))
    }

    /// The kernel `name` of `family` (loading the module on first use).
    pub(crate) fn function(&self, family: Family, name: &'static str) -> Result<&CudaFunction> {
        self.loaded(family)?.funcs.get(name).ok_or_else(|| {
            Error::Cuda(format!(
                "kernels/{}: no kernel `{name}` is registered",
                family.file()
            ))
        })
    }

    /// Loads every module now; returns how each was obtained.
    pub(crate) fn load_all(&self) -> Result<Vec<String>> {
        Family::ALL
            .iter()
            .map(|&f| {
                self.loaded(f)
                    .map(|l| format!("kernels/{}: {}", f.file(), l.how))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The other way round: a kernel a file defines but the list leaves out
    /// is never loaded, so its launch fails on a GPU ("no kernel registered")
    /// while the emulator, which looks kernels up by name, runs it. Kernels
    /// are `extern "C" __global__ void [__launch_bounds__(..)] name(` or a
    /// `MACRO(name, ..)` line of a `#define MACRO(NAME, ..)` in the same file.
    #[test]
    fn every_kernel_a_file_defines_is_registered() {
        for f in Family::ALL {
            let src = f.source();
            let mut defined: Vec<String> = Vec::new();
            let mut macros: Vec<String> = Vec::new();
            for line in src.lines() {
                if let Some(rest) = line.trim_start().strip_prefix("#define ") {
                    if let Some((name, args)) = rest.split_once('(') {
                        if args.starts_with("NAME") {
                            macros.push(name.to_string());
                        }
                    }
                }
            }
            let mut rest = src;
            while let Some(at) = rest.find("extern \"C\" __global__ void") {
                rest = &rest[at + 27..];
                let mut head = rest.trim_start();
                if let Some(after) = head.strip_prefix("__launch_bounds__(") {
                    head = after.split_once(')').map_or("", |(_, r)| r).trim_start();
                }
                let name: String = head
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // the macros' own bodies name their kernel NAME
                if !name.is_empty() && name != "NAME" {
                    defined.push(name);
                }
            }
            for line in src.lines() {
                if let Some((m, args)) = line.split_once('(') {
                    if macros.iter().any(|x| x == m) {
                        let name: String = args
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if name != "NAME" {
                            defined.push(name);
                        }
                    }
                }
            }
            assert!(!defined.is_empty(), "{}: no kernel found", f.file());
            for k in &defined {
                assert!(
                    f.kernels().contains(&k.as_str()),
                    "{}: `{k}` is defined but not registered in Family::kernels",
                    f.file()
                );
            }
        }
    }

    #[test]
    fn every_registered_kernel_is_defined_in_its_file() {
        for f in Family::ALL {
            for k in f.kernels() {
                let src = f.source();
                let defined = src.contains(&format!(" {k}(")) || src.contains(&format!("({k}, "));
                assert!(defined, "{}: `{k}` is not defined", f.file());
            }
        }
    }

    #[test]
    fn cache_keys_depend_on_source_and_target() {
        let a = fnv1a(&["x", "y"]);
        assert_ne!(a, fnv1a(&["xy", ""]));
        assert_ne!(a, fnv1a(&["x", "z"]));
        let p90 = cache_path(Family::Norm, "sm_90");
        let p80 = cache_path(Family::Norm, "sm_80");
        if let (Some(a), Some(b)) = (p90, p80) {
            assert_ne!(a, b);
            assert!(a.to_string_lossy().contains("norm-sm_90-"));
        }
    }
}
