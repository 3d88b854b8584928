#!/usr/bin/env bash
# cuda-bundle.sh: build the CUDA backend's test and bench executables here and
# put them, stripped, in one folder that can travel to a GPU machine without a
# Rust toolchain, with run.sh to run them there.
#
# Usage:  scripts/cuda-bundle.sh [DIR]        (DIR defaults to .gpu-bundle)
# Also writes DIR.tar.xz (~11 MB; the folder is ~80 MB, over the 64 MiB a lent
# GPU machine's working tree may carry): carry that, and let gpu-check.sh
# unpack it there. Both are in .gitignore, so neither travels unless named.
# A lent machine, step by step (docs/gpu-results.md):
#   scripts/cuda-bundle.sh
#   run(carry=[".gpu-bundle.tar.xz"], "scripts/gpu-check.sh --only tests,fixtures")
# On the GPU machine, from the repository root (the e2e test reads
# tests/fixtures relative to the current directory, or $ENCDEC_FIXTURES):
#         DIR/run.sh            all CUDA tests (prints SKIP lines if no GPU)
#         DIR/run.sh bench      the criterion kernel benches too
#         scripts/gpu-check.sh --bundle DIR   tests, benches, end-to-end table
# Results: test logs under $OUT (if set) or DIR/logs.
# The executables are x86-64 Linux builds linked against this machine's glibc;
# they load libcuda and libnvrtc at run time (see crates/cuda/src/nvrtc.rs for
# where NVRTC is looked for, or set ENCDEC_NVRTC).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.gpu-bundle}
mkdir -p "$out"
rm -f "$out"/*.test "$out"/*.bench

copy_execs() { # $1: suffix; reads cargo's JSON messages on stdin
  python3 -c '
import json, sys, shutil
suffix, out = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] != "encdec_cuda":
        dst = out + "/" + m["target"]["name"] + "." + suffix
        shutil.copy(m["executable"], dst)
        print(dst)
' "$1" "$out"
}

cargo test -p encdec-cuda --tests --no-run --message-format=json 2>/dev/null | copy_execs test
cargo bench -p encdec-cuda --benches --no-run --message-format=json 2>/dev/null | copy_execs bench
# The command line too, for scripts/gpu-check.sh's end-to-end runs.
cargo build --release --bin encdec 2>/dev/null
cp target/release/encdec "$out/encdec"
strip "$out"/*.test "$out"/*.bench "$out/encdec" 2>/dev/null || true

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every bundled CUDA test (and with `bench`, the kernel benches); run from the repo root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
logs=${OUT:-$here/logs}
mkdir -p "$logs"
nvidia-smi -L 2>/dev/null || true
fail=0
for t in "$here"/*.test; do
  name=$(basename "$t" .test)
  echo "== $name"
  if ! "$t" --nocapture >"$logs/$name.log" 2>&1; then
    fail=1
    echo "FAILED $name (log: $logs/$name.log)"
    tail -n 40 "$logs/$name.log"
  else
    grep -E "^(SKIP|test result)" "$logs/$name.log" | head -5
  fi
done
if [ "${1:-}" = "bench" ]; then
  "$here"/cuda_kernels.bench --bench 2>&1 | tee "$logs/bench.log"
fi
exit $fail
RUN
chmod +x "$out/run.sh"
du -sh "$out"
# (python's tarfile unpacks it where no xz tool is installed)
tar -cJf "$out.tar.xz" -C "$(dirname "$out")" "$(basename "$out")"
du -sh "$out.tar.xz"
