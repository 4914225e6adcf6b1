#!/usr/bin/env bash
# cargo-fuzz targets of the parsers (fuzz/), each for a fixed short budget.
# Usage: bash ci/fuzz.sh [SECONDS per target, default 20]
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. The targets are safe Rust, so no sanitizer (-s none):
# faster to build and about twice the executions per second. Installs
# cargo-fuzz from crates.io when it is missing. New corpus entries stay in
# fuzz/corpus/ (ignored by git); the seeds in fuzz/seeds/ are read, not written.
# A crash fails the script; its input is in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-${FUZZ_SECS:-20}}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
for target in frame command; do
  mkdir -p "corpus/$target"
  echo "== cargo fuzz run $target for ${secs}s"
  # -seed fixed: the same run every time for a given corpus.
  cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -seed=1 -max_len=16384 -print_final_stats=1
done
