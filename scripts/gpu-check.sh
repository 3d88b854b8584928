#!/usr/bin/env bash
# gpu-check.sh: everything a GPU session checks, in one run, ending in a Markdown
# report (device, date, commit; tests; kernel benches; end-to-end table) for
# docs/gpu-results.md.
#
#   1. every CUDA test (crates/cuda/tests): on a GPU a test that prints SKIP fails;
#   2. the criterion kernel benches (crates/cuda/benches/cuda_kernels.rs: device
#      synchronise around each timed batch, 0.5 s warm-up, 2 s of samples, median);
#   3. end to end: every fixture of tests/fixtures generated on cuda and on cpu
#      (greedy and beam 4; ids must be identical), and `encdec bench` of
#      random-weight bart-large-cnn, t5-base and opus-mt-en-de shapes on W1-W4
#      in f32 and bf16, as one table of tokens/s, step p50, encoder time, peak
#      device memory;
#   3b. the decode step with and without CUDA graphs (ENCDEC_CUDA_GRAPHS=0),
#      bart-large-cnn W1 in f16, alternating runs; and W2/W3 in f16 with and
#      without split-K of the tensor-core linears (ENCDEC_CUDA_SPLITK=0)
#   4. `encdec profile` of a bart-large-cnn shape on W1 with a Chrome trace (op
#      times from CUDA events).
#
# Usage:
#   scripts/gpu-check.sh [--bundle DIR] [--report FILE] [--quick] [--only LIST]
#                        [--bench-filter REGEX]
#     --bundle DIR  run the executables of scripts/cuda-bundle.sh DIR (for a GPU
#                   machine without a Rust toolchain); default: build them here into
#                   .gpu-bundle when cargo exists, else use .gpu-bundle as it is
#                   (or unpack .gpu-bundle.tar.xz, which cuda-bundle.sh also writes).
#     --report FILE where the Markdown goes (default $OUT/gpu-results.md if $OUT
#                   is set, else target/gpu-results.md); logs go beside it.
#     --quick       tiny end-to-end workloads and no kernel benches (a smoke run
#                   of this script, e.g. on the CPU emulator: ENCDEC_CUDA_EMU=lib).
#     --only LIST   run only these sections, comma-separated: tests, benches
#                   (kernel benches + cuBLAS yardstick), fixtures, shapes, graphs,
#                   profile. A lent GPU machine allows 10 minutes per command: run
#                   `--only tests,fixtures` (~3 min), `--only benches` (~7 min),
#                   `--only shapes,graphs,profile` as separate commands, each with
#                   its own --report, and join the reports.
#     --bench-filter REGEX  only the kernel benches whose name matches (criterion's
#                   filter), e.g. 'linear|attention'.
# Exit: 0 all checks passed; 1 a check failed; 3 no GPU (and no emulator).
set -uo pipefail
cd "$(dirname "$0")/.."

bundle="" report="" quick=0 only="tests,benches,fixtures,shapes,graphs,profile" bench_filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --only) only=$2; shift 2 ;;
    --bench-filter) bench_filter=$2; shift 2 ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for sec in ${only//,/ }; do
  case "$sec" in
    tests|benches|fixtures|shapes|graphs|profile) ;;
    *) echo "gpu-check: unknown section '$sec' in --only (tests, benches, fixtures, shapes, graphs, profile)" >&2; exit 2 ;;
  esac
done
# Whether section $1 is to run.
want() { [[ ",$only," == *",$1,"* ]]; }
report=${report:-${OUT:+$OUT/gpu-results.md}}
report=${report:-target/gpu-results.md}
logs="$(dirname "$report")/gpu-check-logs"
mkdir -p "$logs"

# --- the device ------------------------------------------------------------
if [ -n "${ENCDEC_CUDA_EMU:-}" ]; then
  device="CPU emulator of the kernels ($ENCDEC_CUDA_EMU): logic only, timings meaningless"
elif gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null) && [ -n "$gpu" ]; then
  device=$(echo "$gpu" | head -n 1)
else
  echo "gpu-check: no GPU (nvidia-smi lists none) and ENCDEC_CUDA_EMU is not set: nothing to check" >&2
  exit 3
