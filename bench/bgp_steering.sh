#!/usr/bin/env bash
# How long the control plane takes to steer by a route change, on a fleet of 10,000 appliances
# (2,000 sites, 200,000 prefixes, all heard over BGP): from sending the health report that moves
# a prefix to another appliance to the first steering answer that follows it (bench/bgp_move.py),
# once on an idle control plane and once under steering load from wrk. Also the health intake
# rate when every report carries 100 BGP routes, and the in-process steering latency on that
# fleet. Writes bench/results/bgp-steering.md.
#
#   bench/bgp_steering.sh                          # full size
#   SITES=200 CONTENT=10000 bench/bgp_steering.sh  # smaller, quicker
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-bgp}
SITES=${SITES:-2000}
CONTENT=${CONTENT:-100000}
ROUNDS=${ROUNDS:-50}
PORT=${PORT:-17071}
command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p control-plane
CP=$REPO/target/release/control-plane
rm -rf "$WORK" && mkdir -p "$WORK"
: > "$WORK/cp.log"
"$CP" --db "$WORK/cp.db" --listen "127.0.0.1:$PORT" --report-interval 3600 2> "$WORK/cp.log" &
CP_PID=$!
trap 'kill $CP_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q ' listening ' "$WORK/cp.log" && break; sleep 0.1; done
TOKEN=$(cat "$WORK/cp.db.admin-token")
start=$(date +%s)
python3 "$REPO/bench/cp_fleet.py" --bgp --sites "$SITES" --content "$CONTENT" -- "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/data"
build_secs=$(( $(date +%s) - start ))
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/steer?client_ip=11.0.0.1&content_id=x"
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$CP_PID/status")
routes=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/metrics" | awk '/^cp_bgp_prefixes\{/ {n += $2} END {print n}')

field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
idle=$(python3 "$REPO/bench/bgp_move.py" --rounds "$ROUNDS" "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/data" | grep '^RESULT' | sed 's/^RESULT //')
echo "idle: $idle"
MODE=steer DATA="$WORK/data" TOKEN=$TOKEN wrk -t1 -c16 -d120s --timeout 10s -s "$REPO/bench/cp_load.lua" \
  "http://127.0.0.1:$PORT/" > "$WORK/wrk.log" 2>&1 &
WRK_PID=$!
sleep 2
loaded=$(python3 "$REPO/bench/bgp_move.py" --rounds "$ROUNDS" "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/data" | grep '^RESULT' | sed 's/^RESULT //')
kill -INT "$WRK_PID" 2>/dev/null || true
wait "$WRK_PID" 2>/dev/null || true
echo "under steering load: $loaded"
load_rps=$(grep '^RESULT' "$WORK/wrk.log" | tr ' ' '\n' | grep '^rps=' | cut -d= -f2 || true)
# Health intake when every report carries 100 BGP routes (unchanged: the steady state).
health() { MODE=health BGP=1 DATA="$WORK/data" TOKEN=$TOKEN wrk -t2 -c32 -d"$1s" --timeout 10s -s "$REPO/bench/cp_load.lua" \
  "http://127.0.0.1:$PORT/" | grep '^RESULT' | sed 's/^RESULT //'; }
health 2 > /dev/null
intake=$(health 10)
echo "health intake with BGP routes: $intake"
kill "$CP_PID"; wait "$CP_PID" 2>/dev/null || true
steer_inproc=$("$CP" --db "$WORK/cp.db" --report-interval 3600 --bench-steer 100000 2>/dev/null | grep '^STEER' | sed 's/^STEER //')
echo "in-process steering: $steer_inproc"

row() { # name result
  echo "| $1 | $(field "$2" move_p50_ms) | $(field "$2" move_p90_ms) | $(field "$2" move_max_ms) | $(field "$2" report_p50_ms) | $(field "$2" answers_before_following_max) |"
}
{
  echo "# control-plane: steering by BGP routes"
  echo
  echo "Written by \`bench/bgp_steering.sh\` (SITES=$SITES CONTENT=$CONTENT ROUNDS=$ROUNDS) on $(date -u +%Y-%m-%d); $(nproc) cores shared with other work, so figures are rough."
  echo "Fleet: $SITES sites, $((SITES * 5)) appliances, each hearing its site's 100 prefixes over BGP ($routes appliance-prefix pairs), $CONTENT content files, built through the API in ${build_secs} s; control-plane RSS with the fleet view loaded: $((rss_kib / 1024)) MiB."
  echo
  echo "A route moves: one appliance of a site hears a /25 with AS path length 2, another of the same site then reports it with length 1."
  echo "Timed from sending that report to the first steering answer (\`GET /v1/steer\` on its own keep-alive connection, asked back to back) that names the new appliance first; $ROUNDS moves."
  echo
  echo "| control plane | move p50 ms | move p90 ms | move max ms | report round trip p50 ms | answers before it followed (max) |"
  echo "|---|---|---|---|---|---|"
  row idle "$idle"
  row "under steering load (wrk -t1 -c16${load_rps:+, $load_rps req/s})" "$loaded"
  echo
  echo "Health intake, delta reports each carrying the appliance's 100 BGP routes unchanged (wrk -t2 -c32, 10 s): $(printf '%.0f' "$(field "$intake" rps)") reports/s, p50 $(echo "$(field "$intake" p50_us)/1000" | bc -l | xargs printf '%.2f') ms, p99 $(echo "$(field "$intake" p99_us)/1000" | bc -l | xargs printf '%.2f') ms, $(field "$intake" errors) errors."
  echo
  echo "In-process steering on this fleet (\`control-plane --bench-steer 100000\`): $steer_inproc."
  if [ -f "$REPO/bench/NOTES-bgp-steering.md" ]; then echo; cat "$REPO/bench/NOTES-bgp-steering.md"; fi
  echo
} > "$REPO/bench/results/bgp-steering.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/bgp-steering.md and bench/RESULTS.md"
