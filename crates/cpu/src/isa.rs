//! Run-time ISA detection; tests can force a lower level to cover every path.

use std::sync::atomic::{AtomicU8, Ordering};

/// SIMD level, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar = 0,
    Neon = 1,
    Avx2 = 2,
    Avx512 = 3,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }
}

/// Best level this machine supports.
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
        {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
    }
    Isa::Scalar
}

/// AVX-512 VNNI (`vpdpbusd`) for int8 dot products.
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        detected() == Isa::Avx512 && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 BF16 (`vdpbf16ps`).
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        detected() == Isa::Avx512 && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

static FORCED: AtomicU8 = AtomicU8::new(u8::MAX);

/// The level ops dispatch on: the detected one, or a lower one forced by
/// [`force`] (tests use this to cover every path the machine can run).
pub fn active() -> Isa {
    let det = detected();
    match FORCED.load(Ordering::Relaxed) {
        0 => Isa::Scalar,
        1 if det >= Isa::Neon && cfg!(target_arch = "aarch64") => Isa::Neon,
        2 if det >= Isa::Avx2 => Isa::Avx2,
        _ => det,
    }
}

/// Force a level (clamped to what the machine has); `None` restores detection.
pub fn force(isa: Option<Isa>) {
    FORCED.store(isa.map(|i| i as u8).unwrap_or(u8::MAX), Ordering::Relaxed);
}

/// Every level this machine can run, scalar included (for tests).
pub fn available() -> Vec<Isa> {
    let det = detected();
    [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| {
            i == Isa::Scalar
                || (i == Isa::Neon && det == Isa::Neon)
                || (i >= Isa::Avx2 && i <= det && det != Isa::Neon)
        })
        .collect()
}
