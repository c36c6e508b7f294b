#!/usr/bin/env bash
# Soak: DURATION seconds (default 1800) of mixed load on both engines at once, plain and TLS:
# wrk range load, connection churn (a new connection per request, as fast as wrk can), slow
# readers, floods of pipelined requests and garbage, all at the same time, against an io_uring
# daemon and an epoll daemon (one worker each) on loopback. Well-formed clients must see no
# error; afterwards RSS, open descriptors, connections and clients must come back to their idle
# values. Writes bench/results/soak.md and bench/RESULTS.md.
#
#   bench/soak.sh                 # the 30-minute soak recorded in bench/RESULTS.md
#   DURATION=60 bench/soak.sh     # a quick one
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-soak}
DURATION=${DURATION:-1800}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for t in wrk openssl python3; do
  command -v $t >/dev/null || { echo "needs $t (apt-get install wrk openssl python3)" >&2; exit 1; }
done
cargo build --release -q -p oca-daemon
OCA=$REPO/target/release/oca-daemon
mkdir -p "$WORK/store/objects/so" "$WORK/tls" "$WORK/out"
FILES="" FILE_BYTES=$((64 << 20))
for i in 0 1 2 3; do
  f="$WORK/store/objects/so/so_title${i}_1080p.mp4"
  [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" = $FILE_BYTES ] || head -c $FILE_BYTES /dev/urandom > "$f"
  FILES="$FILES so_title${i}_1080p.mp4"
done
export FILES FILE_BYTES
FIRST=so_title0_1080p.mp4
CERT=$WORK/tls/cert.pem KEY=$WORK/tls/key.pem
[ -f "$CERT" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$KEY" -out "$CERT" -days 30 -subj /CN=localhost 2>/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
declare -A PORT TLSPORT ADMIN PID
start() { # engine base-port
  local e=$1 b=$2
  PORT[$e]=$b TLSPORT[$e]=$((b + 1)) ADMIN[$e]=$((b + 2))
  # Every client here is 127.0.0.1: the per-client cap is off, as for nginx.
  "$OCA" --engine "$e" --workers 1 --store "$WORK/store" --allow-unsigned \
    --listen 127.0.0.1:$b --tls-listen 127.0.0.1:$((b + 1)) --tls-cert "$CERT" --tls-key "$KEY" \
    --admin-listen 127.0.0.1:$((b + 2)) --max-connections-per-client 0 \
    --header-timeout 5 --keepalive-timeout 10 2> "$WORK/oca-$e.log" &
  PID[$e]=$!
  pids+=($!)
  for _ in $(seq 50); do grep -q ' listening ' "$WORK/oca-$e.log" && break; sleep 0.1; done
  curl -s -o /dev/null -r 0-99 "http://127.0.0.1:$b/c/$FIRST"
}
start uring 18180
start epoll 18190
metric() { curl -s "http://127.0.0.1:${ADMIN[$1]}/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
rss() { awk '/VmRSS/ {print $2}' "/proc/${PID[$1]}/status"; }
fds() { ls "/proc/${PID[$1]}/fd" | wc -l; }
snapshot() { # engine -> "rss_kib fds conns clients"
  echo "$(rss $1) $(fds $1) $(metric $1 oca_active_connections) $(metric $1 oca_connected_clients)"
}
declare -A IDLE
for e in uring epoll; do IDLE[$e]=$(snapshot $e); done

wrk_run() { # name proto port conns range close
  local name=$1 scheme=$2 port=$3 conns=$4 range=$5 close=$6
  RANGE_BYTES=$range CLOSE=$close wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 30s \
    -s "$REPO/bench/range.lua" "$scheme://127.0.0.1:$port/" > "$WORK/out/$name" 2>&1 &
  pids+=($!)
}
clients() { # name mode port tls conc
  python3 "$REPO/bench/soak_clients.py" "$2" "$3" "$4" "$DURATION" "$5" "$FIRST" \
    "$WORK/store/objects/so/$FIRST" > "$WORK/out/$1" 2>&1 &
  pids+=($!)
}
for e in uring epoll; do
  p=${PORT[$e]} t=${TLSPORT[$e]}
  wrk_run "$e-ranges" http "$p" 16 262144 0
  wrk_run "$e-ranges-tls" https "$t" 4 1048576 0
  wrk_run "$e-churn" http "$p" 8 4096 1
  wrk_run "$e-churn-tls" https "$t" 2 4096 1
  clients "$e-slow" slow "$p" 0 8
  clients "$e-slow-tls" slow "$t" 1 2
  clients "$e-pipeline" pipeline "$p" 0 2
  clients "$e-pipeline-tls" pipeline "$t" 1 1
  clients "$e-garbage" garbage "$p" 0 2
  clients "$e-garbage-tls" garbage "$t" 1 1
done
# Every 5 minutes (and at the end of the load): memory, descriptors, connections.
samples=()
declare -A FIRST_RSS
end=$((SECONDS + DURATION))
while [ $SECONDS -lt $end ]; do
  sleep $(( (end - SECONDS) < 300 ? (end - SECONDS) : 300 ))
  for e in uring epoll; do [ -n "${FIRST_RSS[$e]:-}" ] || FIRST_RSS[$e]=$(rss $e); done
  samples+=("| $((SECONDS / 60)) min | $(snapshot uring | awk '{print $1 " | " $2 " | " $3}') | $(snapshot epoll | awk '{print $1 " | " $2 " | " $3}') |")
done
wait "${pids[@]:2}" 2>/dev/null || true
# Idle again: keep-alive connections expire (10 s), lingering closes end (2 s).
sleep 15
declare -A AFTER
for e in uring epoll; do AFTER[$e]=$(snapshot $e); done

rows=() bad=0
for f in "$WORK"/out/*; do
  name=$(basename "$f")
  line=$(grep -h '^RESULT' "$f" | sed 's/^RESULT //')
  if [ -z "$line" ]; then line="no result: $(tail -2 "$f" | tr '\n' ' ')"; bad=1; fi
  errs=$(echo "$line" | grep -oE 'errors=[0-9]+' | cut -d= -f2)
  case $name in *garbage*) ;; *) [ "${errs:-1}" = 0 ] || bad=1 ;; esac
  rows+=("| $name | $line |")
done
churn() { grep -h '^RESULT' "$WORK/out/$1" | grep -oE 'rps=[0-9.]+' | cut -d= -f2; }
report=$REPO/bench/results/soak.md
{
  echo "# Soak: both engines, plain and TLS, under every kind of client at once"
  echo
  echo "Written by \`bench/soak.sh\` (DURATION=$DURATION) on $(date -u +%Y-%m-%d)."
  echo "Machine: $(nproc) cores, Linux $(uname -r); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); oca-daemon --workers 1 per engine,"
  echo "--header-timeout 5 --keepalive-timeout 10 --max-connections-per-client 0 (every client is 127.0.0.1)."
  echo "Load per engine, all at once for the whole run: wrk 16 connections of 256 KiB ranges and 4 TLS connections of"
  echo "1 MiB ranges; churn: wrk 8 connections (plain) and 2 (TLS) each opening a new connection per 4 KiB request;"
  echo "8 plain + 2 TLS slow readers (4 KiB every 0.2 s, bytes checked); 2 + 1 clients sending 500 pipelined requests"
  echo "at a time (every answer checked); 2 + 1 clients sending random bytes (bench/soak_clients.py)."
  echo
  echo "Connection churn reached: uring $(churn uring-churn) new connections/s plain + $(churn uring-churn-tls) TLS;"
  echo "epoll $(churn epoll-churn) plain + $(churn epoll-churn-tls) TLS (both daemons and every client sharing the two cores)."
  echo
  echo "| client | result |"
  echo "|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "RSS (KiB), open descriptors and connections during the run:"
  echo
  echo "| at | uring RSS | uring fds | uring conns | epoll RSS | epoll fds | epoll conns |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${samples[@]}"
  echo
  echo "| | uring idle before | uring idle after | epoll idle before | epoll idle after |"
  echo "|---|---|---|---|---|"
  echo "| RSS KiB, fds, connections, clients | ${IDLE[uring]} | ${AFTER[uring]} | ${IDLE[epoll]} | ${AFTER[epoll]} |"
  if [ -f "$REPO/bench/NOTES-soak.md" ]; then echo; cat "$REPO/bench/NOTES-soak.md"; fi
} > "$report"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
cat "$report"
# Idle again means: no connection, no client, the descriptors the daemon started with (open
# files and pipes are let go of when idle), and no memory grown since the first sample (the
# buffers touched by then stay mapped; a leak would grow on).
for e in uring epoll; do
  read -r r f c k <<< "${AFTER[$e]}"
  read -r _ f0 _ _ <<< "${IDLE[$e]}"
  if [ "$c" != 0 ] || [ "$k" != 0 ] || [ "$f" -gt $((f0 + 2)) ] || [ "$r" -gt $(( ${FIRST_RSS[$e]} * 5 / 4 )) ]; then
    echo "$e did not come back to idle: ${AFTER[$e]} (before: ${IDLE[$e]}, first sample RSS ${FIRST_RSS[$e]})" >&2; bad=1
  fi
done
[ $bad = 0 ] || { echo "soak: FAILED" >&2; exit 1; }
echo "soak: passed; wrote bench/results/soak.md and bench/RESULTS.md"
