#!/usr/bin/env bash
# Side-by-side benchmark: oca-daemon against nginx on the same files, the same machine, the same
# wrk load. Prints a table with ratios and writes bench/RESULTS.md.
#
#   bench/run.sh                 # full run (4 x 256 MiB corpus, 10 s per wrk run)
#   DURATION=5 bench/run.sh      # shorter runs
#   ENGINE=epoll bench/run.sh    # the fallback engine instead of io_uring
#   BODY_PATH=sendfile bench/run.sh   # io_uring body path: auto (default), sendfile or splice
#
# Needs root only to install nginx and wrk when they are missing (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench}
DURATION=${DURATION:-10}
ENGINE=${ENGINE:-uring}
BODY_PATH=${BODY_PATH:-auto}
WORKERS=${WORKERS:-$(nproc)}
FILE_MB=256
NFILES=4
OCA_PORT=18080 OCA_ADMIN=18081 NGINX_PORT=18090
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  echo "installing nginx and wrk" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
NGINX=$(command -v nginx)

cargo build --release -q -p oca-daemon
OCA=$REPO/target/release/oca-daemon
field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }

# Corpus: store layout for oca-daemon; hard links (same inodes, same page cache) in a flat
# directory for nginx, so nginx needs no rewrite or regex to find them.
mkdir -p "$WORK/store/objects/bm" "$WORK/nginx-root/c" "$WORK/nginx-tmp"
FILES=""
for i in $(seq 0 $((NFILES - 1))); do
  id="bm_title${i}_1080p.mp4"
  f="$WORK/store/objects/bm/$id"
  if [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" != $((FILE_MB << 20)) ]; then
    echo "generating $f" >&2
    head -c $((FILE_MB << 20)) /dev/urandom > "$f.tmp" && mv "$f.tmp" "$f"
  fi
  ln -f "$f" "$WORK/nginx-root/c/$id"
  cat "$f" > /dev/null   # both servers run from a warm page cache
  FILES="$FILES $id"
done
export FILES FILE_BYTES=$((FILE_MB << 20))

cat > "$WORK/nginx.conf" <<CONF
worker_processes $WORKERS;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections $(( $(ulimit -n) / 2 )); }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/nginx-tmp;
  proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp;
  uwsgi_temp_path $WORK/nginx-tmp;
  scgi_temp_path $WORK/nginx-tmp;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    root $WORK/nginx-root;
  }
}
CONF

cleanup() {
  [ -n "${OCA_PID:-}" ] && kill "$OCA_PID" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" \
  || { echo "nginx did not start (port $NGINX_PORT busy?)" >&2; exit 1; }
"$OCA" --listen 127.0.0.1:$OCA_PORT --admin-listen 127.0.0.1:$OCA_ADMIN --store "$WORK/store" --allow-unsigned \
  --workers "$WORKERS" --engine "$ENGINE" --body-path "$BODY_PATH" \
  --max-connections-per-client 0 2> "$WORK/oca.log" &   # every client here is 127.0.0.1, as for nginx
OCA_PID=$!
for _ in $(seq 50); do grep -q ' listening ' "$WORK/oca.log" && break; sleep 0.1; done
kill -0 "$OCA_PID" 2>/dev/null && grep -q ' listening ' "$WORK/oca.log" \
  || { echo "oca-daemon did not start (port busy?):" >&2; cat "$WORK/oca.log" >&2; exit 1; }
first=$(echo $FILES | cut -d' ' -f1)
for port in $OCA_PORT $NGINX_PORT; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -r 0-99 "http://127.0.0.1:$port/c/$first")
  [ "$code" = 206 ] || { echo "server on $port answered $code" >&2; exit 1; }
done

