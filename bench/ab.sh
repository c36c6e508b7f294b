#!/usr/bin/env bash
# A/B of two oca-daemon binaries on bench/run.sh's corpus (run bench/run.sh once first): the same
# wrk load on each, alternating, N rounds. For telling a change in oca-daemon from a change in
# nginx's figure or the machine's mood between runs of bench/run.sh.
#
#   git worktree add /var/tmp/base <rev> && (cd /var/tmp/base && cargo build --release -p oca-daemon)
#   A=/var/tmp/base/target/release/oca-daemon bench/ab.sh              # 1 MiB ranges, 1000 conns
#   A=... RANGE=65536 CONNS=32 N=3 bench/ab.sh
#   A=... B=... B_ARGS="--body-path sendfile" bench/ab.sh   # extra flags for one side
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-/var/tmp/oca-bench}
A=${A:?give A=path of the base oca-daemon}
B=${B:-$PWD/target/release/oca-daemon}
CONNS=${CONNS:-1000} RANGE=${RANGE:-1048576} D=${D:-8} N=${N:-3}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FILES="$(ls "$WORK/store/objects/bm" | tr '\n' ' ')"
export FILES FILE_BYTES=$((256 << 20))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait' EXIT
start() { # binary port admin-port [extra args...]
  local extra=("${@:4}")
  "$1" --help | grep -q -- --max-connections-per-client && extra+=(--max-connections-per-client 0)
  "$1" --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" --store "$WORK/store" --allow-unsigned \
    --workers 2 --engine uring "${extra[@]}" > /dev/null 2> "$WORK/ab-$2.log" &
  pids+=($!)
}
start "$A" 18180 18181 ${A_ARGS:-}
start "$B" 18280 18281 ${B_ARGS:-}
sleep 1
for _ in $(seq "$N"); do
  for p in 18180 18280; do
    RANGE_BYTES=$RANGE wrk -t2 -c"$CONNS" -d2s --timeout 10s -s bench/range.lua "http://127.0.0.1:$p/" > /dev/null
    r=$(RANGE_BYTES=$RANGE wrk -t2 -c"$CONNS" -d"${D}s" --timeout 10s -s bench/range.lua "http://127.0.0.1:$p/" | grep '^RESULT')
    echo "$([ $p = 18180 ] && echo A || echo B) range=$RANGE conns=$CONNS ${r#RESULT }"
  done
done
