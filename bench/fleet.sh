#!/usr/bin/env bash
# Fleet benchmark (issue 18): oca-fleetsim plays a whole fleet (appliances reporting every
# interval with inventory deltas, plays on an open-loop daily curve with Zipf popularity, a
# steering stream, injected health and route changes) against each control-plane setup in
# TARGETS, checks every answer, and writes bench/results/fleet.md: plays/s, reports/s,
# steering and play p99, worst report lateness, propagation delays, verification failures.
#
#   bench/fleet.sh                                   # full size: 20,000 appliances, 4,000 sites,
#                                                    # 200,000 files, 1,000,000 client prefixes
#   APPLIANCES=2000 SITES=400 FILES=20000 bench/fleet.sh   # a tenth
#   TARGETS="sqlite sqlite_nodisks" bench/fleet.sh    # reports with a disk, and without
#   TARGETS="sqlite pg1 pg2" bench/fleet.sh           # SQLite, one PostgreSQL replica, two
#                                                    # behind HAProxy (root: a private cluster)
#
# Each target is a pair of functions, start_<name> and stop_<name>: start sets URL (what the
# simulator talks to), TOKEN_FILE, STATE (the simulator's state directory, kept with the
# database so a fleet is built once) and CP_PIDS (processes whose CPU time and memory are
# reported); the rest of the script is the same for every target.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-fleet}
APPLIANCES=${APPLIANCES:-20000}
SITES=${SITES:-4000}
FILES=${FILES:-200000}
PREFIXES_PER_SITE=${PREFIXES_PER_SITE:-250}
REGIONS=${REGIONS:-20}
INTERVAL=${INTERVAL:-10}
DURATION=${DURATION:-120}
PLAY_RATE=${PLAY_RATE:-10000}
STEER_RATE=${STEER_RATE:-200}
EVENTS=${EVENTS:-3}
BOUND=${BOUND:-2}
THREADS=${THREADS:-2}
TARGETS=${TARGETS:-sqlite}
# Extra flags for the simulator (e.g. --no-disks to report as bench/control_plane.sh does).
SIM_FLAGS=${SIM_FLAGS:-}
# Another control-plane binary (an A/B: a copy of an earlier build); default this checkout's.
CP_BIN=${CP_BIN:-}

while [ -e /var/tmp/bench-quiet ] && [ ! -O /var/tmp/bench-quiet ]; do sleep 10; done
cargo build --release -q -p control-plane --bin control-plane -p oca-fleetsim --bin oca-fleetsim
CP=${CP_BIN:-$REPO/target/release/control-plane}
SIM=$REPO/target/release/oca-fleetsim
mkdir -p "$WORK"
SIZE="a${APPLIANCES}-s${SITES}-f${FILES}-p${PREFIXES_PER_SITE}-r${REGIONS}"

# The flags every control plane needs for the simulator: its report interval, no prober (the
# simulated appliances' URLs lead nowhere), and this machine as a trusted proxy (the clients'
# addresses come in X-Forwarded-For).
CP_FLAGS=(--report-interval "$INTERVAL" --probe-interval 0 --trusted-proxy 127.0.0.1)

wait_listening() { # log file -> prints the address
  for _ in $(seq 300); do
    if grep -q ' listening ' "$1"; then grep -o ' addr=[^ ]*' "$1" | head -1 | cut -d= -f2; return; fi
    sleep 0.1
  done
  echo "no listening line in $1" >&2; return 1
}

start_sqlite() {
  local dir=$WORK/sqlite-$SIZE
  mkdir -p "$dir"
  "$CP" --db "$dir/cp.db" --listen 127.0.0.1:0 "${CP_FLAGS[@]}" 2> "$dir/cp.log" &
  CP_PIDS=$!
  URL=http://$(wait_listening "$dir/cp.log")
  TOKEN_FILE=$dir/cp.db.admin-token
  STATE=$dir/state
}
stop_sqlite() { kill $CP_PIDS; wait $CP_PIDS 2>/dev/null || true; }
# The same control plane, the simulator's reports carrying no disk (so no manifest is built per
# report, as in bench/control_plane.sh's load).
start_sqlite_nodisks() { start_sqlite; }
stop_sqlite_nodisks() { stop_sqlite; }
SIM_FLAGS_sqlite_nodisks=--no-disks

