#!/usr/bin/env bash
# build-cuda-emu.sh: build the CPU emulator of kernels/*.cu (crates/cuda/emu),
# so the CUDA backend's tests run the real kernel code on a machine without a
# GPU. Needs g++ (C++17) and python3; no CUDA.
#
# Usage:  scripts/build-cuda-emu.sh [OUT_DIR]       (default target/cuda-emu)
# Then:   ENCDEC_CUDA_EMU=$PWD/target/cuda-emu/libencdec_cuda_emu.so cargo test -p encdec-cuda
# The tests then print "NOTE ... emulated" instead of SKIP and compare every
# kernel with the CPU backend. Slow (every thread is a fiber): minutes.
# What the emulator can and cannot catch: crates/cuda/emu/emu.cpp header.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/cuda-emu}
mkdir -p "$out/src"
for f in kernels/*.cu kernels/common.cuh; do
  # Dynamic shared memory becomes the emulator's global `smem` buffer.
  sed 's/extern __shared__/extern/' "$f" > "$out/src/$(basename "$f")"
done
python3 - "$out/src" <<'PY'
import glob, os, re, sys
src = sys.argv[1]
files = sorted(glob.glob(os.path.join(src, "*.cu")))
names = []
for f in files:
    text = open(f).read()
    names += re.findall(r'extern "C" __global__ void\s+(?:__launch_bounds__\([\w, ]+\)\s*)?(\w+)\s*\(', text)
    names += re.findall(r'^(?:LINEAR|LINEAR_TC|GEMV|SPLIT|LINEAR_GATED|LINEAR_GATED_TC|GEMV_GATED)\((\w+),', text, re.M)
# The macro definitions themselves (`... __launch_bounds__(N) \ NAME(`) are not kernels.
names = [n for n in names if n not in ("__launch_bounds__", "NAME")]
with open(os.path.join(src, "kernels_all.inc"), "w") as o:
    for f in files:
        o.write(f'#include "{os.path.basename(f)}"\n')
with open(os.path.join(src, "kernels_table.inc"), "w") as o:
    for n in names:
        o.write(f"K({n}),\n")
print(f"{len(names)} kernels from {len(files)} files")
PY
g++ -std=c++17 -O2 -g -fno-strict-aliasing -fPIC -shared -Wall -Wno-unused-function -Wno-unused-variable -Wno-unknown-pragmas \
  -include crates/cuda/emu/cuda_emu.h -I "$out/src" -I crates/cuda/emu \
  crates/cuda/emu/emu.cpp -o "$out/libencdec_cuda_emu.so"
echo "built $out/libencdec_cuda_emu.so"
