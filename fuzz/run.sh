#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another, growing the
# committed corpora, and prints one line per target: executions, coverage, corpus, findings.
#   fuzz/run.sh 600        # the long run recorded in docs/fuzzing.md
# Needs cargo-fuzz (cargo install cargo-fuzz --locked). The toolchain is stable: cargo fuzz's
# nightly flags (-Z sanitizer=address) are let through with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-600}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  status=ok
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 \
    -print_final_stats=1 >"$log" 2>&1 || status="FAILED (see artifacts/$t)"
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo ?)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo ?)
  corp=$(ls "corpus/$t" | wc -l)
  echo "$t: ${SECONDS_EACH}s, $runs executions, coverage $cov edges, corpus $corp inputs: $status"
  if [ "$status" != ok ]; then tail -40 "$log"; fi
  rm -f "$log"
done
