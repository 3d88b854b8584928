#!/usr/bin/env bash
# check-kernels.sh: compile every kernels/*.cu with NVRTC for sm_80 and sm_90.
# Needs no GPU and no CUDA toolkit: only an NVRTC library (libnvrtc.so.N).
#
# What it checks (crates/cuda/tests/nvrtc_compile.rs):
#   - each kernel file compiles to PTX and to a cubin (ptxas runs too) for
#     sm_80 and sm_90 with the options the backend uses at run time;
#   - NVRTC's log is empty: a warning fails the check like an error;
#   - every kernel name the Rust launchers use is defined in the PTX;
#   - a compile error names the kernel file and line;
#   - then scripts/kernel-resources.py prints registers / spills / static shared
#     memory of every kernel (ptxas -v through NVRTC); a spill fails the check.
#
# Which NVRTC: $ENCDEC_NVRTC if set (a path to libnvrtc.so.N); else the one of
# the pip wheel `nvidia-cuda-nvrtc` found through python3's `nvidia` package
# (`python3 -m pip install nvidia-cuda-nvrtc` installs it); else the search of
# crates/cuda/src/nvrtc.rs (LD_LIBRARY_PATH, ldconfig, $CUDA_HOME, /usr/local/cuda).
#
# Usage: scripts/check-kernels.sh
# Exit: 0 all files compile cleanly; 1 a compile error or warning (the log is
# printed); 3 no NVRTC library could be loaded.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ENCDEC_NVRTC:-}" ]; then
  lib=$(python3 - 2>/dev/null <<'PY' || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
found = []
for root in list(nvidia.__path__):
    found += glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*"))
found = sorted(p for p in found if "builtins" not in os.path.basename(p))
if found:
    print(found[-1])
PY
)
  if [ -n "$lib" ]; then
    export ENCDEC_NVRTC="$lib"
  fi
fi
echo "NVRTC: ${ENCDEC_NVRTC:-<searched by crates/cuda/src/nvrtc.rs>}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test -p encdec-cuda --test nvrtc_compile -- --nocapture --test-threads=1 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  exit 1
fi
if grep -q '^SKIP every_kernel_file' "$log"; then
  echo "check-kernels: no NVRTC library could be loaded; nothing was compiled" >&2
  exit 3
fi
if ! python3 scripts/kernel-resources.py; then
  echo "check-kernels: a kernel spills registers (or ptxas -v failed), see above" >&2
  exit 1
fi
echo "check-kernels: every kernels/*.cu compiles for sm_80 and sm_90 without warnings or spills"