cpu_ticks() { # summed utime+stime of the given pids (all their threads), in clock ticks
  local t=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
server_pids() {
  if [ "$1" = oca ]; then echo "$OCA_PID"; else echo "$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"; fi
}
run_wrk() { # server port range conns -> "rps=.. bps=.. p50_us=.. p99_us=.. errors=.. cpu_us=.."
  local pids before out after
  pids=$(server_pids "$1")
  before=$(cpu_ticks $pids)
  out=$(RANGE_BYTES=$3 wrk -t"$WORKERS" -c"$4" -d"${DURATION}s" --timeout 10s -s "$REPO/bench/range.lua" \
    "http://127.0.0.1:$2/" | grep '^RESULT' | sed 's/^RESULT //')
  after=$(cpu_ticks $pids)
  # Server CPU per response: what the server itself spends, apart from the client sharing the cores.
  local reqs
  reqs=$(echo "$(field "$out" rps) * $DURATION" | bc -l)
  echo "$out cpu_us=$(echo "($after - $before) * 1000000 / $(getconf CLK_TCK) / $reqs" | bc -l | xargs printf '%.1f')"
}


rows=()
printf '%-6s %-6s %-7s %12s %9s %9s %9s %6s %9s\n' range conns server req/s GB/s p50_ms p99_ms errors cpu_us/req
for range in 65536 1048576; do
  for conns in 32 1000; do
    declare -A r=()
    for server in nginx oca; do
      port=$([ $server = oca ] && echo $OCA_PORT || echo $NGINX_PORT)
      DURATION=2 run_wrk $server $port $range $conns > /dev/null   # warm-up
      r[$server]=$(run_wrk $server $port $range $conns)
      res=${r[$server]}
      printf '%-6s %-6s %-7s %12.0f %9.2f %9.2f %9.2f %6s %9s\n' "$((range >> 10))K" $conns $server \
        "$(field "$res" rps)" "$(echo "$(field "$res" bps) / 1000000000" | bc -l)" \
        "$(echo "$(field "$res" p50_us) / 1000" | bc -l)" "$(echo "$(field "$res" p99_us) / 1000" | bc -l)" \
        "$(field "$res" errors)" "$(field "$res" cpu_us)"
    done
    ro=${r[oca]} rn=${r[nginx]}
    ratio=$(echo "$(field "$ro" rps) / $(field "$rn" rps)" | bc -l)
    p99=$(echo "$(field "$ro" p99_us) / $(field "$rn" p99_us)" | bc -l)
    cpu=$(echo "$(field "$rn" cpu_us) / $(field "$ro" cpu_us)" | bc -l)
    printf '%-6s %-6s ratio oca/nginx: req/s %.2fx, p99 %.2fx, server CPU per request: nginx/oca %.2fx\n' "$((range >> 10))K" $conns "$ratio" "$p99" "$cpu"
    rows+=("| $((range >> 10)) KiB | $conns | $(printf '%.0f' "$(field "$rn" rps)") | $(printf '%.0f' "$(field "$ro" rps)") | $(printf '%.2f' "$ratio")x | $(printf '%.2f / %.2f' "$(echo "$(field "$rn" bps)/1000000000" | bc -l)" "$(echo "$(field "$ro" bps)/1000000000" | bc -l)") | $(printf '%.2f / %.2f' "$(echo "$(field "$rn" p50_us)/1000" | bc -l)" "$(echo "$(field "$ro" p50_us)/1000" | bc -l)") | $(printf '%.2f / %.2f' "$(echo "$(field "$rn" p99_us)/1000" | bc -l)" "$(echo "$(field "$ro" p99_us)/1000" | bc -l)") | $(field "$rn" cpu_us) / $(field "$ro" cpu_us) | $(field "$rn" errors) / $(field "$ro" errors) |")
    unset r
  done
done

# 10,000 idle keep-alive connections: resident memory of each server.
IDLE_N=${IDLE_N:-10000}
oca_idle=$(python3 "$REPO/bench/idle_conns.py" 127.0.0.1 $OCA_PORT "/c/$first" "$IDLE_N" "$OCA_PID" | sed 's/^IDLE //')
ngx_pids="$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"
ngx_idle=$(python3 "$REPO/bench/idle_conns.py" 127.0.0.1 $NGINX_PORT "/c/$first" "$IDLE_N" $ngx_pids | sed 's/^IDLE //')
echo "idle keep-alive connections: oca $oca_idle; nginx $ngx_idle"

{
  echo "# oca-daemon against nginx"
  echo
  echo "Written by \`bench/run.sh\` (DURATION=$DURATION ENGINE=$ENGINE BODY_PATH=$BODY_PATH WORKERS=$WORKERS) on $(date -u +%Y-%m-%d)."
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)."
  echo "Corpus: $NFILES files of $FILE_MB MiB in the page cache; wrk -t$WORKERS, random aligned ranges (bench/range.lua);"
  echo "server and client share the machine's cores. nginx: sendfile on, $WORKERS workers, reuseport, access log off."
  echo "oca-daemon: --engine $ENGINE --body-path $BODY_PATH (auto: splice for parts >= 256 KiB, sendfile below)."
  echo
  echo "| range | conns | nginx req/s | oca req/s | oca/nginx | GB/s nginx / oca | p50 ms nginx / oca | p99 ms nginx / oca | server CPU µs/req nginx / oca | errors nginx / oca |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "$IDLE_N idle keep-alive connections (one 1-byte range each, then idle), resident memory:"
  echo "oca-daemon: $oca_idle; nginx (master + workers): $ngx_idle."
  if [ -f "$REPO/bench/NOTES.md" ]; then echo; cat "$REPO/bench/NOTES.md"; fi
} > "$REPO/bench/results/oca-daemon.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/oca-daemon.md and bench/RESULTS.md"