# PostgreSQL: a private cluster in $WORK/pg (Debian's postgresql package; initdb once), on
# 127.0.0.1:$PG_PORT, fsync and synchronous commit on as in production; one database per fleet
# size, kept (like the SQLite file) so a fleet is built once.
PG_PORT=${PG_PORT:-15432}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pg_up() { # (called under `||`, where set -e does not hold: every step checked)
  [ -x "$PG_BIN/postgres" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; return 1; }
  local data=$WORK/pg/data
  mkdir -p "$WORK/pg" && chown postgres: "$WORK/pg" || return 1
  if [ ! -f "$data/PG_VERSION" ]; then
    runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -A trust -U postgres > "$WORK/pg/init.log" \
      || { cat "$WORK/pg/init.log" >&2; return 1; }
  fi
  if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" status > /dev/null 2>&1; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$WORK/pg/server.log" -w start \
      -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=1GB" > /dev/null \
      || { tail -20 "$WORK/pg/server.log" >&2; return 1; }
  fi
  local db=fleet_${SIZE//-/_} psql=(runuser -u postgres -- psql -h /tmp -p "$PG_PORT" -v ON_ERROR_STOP=1)
  if ! "${psql[@]}" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    "${psql[@]}" -qc "CREATE DATABASE $db" || return 1
  fi
  PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$db?pool_size=${PG_POOL:-16}"
}
pg_down() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop > /dev/null 2>&1 || true; }

# One replica on PostgreSQL.
start_pg1() {
  pg_up || return 1
  local dir=$WORK/pg-$SIZE
  mkdir -p "$dir"
  "$CP" --db "$PG_URL" --admin-token-file "$dir/admin-token" --origin-dir "$dir/origin" \
    --listen 127.0.0.1:0 "${CP_FLAGS[@]}" 2> "$dir/cp1.log" &
  CP_PIDS=$!
  URL=http://$(wait_listening "$dir/cp1.log") || { kill $CP_PIDS; return 1; }
  TOKEN_FILE=$dir/admin-token
  STATE=$dir/state
}
stop_pg1() { kill $CP_PIDS; wait $CP_PIDS 2>/dev/null || true; }

# Two replicas on that database behind HAProxy (docs/haproxy.cfg's backend, plain HTTP, no
# request log): HAProxy connects from 127.0.0.2; the replicas believe it and the simulator
# (127.0.0.1, which sends its clients' addresses in X-Forwarded-For). URL is HAProxy's
# frontend, CP_PIDS both replicas and HAProxy.
start_pg2() {
  pg_up || return 1
  command -v haproxy > /dev/null || { echo "pg2: haproxy is not installed" >&2; return 1; }
  local dir=$WORK/pg-$SIZE a b
  mkdir -p "$dir"
  local flags=(--db "$PG_URL" --admin-token-file "$dir/admin-token" --origin-dir "$dir/origin"
    --listen 127.0.0.1:0 --report-interval "$INTERVAL" --probe-interval 0
    --trusted-proxy 127.0.0.1 --trusted-proxy 127.0.0.2)
  "$CP" "${flags[@]}" 2> "$dir/cp1.log" &
  local p1=$!
  a=$(wait_listening "$dir/cp1.log") || { kill $p1; return 1; }
  "$CP" "${flags[@]}" 2> "$dir/cp2.log" &
  local p2=$!
  b=$(wait_listening "$dir/cp2.log") || { kill $p1 $p2; return 1; }
  cat > "$dir/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout check 1s
    retries 3
    option redispatch 1
frontend control-plane
    bind 127.0.0.1:${HAPROXY_PORT:-17070}
    option forwardfor
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 source 127.0.0.2
    retry-on conn-failure empty-response response-timeout
    acl replay_safe method GET HEAD
    acl replay_safe path /v1/play
    acl replay_safe path_reg ^/v1/appliances/[^/]+/health\$
    http-request disable-l7-retry if !replay_safe
    option allbackups
    server r1 $a check
    server r2 $b check
    server r1-fallback $a backup
    server r2-fallback $b backup
CFG
  haproxy -f "$dir/haproxy.cfg" -db 2> "$dir/haproxy.log" &
  local ph=$!
  CP_PIDS="$p1 $p2 $ph"
  URL=http://127.0.0.1:${HAPROXY_PORT:-17070}
  for _ in $(seq 50); do curl -sf "$URL/readyz" > /dev/null && break; sleep 0.2; done
  TOKEN_FILE=$dir/admin-token
  STATE=$dir/state
}
stop_pg2() { kill $CP_PIDS; wait $CP_PIDS 2>/dev/null || true; }

cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
rss_mib() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $((t / 1024)); }

