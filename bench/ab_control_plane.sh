#!/usr/bin/env bash
# A/B of two control-plane binaries on one synthetic fleet (bench/cp_fleet.py, built once with A;
# B gets a copy of the database and migrates it at start when its schema is newer), then the same
# wrk load on each (steer, play, health over plain HTTP), alternating, N rounds. For telling a
# change in the control plane from the machine's mood between runs of bench/control_plane.sh.
#
#   git worktree add --detach /var/tmp/base <rev> && (cd /var/tmp/base && cargo build --release -p control-plane)
#   A=/var/tmp/base/target/release/control-plane bench/ab_control_plane.sh
#   A=... N=5 D=10 SITES=2000 bench/ab_control_plane.sh
#   A=... B_ARGS="--probe-interval 0" bench/ab_control_plane.sh   # flags one side alone knows
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-cp-ab}
A=${A:?give A=path of the base control-plane}
B=${B:-$REPO/target/release/control-plane}
SITES=${SITES:-2000} CONTENT=${CONTENT:-100000} D=${D:-10} N=${N:-3} PORT=${PORT:-17072}
command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
rm -rf "$WORK" && mkdir -p "$WORK/a" "$WORK/b"
PID=
A_ARGS=${A_ARGS:-} B_ARGS=${B_ARGS:-}
start() { # binary side
  : > "$WORK/$2.log"
  local extra=$A_ARGS; [ "$2" = b ] && extra=$B_ARGS
  # shellcheck disable=SC2086 # the extra flags are words
  "$1" --db "$WORK/$2/cp.db" --listen "127.0.0.1:$PORT" --trusted-proxy 127.0.0.1 --report-interval 3600 $extra 2> "$WORK/$2.log" &
  PID=$!
  for _ in $(seq 300); do grep -q ' listening ' "$WORK/$2.log" && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
trap '[ -z "$PID" ] || kill $PID 2>/dev/null || true' EXIT
start "$A" a
TOKEN=$(cat "$WORK/a/cp.db.admin-token")
python3 "$REPO/bench/cp_fleet.py" --sites "$SITES" --content "$CONTENT" -- "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/data"
stop
cp -a "$WORK/a/." "$WORK/b/"
declare -A results sums
for round in $(seq "$N"); do
  for side in a b; do
    bin=$A; [ "$side" = b ] && bin=$B
    start "$bin" "$side"
    for mode in steer play health; do
      run() { MODE=$mode DATA="$WORK/data" TOKEN=$TOKEN wrk -t2 -c32 -d"$1s" --timeout 10s -s "$REPO/bench/cp_load.lua" \
        "http://127.0.0.1:$PORT/" | grep '^RESULT' | sed 's/^RESULT //'; }
      run 2 > /dev/null
      r=$(run "$D")
      rps=$(echo "$r" | tr ' ' '\n' | grep '^rps=' | cut -d= -f2)
      p99=$(echo "$r" | tr ' ' '\n' | grep '^p99_us=' | cut -d= -f2)
      echo "round $round $side $mode: $r"
      results[$mode,$side]+="$(printf '%.0f' "$rps") (p99 $(echo "$p99/1000" | bc -l | xargs printf '%.1f') ms), "
      sums[$mode,$side]=$(echo "${sums[$mode,$side]:-0} + $rps" | bc -l)
    done
    stop
  done
done
echo
echo "| load | A req/s by round | B req/s by round | B/A (means) |"
echo "|---|---|---|---|"
for mode in steer play health; do
  ratio=$(echo "${sums[$mode,b]} / ${sums[$mode,a]}" | bc -l | xargs printf '%.2f')
  echo "| $mode | ${results[$mode,a]%, } | ${results[$mode,b]%, } | $ratio |"
done
