#!/usr/bin/env bash
# Control-plane benchmark: a synthetic fleet (2,000 sites, 10,000 appliances, 100,000 content
# files, 200,000 prefixes, full inventories reported), then in-process steering latency and wrk
# on /v1/steer, /v1/play and the health intake, over plain HTTP and over HTTPS (the same
# database, the control plane restarted with a certificate). Writes bench/results/control-plane.md.
#
#   bench/control_plane.sh                 # full size
#   SITES=200 CONTENT=10000 bench/control_plane.sh   # smaller, quicker
#   SITES=4000 CONTENT=200000 BENCH_DIR=/var/tmp/cp-20k REUSE=1 bench/control_plane.sh
#       # twice the size; REUSE=1 keeps a fleet built before in BENCH_DIR (same SITES/CONTENT)
#   CP=/path/to/old/control-plane PLAY_BENCH=/path/to/old/play_bench bench/control_plane.sh
#       # another build of the control plane (an A/B on the same fleet), not rebuilt here
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-cp}
DURATION=${DURATION:-10}
SITES=${SITES:-2000}
CONTENT=${CONTENT:-100000}
PORT=${PORT:-17070}
command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
REUSE=${REUSE:-0}
if [ -z "${CP:-}" ]; then
  cargo build --release -q -p control-plane --bin control-plane --example play_bench
  CP=$REPO/target/release/control-plane
fi
PLAY_BENCH=${PLAY_BENCH:-$REPO/target/release/examples/play_bench}
if [ "$REUSE" = 1 ] && [ -f "$WORK/cp.db" ] && [ -f "$WORK/data/clients.txt" ]; then
  reused=1
else
  reused=0
  rm -rf "$WORK" && mkdir -p "$WORK"
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/cp.key" -out "$WORK/cp.pem" 2>/dev/null
CP_PID=
start_cp() { # extra flags...
  [ -z "$CP_PID" ] || { kill "$CP_PID"; wait "$CP_PID" 2>/dev/null || true; }
  : > "$WORK/cp.log"
  "$CP" --db "$WORK/cp.db" --listen "127.0.0.1:$PORT" --trusted-proxy 127.0.0.1 --report-interval 3600 "$@" 2> "$WORK/cp.log" &
  CP_PID=$!
  # A 20,000-appliance fleet view takes seconds to load before the listening line.
  for _ in $(seq 600); do grep -q ' listening ' "$WORK/cp.log" && break; sleep 0.1; done
}
trap 'kill $CP_PID 2>/dev/null || true' EXIT
start_cp
TOKEN=$(cat "$WORK/cp.db.admin-token")
start=$(date +%s)
if [ $reused = 0 ]; then
  python3 "$REPO/bench/cp_fleet.py" --sites "$SITES" --content "$CONTENT" -- "http://127.0.0.1:$PORT" "$TOKEN" "$WORK/data"
fi
build_secs=$(( $(date +%s) - start ))
built="built through the API in ${build_secs} s"
[ $reused = 0 ] || built="built through the API before (reused)"

# One steering request loads the fleet view (it is read back lazily after admin changes), so the
# resident size below includes it.
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/steer?client_ip=11.0.0.1&content_id=x"
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$CP_PID/status")

steer_inproc=$("$CP" --db "$WORK/cp.db" --report-interval 3600 --bench-steer 100000 2>/dev/null | grep '^STEER' | sed 's/^STEER //')
echo "in-process steering: $steer_inproc"
# In-process plays for the load script's clients (wall clock; for instruction counts run it
# under callgrind, see control-plane/examples/play_bench.rs).
play_inproc=$("$PLAY_BENCH" "$WORK/cp.db" "$WORK/data/clients.txt" play 100000 2>/dev/null | grep '^PLAY' | sed 's/^PLAY //')
echo "in-process plays: $play_inproc"

field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
load() { # scheme mode conns duration
  MODE=$2 DATA="$WORK/data" TOKEN=$TOKEN wrk -t2 -c"$3" -d"$4s" --timeout 10s -s "$REPO/bench/cp_load.lua" \
    "$1://127.0.0.1:$PORT/" | grep '^RESULT' | sed 's/^RESULT //'
}
rows=()
for scheme in http https; do
  if [ $scheme = https ]; then start_cp --tls-cert "$WORK/cp.pem" --tls-key "$WORK/cp.key"; fi
  for mode in steer play health; do
    load $scheme $mode 32 2 >/dev/null
    r=$(load $scheme $mode 32 "$DURATION")
    echo "$scheme $mode: $r"
    rows+=("| $mode | $scheme | $(printf '%.0f' "$(field "$r" rps)") | $(echo "$(field "$r" p50_us)/1000" | bc -l | xargs printf '%.2f') | $(echo "$(field "$r" p99_us)/1000" | bc -l | xargs printf '%.2f') | $(field "$r" errors) |")
  done
done

{
  echo "# control-plane"
  echo
  echo "Written by \`bench/control_plane.sh\` (SITES=$SITES CONTENT=$CONTENT DURATION=$DURATION) on $(date -u +%Y-%m-%d); $(nproc) cores, wrk -t2 -c32 on the same machine."
  echo "Fleet: $SITES sites, $((SITES * 5)) appliances, $((SITES * 100)) prefixes, $CONTENT content files, 200 files held per site, $built; control-plane RSS with the fleet view loaded: $((rss_kib / 1024)) MiB."
  echo
  echo "In-process steering (\`control-plane --bench-steer 100000\`): $steer_inproc."
  echo "In-process plays (\`play_bench DB clients.txt play 100000\`): $play_inproc."
  echo
  echo "| load | scheme | req/s | p50 ms | p99 ms | errors |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "steer: GET /v1/steer (admin) for random clients and held files; play: POST /v1/play with random"
  echo "subscribers' player tokens and titles (4 renditions steered and signed each); health: POST delta"
  echo "reports from random appliances with their credentials (same routes, empty inventory delta)."
  echo "https: TLS 1.3 (P-256 certificate, rustls), keep-alive connections (one handshake each)."
  if [ -f "$REPO/bench/NOTES-control-plane.md" ]; then echo; cat "$REPO/bench/NOTES-control-plane.md"; fi
  echo
} > "$REPO/bench/results/control-plane.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/control-plane.md and bench/RESULTS.md"
