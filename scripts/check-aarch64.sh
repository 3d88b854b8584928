#!/usr/bin/env bash
# Build and test the CPU backend for aarch64 (its NEON paths) on an x86-64 machine,
# under qemu user-mode emulation. Not part of .ci/run (it needs root for apt and the
# rustup target download); run it after changing SIMD code.
#
#   apt-get install -y qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#   rustup target add aarch64-unknown-linux-gnu
#   scripts/check-aarch64.sh            # clippy of encdec-cpu + its tests (NEON + scalar)
#   scripts/check-aarch64.sh -p encdec-models --test t5_parity   # any other cargo test args
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
if [ $# -eq 0 ]; then set -- -p encdec-cpu; fi
cargo clippy --target aarch64-unknown-linux-gnu -p encdec-cpu --all-targets -- -D warnings
cargo test --target aarch64-unknown-linux-gnu "$@"
