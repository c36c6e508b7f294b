#!/usr/bin/env bash
# A/B of two oca-daemon binaries on bench/run.sh's corpus (run bench/run.sh once first): the same
# wrk load on each, alternating, N rounds. For telling a change in oca-daemon from a change in
# nginx's figure or the machine's mood between runs of bench/run.sh.
#
#   git worktree add /var/tmp/base <rev> && (cd /var/tmp/base && cargo build --release -p oca-daemon)
#   A=/var/tmp/base/target/release/oca-daemon bench/ab.sh              # 1 MiB ranges, 1000 conns
#   A=... RANGE=65536 CONNS=32 N=3 bench/ab.sh
#   A=... B=... B_ARGS="--body-path sendfile" bench/ab.sh   # extra flags for one side
#   A=... TLS=1 CLOSE=1 RANGE=1024 CONNS=32 bench/ab.sh       # HTTPS, a new connection per request
#                                               (run bench/https.sh once first: its certificate)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-/var/tmp/oca-bench}
A=${A:?give A=path of the base oca-daemon}
B=${B:-$PWD/target/release/oca-daemon}
CONNS=${CONNS:-1000} RANGE=${RANGE:-1048576} D=${D:-8} N=${N:-3} TLS=${TLS:-0} CLOSE=${CLOSE:-0}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FILES="$(ls "$WORK/store/objects/bm" | tr '\n' ' ')"
export FILES FILE_BYTES=$((256 << 20))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait' EXIT
start() { # binary port admin-port [extra args...]
  local extra=("${@:4}")
  "$1" --help | grep -q -- --max-connections-per-client && extra+=(--max-connections-per-client 0)
  if [ "$TLS" = 1 ]; then
    extra+=(--tls-listen "127.0.0.1:$(($2 + 2))" --tls-cert "$WORK/tls/cert.pem" --tls-key "$WORK/tls/key.pem")
  fi
  "$1" --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" --store "$WORK/store" --allow-unsigned \
    --workers 2 --engine uring "${extra[@]}" > /dev/null 2> "$WORK/ab-$2.log" &
  pids+=($!)
}
start "$A" 18180 18181 ${A_ARGS:-}
start "$B" 18280 18281 ${B_ARGS:-}
sleep 1
for _ in $(seq "$N"); do
  for p in 18180 18280; do
    url="http://127.0.0.1:$p/"
    [ "$TLS" = 1 ] && url="https://127.0.0.1:$((p + 2))/"
    RANGE_BYTES=$RANGE CLOSE=$CLOSE wrk -t2 -c"$CONNS" -d2s --timeout 10s -s bench/range.lua "$url" > /dev/null
    r=$(RANGE_BYTES=$RANGE CLOSE=$CLOSE wrk -t2 -c"$CONNS" -d"${D}s" --timeout 10s -s bench/range.lua "$url" | grep '^RESULT')
    echo "$([ $p = 18180 ] && echo A || echo B) range=$RANGE conns=$CONNS tls=$TLS close=$CLOSE ${r#RESULT }"
  done
done