rows=()
out=
for target in $TARGETS; do
  start_"$target" || continue
  trap 'stop_'"$target" EXIT
  out=$WORK/$target-$SIZE.json
  flags_var=SIM_FLAGS_$target
  target_flags=${!flags_var:-}
  # shellcheck disable=SC2086
  "$SIM" --url "$URL" --token-file "$TOKEN_FILE" --state-dir "$STATE" --json \
    --appliances "$APPLIANCES" --sites "$SITES" --files "$FILES" --regions "$REGIONS" \
    --prefixes-per-site "$PREFIXES_PER_SITE" --interval "$INTERVAL" --duration "$DURATION" \
    --play-rate "$PLAY_RATE" --steer-rate "$STEER_RATE" --day "$((DURATION * 2))" \
    --events "$EVENTS" --bound "$BOUND" --threads "$THREADS" $SIM_FLAGS $target_flags > "$out" 2> "$out.log" &
  sim=$!
  # The control plane's CPU time over the measured phase only (not the setup or warm-up).
  until grep -qs 'measuring for' "$out.log" || ! kill -0 $sim 2>/dev/null; do sleep 0.2; done
  c0=$(cpu_ticks $CP_PIDS)
  set +e
  wait $sim
  code=$?
  set -e
  cat "$out.log" >&2
  c1=$(cpu_ticks $CP_PIDS)
  rss=$(rss_mib $CP_PIDS)
  stop_"$target"
  trap - EXIT
  row=$(python3 - "$out" "$code" "$((c1 - c0))" "$rss" "$target" <<'EOF'
import json, sys
code, ticks, rss, target = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
try:
    v = json.load(open(sys.argv[1]))
except ValueError:
    print(f"| {target} | the simulator gave no figures (exit {code}; see its log) |" + " |" * 14 + f" {code} |")
    sys.exit(0)
lat = v["latency"]
props = [p["delay_ms"] for p in v["propagation"]]
seen = [p for p in props if p is not None]
prop = f"{max(seen):.0f}" if seen else "-"
if len(seen) < len(props):
    prop += f" ({len(props) - len(seen)} never)"
secs = v["seconds"]
plays = v["plays"]["ok"] + v["plays"]["no_appliance"] + v["plays"]["too_many_streams"]
reqs = plays + v["reports"]["ok"] + round(v["steers_per_sec"] * secs)
cpu_us = ticks * 10_000 / max(reqs, 1)
print(f"| {target} | {v['plays_per_sec']:.0f} | {v['reports_per_sec']:.0f} | {v['steers_per_sec']:.0f} "
      f"| {lat['steer']['p99_ms']} | {lat['play']['p99_ms']} | {lat['report']['p99_ms']} "
      f"| {v['reports']['worst_lateness_ms']:.0f} | {prop} | {v['checked']} / {v['failed_answers']} "
      f"| {v['errors']} | {v['plays']['shed']} | {cpu_us:.0f} | {rss} | {v.get('simulator_peak_rss_mib')} | {code} |")
EOF
)
  echo "$row"
  rows+=("$row")
done

pg_down
[ -n "$out" ] || { echo "no target ran" >&2; exit 1; }
fleet=$(python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['fleet']))" "$out" 2>/dev/null || echo '{}')
{
  echo "# fleet"
  echo
  echo "Written by \`bench/fleet.sh\` (APPLIANCES=$APPLIANCES SITES=$SITES FILES=$FILES PREFIXES_PER_SITE=$PREFIXES_PER_SITE INTERVAL=$INTERVAL DURATION=$DURATION PLAY_RATE=$PLAY_RATE STEER_RATE=$STEER_RATE EVENTS=$EVENTS THREADS=$THREADS SIM_FLAGS='$SIM_FLAGS') on $(date -u +%Y-%m-%d); $(nproc) cores shared by the simulator and the control plane (and, on a shared machine, others' work)."
  echo "Fleet: $fleet"
  echo
  echo "| target | plays/s | reports/s | steers/s | steer p99 ms | play p99 ms | report p99 ms | worst report lateness ms | propagation max ms | checked / failed | errors | shed | CP CPU µs/request | CP RSS MiB | simulator RSS MiB | exit |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Latencies are measured from each request's scheduled start (open loop), so queueing in the"
  echo "simulator or the server counts. Propagation: from sending the report that carried an"
  echo "injected change (status error and back, a route withdrawn and announced) to the first"
  echo "\`/v1/steer?explain=1\` answer showing it. CP CPU: the control plane's user+system time over"
  echo "the measured phase divided by the requests answered in it (plays, reports, steering)."
  if [ -f "$REPO/bench/NOTES-fleet.md" ]; then echo; cat "$REPO/bench/NOTES-fleet.md"; fi
  echo
} > "$REPO/bench/results/fleet.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/fleet.md and bench/RESULTS.md"
