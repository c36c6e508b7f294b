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
#   TARGETS="sqlite pg1 pg2" bench/fleet.sh           # once the PostgreSQL engine exists
#
# Each target is a pair of functions, start_<name> and stop_<name>: start sets URL (what the
# simulator talks to), TOKEN_FILE, STATE (the simulator's state directory, kept with the
# database so a fleet is built once) and CP_PIDS (processes whose CPU time and memory are
# reported). Adding PostgreSQL single-replica and two-replicas-behind-HAProxy columns means
# filling in start_pg1/start_pg2 below; the rest of the script is the same for every target.
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

while [ -e /var/tmp/bench-quiet ] && [ ! -O /var/tmp/bench-quiet ]; do sleep 10; done
cargo build --release -q -p control-plane --bin control-plane -p oca-fleetsim --bin oca-fleetsim
CP=$REPO/target/release/control-plane
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

# PostgreSQL, one replica: `--db postgres://...` once the engine lands (issue 18, part 1).
start_pg1() { echo "pg1: the PostgreSQL engine is not built yet; skipped" >&2; return 1; }
stop_pg1() { :; }
# PostgreSQL, two replicas behind HAProxy (issue 18, part 2): URL is HAProxy's frontend,
# CP_PIDS both replicas (and haproxy).
start_pg2() { echo "pg2: replicas behind HAProxy are not built yet; skipped" >&2; return 1; }
stop_pg2() { :; }

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
v = json.load(open(sys.argv[1]))
code, ticks, rss, target = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
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
