//! Every `kernels/*.cu` file compiles with NVRTC for sm_80 (A100) and sm_90
//! (H100), to PTX and machine code, with an empty compiler log (no warnings),
//! and defines every kernel the launchers name. Needs no GPU, only libnvrtc;
//! without it the test prints SKIP (see `encdec_cuda::nvrtc` for where it
//! looks, or set ENCDEC_NVRTC=/path/to/libnvrtc.so.N). `scripts/check-kernels.sh`
//! runs this test with the pip wheel's NVRTC.

use encdec_cuda::module::{self, Family};

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

#[test]
fn every_kernel_file_compiles_for_sm80_and_sm90_without_warnings() {
    let nv = match encdec_cuda::nvrtc::get() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIP every_kernel_file_compiles_for_sm80_and_sm90_without_warnings: {e}");
            return;
        }
    };
    eprintln!("{nv:?}");
    let supported = nv.supported_archs();
    let mut fails = Vec::new();
    for fam in Family::ALL {
        for arch in ARCHS {
            let cc: i32 = arch[3..].parse().unwrap();
            if supported.as_ref().is_some_and(|s| !s.contains(&cc)) {
                eprintln!(
                    "SKIP kernels/{} for {arch}: NVRTC {:?} cannot target it",
                    fam.file(),
                    nv.version()
                );
                continue;
            }
            let t = std::time::Instant::now();
            match module::compile(fam, arch) {
                Err(log) => fails.push(log),
                Ok(c) => {
                    if !c.log.is_empty() {
                        fails.push(format!(
                            "kernels/{} ({arch}) compiled with warnings:\n{}",
                            fam.file(),
                            c.log
                        ));
                    }
                    if c.cubin.as_ref().is_none_or(|b| b.is_empty()) {
                        fails.push(format!("kernels/{} ({arch}): no cubin", fam.file()));
                    }
                    for k in fam.kernels() {
                        if !c.ptx.contains(&format!(".entry {k}(")) {
                            fails.push(format!(
                                "kernels/{} ({arch}): no kernel `{k}` in the PTX",
                                fam.file()
                            ));
                        }
                    }
                    eprintln!(
                        "ok kernels/{} {arch}: {} PTX bytes, {} cubin bytes, {:.1}s",
                        fam.file(),
                        c.ptx.len(),
                        c.cubin.as_ref().map_or(0, Vec::len),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
}

/// A compile error names the kernel file and the line (NVRTC's log is prefixed
/// with the program name we give it).
#[test]
fn a_compile_error_names_the_file_and_line() {
    let nv = match encdec_cuda::nvrtc::get() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIP a_compile_error_names_the_file_and_line: {e}");
            return;
        }
    };
    let src = "#include \"common.cuh\"\n\nextern \"C\" __global__ void broken(float* x) {\n    x[0] = undefined_name;\n}\n";
    let err = nv
        .compile(
            "kernels/broken.cu",
            src,
            &[("common.cuh", module::COMMON_HEADER)],
            "sm_80",
            &module::NVRTC_OPTIONS,
        )
        .unwrap_err();
    assert!(err.contains("kernels/broken.cu(4)"), "{err}");
    assert!(err.contains("undefined_name"), "{err}");
}