fi

# --- the executables --------------------------------------------------------
if [ -z "$bundle" ]; then
  bundle=.gpu-bundle
  if [ ! -x "$bundle/encdec" ] && [ -f "$bundle.tar.xz" ] && ! command -v cargo >/dev/null; then
    echo "== unpacking $bundle.tar.xz"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle.tar.xz" "$(dirname "$bundle")" || exit 1
  fi
  if command -v cargo >/dev/null; then
    echo "== building the bundle ($bundle)"
    scripts/cuda-bundle.sh "$bundle" >"$logs/build.log" 2>&1 || { tail -n 30 "$logs/build.log"; exit 1; }
  fi
fi
[ -x "$bundle/encdec" ] || { echo "gpu-check: $bundle/encdec missing (run scripts/cuda-bundle.sh $bundle)" >&2; exit 1; }
encdec="$bundle/encdec"

fail=0
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "# GPU check"
  echo
  echo "- device: $device"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit; $(uname -m)"
  echo "- sections: $only${bench_filter:+ (benches matching '$bench_filter')}"
  echo
} >"$report"

# --- 1. tests ---------------------------------------------------------------
if want tests; then
echo "== tests"
{
  echo "## Tests (crates/cuda/tests)"
  echo
  echo "| test binary | result | skipped |"
  echo "|---|---|---|"
} >>"$report"
for t in "$bundle"/*.test; do
  name=$(basename "$t" .test)
  "$t" --nocapture >"$logs/$name.log" 2>&1
  rc=$?
  result=$(grep -E '^test result' "$logs/$name.log" | tail -n 1 | sed 's/^test result: //; s/; finished.*//')
  skips=$(grep -c '^SKIP' "$logs/$name.log")
  status=ok
  if [ $rc -ne 0 ]; then status="FAILED"; fail=1; fi
  # On a GPU (or the emulator) nothing may skip: a skip means the device was not used.
  if [ "$skips" -gt 0 ]; then status="$status, SKIPPED"; fail=1; fi
  echo "| $name | $status: ${result:-no result line} | $skips |" >>"$report"
  echo "   $name: $status ($result)"
done
echo >>"$report"
fi

# --- 2. kernel benches ------------------------------------------------------
if want benches && [ $quick -eq 0 ] && [ -x "$bundle/cuda_kernels.bench" ]; then
  echo "== kernel benches"
  "$bundle/cuda_kernels.bench" --bench --output-format bencher ${bench_filter:+"$bench_filter"} \
    >"$logs/kernels.log" 2>&1 || fail=1
  {
    echo "## Kernel benches (median per call, launch included)"
    echo
    echo "| bench | ns/call |"
    echo "|---|---|"
    grep '^test ' "$logs/kernels.log" | awk '{print "| " $2 " | " $5 " |"}'
    echo
  } >>"$report"
fi
if want benches && [ $quick -eq 0 ] && [ -x "$bundle/cublas_yardstick.bench" ]; then
  echo "== cuBLAS yardstick"
  if "$bundle/cublas_yardstick.bench" >"$logs/cublas.log" 2>&1; then
    { echo "## FP16 GEMM vs cuBLAS (goal: >= 70% on large shapes)"; echo; grep -v '^SKIP' "$logs/cublas.log"; echo; } >>"$report"
  else
    echo "cuBLAS yardstick failed: $(tail -n 1 "$logs/cublas.log")" >>"$report"; fail=1
  fi
fi

