#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes with cargo-fuzz (libFuzzer, AddressSanitizer):
#   scripts/fuzz.sh [RUNS] [TARGET...]      RUNS executions per target (default 1000000)
# Targets (fuzz/fuzz_targets/): frame, config, checkpoint, onnx, http. Each starts from its
# committed corpus (fuzz/corpus/<target>, read only); new inputs go to a scratch directory.
# A crash, a leak, an input slower than 10 s or a run above 2 GiB of memory fails the script,
# with the reproducer in fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run <target> <file>`). Installs the nightly toolchain and cargo-fuzz if
# they are missing. The first build compiles tract under ASan: ~10 minutes on 2 cores.
# BIT_FUZZ_SANITIZER=none (CI's short run) keeps libFuzzer's coverage and every panic and
# timeout check but drops AddressSanitizer, whose build of tract is the slow part; the
# million-execution runs use the default, address.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
runs=${1:-1000000}
[ $# -gt 0 ] && shift
targets=("$@")
sanitizer=${BIT_FUZZ_SANITIZER:-address}
[ ${#targets[@]} -gt 0 ] || targets=(frame config checkpoint onnx http)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +stable install cargo-fuzz --locked
for t in "${targets[@]}"; do
  cargo +nightly fuzz build -O -s "$sanitizer" "$t"
done
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  start=$(date +%s)
  if ! cargo +nightly fuzz run -O -s "$sanitizer" "$t" "$scratch/$t" "corpus/$t" -- \
      -runs="$runs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: $t FAILED; reproducer in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  line=$(printf '%-11s %10s executions in %5d s, %s, corpus %s inputs' "$t" "$execs" "$(($(date +%s) - start))" "${cov:-cov: ?}" "$(ls "$scratch/$t" | wc -l)")
  echo "fuzz.sh: $line"
  summary+=("$line")
done
printf '%s\n' "${summary[@]}"