# --- 3. end to end ----------------------------------------------------------
if want fixtures; then
echo "== fixtures: cuda vs cpu"
{
  echo "## Fixtures: cuda vs cpu (same ids)"
  echo
  echo "| fixture | greedy | beam 4 |"
  echo "|---|---|---|"
} >>"$report"
input="$logs/sentences.txt"
printf '%s\n' "the small house" "a cat sat on the mat with a hat" "" "tomorrow we will see" >"$input"
for dir in tests/fixtures/*/; do
  [ -f "$dir/config.json" ] || continue
  fx=$(basename "$dir")
  row="| $fx"
  for beams in 1 4; do
    for dev in cpu cuda; do
      "$encdec" generate --model "$dir" --device "$dev" --num-beams $beams --max-new-tokens 12 \
        --format jsonl --input "$input" >"$logs/$fx-b$beams-$dev.jsonl" 2>"$logs/$fx-b$beams-$dev.err"
    done
    if cmp -s "$logs/$fx-b$beams-cpu.jsonl" "$logs/$fx-b$beams-cuda.jsonl"; then
      row="$row | same"
    elif python3 - "$logs/$fx-b$beams-cpu.jsonl" "$logs/$fx-b$beams-cuda.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l)["ids"] for l in open(f) if l.strip()] for f in sys.argv[1:3])
sys.exit(0 if a == b and a else 1)
PY
    then
      row="$row | same ids (scores differ)"
    else
      row="$row | **DIFFERENT** (see $logs/$fx-b$beams-*.jsonl)"; fail=1
    fi
  done
  echo "$row |" >>"$report"
done
echo >>"$report"
fi

if want shapes; then
echo "== bench shapes"
{
  echo "## End to end: random-weight shapes (\`encdec bench\`, EOS off)"
  echo
  echo "| model | dtype | workload | tokens/s | step p50 ms | encoder ms | peak device MB |"
  echo "|---|---|---|---|---|---|---|"
} >>"$report"
if [ $quick -eq 1 ]; then
  runs=(--model tests/fixtures/t5 --batch 2 --src-len 8 --new-tokens 4 --runs 1 --warmup 0)
  models=(t5-fixture)
  dtypes=(f32)
else
  models=(bart-large-cnn t5-base opus-mt-en-de)
  dtypes=(f32 bf16)
fi
for m in "${models[@]}"; do
  for dt in "${dtypes[@]}"; do
    json="$logs/bench-$m-$dt.json"
    if [ $quick -eq 1 ]; then args=("${runs[@]}"); else args=(--arch "$m" --random-weights --runs 3 --warmup 1); fi
    if "$encdec" bench "${args[@]}" --device cuda --dtype "$dt" --format json >"$json" 2>"$logs/bench-$m-$dt.err"; then
      python3 - "$json" "$m" "$dt" >>"$report" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def f(x, scale=1.0, nd=1):
    return "-" if x is None else f"{x * scale:.{nd}f}"
for w in r["results"]:
    print(f"| {sys.argv[2]} | {sys.argv[3]} | {w['workload']} | {f(w.get('tokens_per_s'))} | "
          f"{f(w.get('step_p50_ms'), 1, 2)} | {f(w.get('encoder_s'), 1e3, 2)} | {f(w.get('peak_device_mb'), 1, 1)} |")
PY
    else
      echo "| $m | $dt | - | failed: $(tail -n 1 "$logs/bench-$m-$dt.err") | | | |" >>"$report"; fail=1
    fi
  done
done
echo >>"$report"
fi

if want graphs; then
echo "== CUDA graphs, split-K"
# on_off VAR TAG TITLE NAME DTYPE ROUNDS ARGS...: `encdec bench ARGS` with VAR=1
# and VAR=0, alternating, ROUNDS times, one table row per workload and run.
on_off() {
  local var=$1 tag=$2 title=$3 name=$4 dt=$5 rounds=$6; shift 6
  {
    echo "## $title (\`encdec bench\`, alternating runs)"
    echo
    echo "| model | dtype | workload | $tag | tokens/s | encoder ms | step p50 ms | steps recorded / replayed |"
    echo "|---|---|---|---|---|---|---|---|"
  } >>"$report"
  for round in $(seq "$rounds"); do
    for on in 1 0; do
      local out="$logs/$tag-$on-$round"
      if env "$var=$on" "$encdec" bench "$@" --device cuda --dtype "$dt" --format json \
          >"$out.json" 2>"$out.err"; then
        python3 - "$out.json" "$name" "$dt" "$on" >>"$report" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for w in r["results"]:
    print(f"| {sys.argv[2]} | {sys.argv[3]} | {w['workload']} | {'on' if sys.argv[4] == '1' else 'off'} | "
          f"{w.get('tokens_per_s', 0):.1f} | {1e3 * (w.get('encoder_s') or 0):.3f} | {w.get('step_p50_ms') or 0:.3f} | "
          f"{w.get('recorded_steps', '-')} / {w.get('replayed_steps', '-')} |")
PY
      else
        echo "| $name | $dt | - | $on | failed: $(tail -n 1 "$out.err") | | | |" >>"$report"; fail=1
      fi
    done
  done
  echo >>"$report"
}
# 3b. The decode step recorded once and replayed (CUDA graphs, the default)
# against op by op (ENCDEC_CUDA_GRAPHS=0), on the FP16 shape of the
# decode-step goal (docs/performance.md "GPU goals"); then split-K
# (kernels/gemm_tc.cu) against none (ENCDEC_CUDA_SPLITK=0) on decode steps of
# 16 rows (W2: batch 16; W3: 4 beams x 4 sources), which run the tensor-core
# linears whose output tiles alone leave most SMs idle (docs/performance.md).
if [ $quick -eq 1 ]; then
  on_off ENCDEC_CUDA_GRAPHS graphs "Decode step: recorded (CUDA graph) vs op by op" bart-fixture f32 1 \
    --model tests/fixtures/bart --batch 1 --src-len 8 --new-tokens 8 --runs 1 --warmup 0
  on_off ENCDEC_CUDA_SPLITK split-K "Decode steps of 16 rows: split-K on vs off" bart-fixture f16 1 \
    --model tests/fixtures/bart --batch 16 --src-len 8 --new-tokens 4 --runs 1 --warmup 0
  on_off ENCDEC_CUDA_ACT_F32 f32-activations "Encoder activations: f32 (on) vs f16 (off)" bart-fixture f16 1 \
    --model tests/fixtures/bart --batch 2 --src-len 40 --new-tokens 2 --runs 1 --warmup 0
else
  on_off ENCDEC_CUDA_GRAPHS graphs "Decode step: recorded (CUDA graph) vs op by op" bart-large-cnn f16 2 \
    --arch bart-large-cnn --random-weights --workload W1 --runs 3 --warmup 1
  on_off ENCDEC_CUDA_SPLITK split-K "Decode steps of 16 rows: split-K on vs off" bart-large-cnn f16 2 \
    --arch bart-large-cnn --random-weights --workload W2,W3 --runs 3 --warmup 1
  # The encoder's q/k/v, attention output and FFN activations in f16 (the
  # default for f16 models) against f32 (ENCDEC_CUDA_ACT_F32=1): same results
  # on the tensor-core paths, half the activation bytes; W4 is a 512-token source.
  on_off ENCDEC_CUDA_ACT_F32 f32-activations "Encoder activations: f32 (on) vs f16 (off)" bart-large-cnn f16 2 \
    --arch bart-large-cnn --random-weights --workload W4 --runs 3 --warmup 1
fi
fi

if want profile; then
echo "== profile"
# 4. `encdec profile` on the device: op times from CUDA events, a Chrome trace
# (kept beside the report), the top rows of the table.
if [ $quick -eq 1 ]; then
  pargs=(--model tests/fixtures/t5 --batch 1 --src-len 8 --new-tokens 4 --warmup 0)
  pname=t5-fixture
else
  pargs=(--arch bart-large-cnn --random-weights --workload W1 --warmup 1)
  pname=bart-large-cnn
fi
{
  echo "## Profile: $pname W1, f32 (\`encdec profile --device cuda\`, CUDA events per op)"
  echo
} >>"$report"
if "$encdec" profile "${pargs[@]}" --device cuda --trace "$logs/profile-trace.json" \
    >"$logs/profile.txt" 2>"$logs/profile.err"; then
  if grep -q "device clock" "$logs/profile.txt"; then
    { echo '```'; head -n 16 "$logs/profile.txt"; echo '```'; } >>"$report"
  else
    echo "profile: ops were not timed by device events (see $logs/profile.txt)" >>"$report"; fail=1
  fi
else
  echo "profile failed: $(tail -n 1 "$logs/profile.err")" >>"$report"; fail=1
fi
echo >>"$report"
fi

echo
cat "$report"
echo
if [ $fail -eq 0 ]; then echo "gpu-check: all checks passed"; else echo "gpu-check: FAILED (logs: $logs)"; fi
exit $fail
