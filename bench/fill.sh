#!/usr/bin/env bash
# Fill throughput: one fill-agent filling one file from one source (a tier appliance's
# oca-daemon) over loopback, with streaming SHA-256 verification, fsync and publish; against curl
# fetching the same signed URL to /dev/null. Writes bench/results/fill.md.
#
#   bench/fill.sh                 # 1 GiB file, 3 rounds
#   SIZE_MB=256 ROUNDS=1 bench/fill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-fill}
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
# Where the agent writes: "tmpfs" (memory: the agent's own pipeline against the network) or
# "disk" (the store directory's filesystem, fsync included).
DST_FS=${DST_FS:-tmpfs}
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
cargo build --release -q -p control-plane -p oca-daemon -p fill-agent
BIN=$REPO/target/release
rm -rf "$WORK" && mkdir -p "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; umount "$WORK/dst/store" 2>/dev/null || true; }
trap cleanup EXIT
# CPU time the whole machine spent (user+nice+system+irq+softirq+steal), in seconds: every process
# of the transfer (source daemon, receiver, kernel copies) counted alike.
busy_s() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", ($2+$3+$4+$7+$8+$9)/hz}' /proc/stat; }
wait_log() { for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1; }
addr_of() { grep ' listening ' "$1" | head -1 | sed "s/.* $2=\([^ ]*\).*/\1/"; }

CP_PORT=17170
"$BIN/control-plane" --listen 127.0.0.1:$CP_PORT --db "$WORK/cp.db" --report-interval 1 \
  --public-url http://127.0.0.1:$CP_PORT 2> "$WORK/cp.log" & pids+=($!)
wait_log "$WORK/cp.log" ' listening '
TOKEN=$(cat "$WORK/cp.db.admin-token")
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -X "$1" "http://127.0.0.1:$CP_PORT$2" ${3:+-d "$3"}; }
api POST /v1/admin/sites '{"id":"ixp","kind":"ixp","region":"eu"}' >/dev/null
api POST /v1/admin/sites '{"id":"isp","kind":"isp","region":"eu","parent":"ixp"}' >/dev/null

ID=bench_fill_1080p.mp4
mkdir -p "$WORK/src/store/objects/be" "$WORK/dst/store"
head -c $((SIZE_MB << 20)) /dev/urandom > "$WORK/src/store/objects/be/$ID"
SHA=$(sha256sum "$WORK/src/store/objects/be/$ID" | cut -d' ' -f1)
cp "$WORK/src/store/objects/be/$ID" "$WORK/cp.db.origin/$ID" 2>/dev/null || { mkdir -p "$WORK/cp.db.origin"; cp "$WORK/src/store/objects/be/$ID" "$WORK/cp.db.origin/$ID"; }
cat "$WORK/src/store/objects/be/$ID" > /dev/null
api POST /v1/admin/titles '{"id":"tb","name":"tb","countries":["NL"]}' >/dev/null

start_appliance() { # name site
  local n=$1 site=$2
  "$BIN/oca-daemon" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 2 --store "$WORK/$n/store" \
    --keys "$WORK/$n/keys.json" 2> "$WORK/$n/daemon.log" & pids+=($!)
  wait_log "$WORK/$n/daemon.log" ' listening '
  local addr admin
  addr=$(addr_of "$WORK/$n/daemon.log" addr); admin=$(addr_of "$WORK/$n/daemon.log" admin)
  mkdir -p "$WORK/creds"
  if [ ! -s "$WORK/creds/$n" ]; then
    api POST /v1/admin/appliances "{\"id\":\"$n\",\"site\":\"$site\",\"url\":\"http://$addr\",\"capacity_bps\":100000000000}" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["credential"])' > "$WORK/creds/$n"
  fi
  cp "$WORK/creds/$n" "$WORK/$n/credential"
  "$BIN/fill-agent" --control-plane http://127.0.0.1:$CP_PORT --oca-id "$n" --site "$site" \
    --credential-file "$WORK/$n/credential" --store "$WORK/$n/store" --keys "$WORK/$n/keys.json" \
    --daemon-admin "$admin" --fill-now 2> "$WORK/$n/agent.log" & pids+=($!)
}
# In the catalog before the source appliance starts: an agent deletes what its manifest lacks.
api POST /v1/admin/content "{\"id\":\"$ID\",\"title\":\"tb\",\"resolution\":1080,\"bitrate_kbps\":5000,\"size\":$((SIZE_MB << 20)),\"sha256\":\"$SHA\",\"content_type\":\"video/mp4\",\"origin\":\"embedded\"}" >/dev/null
start_appliance src ixp
wait_log "$WORK/src/agent.log" 'manifest updated'
sleep 2
rows=()
for round in $(seq "$ROUNDS"); do
  umount "$WORK/dst/store" 2>/dev/null || true
  rm -rf "$WORK/dst"; mkdir -p "$WORK/dst/store"
  if [ "$DST_FS" = tmpfs ]; then mount -t tmpfs -o size=$((SIZE_MB * 2 + 64))m tmpfs "$WORK/dst/store"; fi
  cpu0=$(busy_s)
  start_appliance dst isp
  for _ in $(seq 1200); do grep -q "filled id=$ID" "$WORK/dst/agent.log" && break; sleep 0.05; done
  agent_cpu=$(echo "$(busy_s) - $cpu0" | bc -l)
  line=$(grep "filled id=$ID" "$WORK/dst/agent.log") || { cat "$WORK/dst/agent.log" >&2; exit 1; }
  agent_mbit=$(echo "$line" | sed 's/.*mbit_per_s=\([0-9.]*\).*/\1/')
  source=$(echo "$line" | sed 's/.*source=\([A-Za-z]*\).*/\1/')
  # The same signed URL the agent used, fetched by curl to /dev/null.
  url=$(curl -sf -H "Authorization: Bearer $(cat "$WORK/dst/credential")" "http://127.0.0.1:$CP_PORT/v1/appliances/dst/manifest" \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print([s["url"] for e in m["entries"] for s in e["sources"] if s["kind"]=="tier"][0])')
  cpu0=$(busy_s)
  curl_bps=$(curl -s -o /dev/null -w '%{speed_download}' "$url")
  curl_cpu=$(echo "$(busy_s) - $cpu0" | bc -l)
  curl_mbit=$(echo "$curl_bps * 8 / 1000000" | bc -l)
  ratio=$(echo "$agent_mbit / $curl_mbit" | bc -l)
  gib=$(echo "$SIZE_MB / 1024" | bc -l)
  agent_cpg=$(echo "$agent_cpu / $gib" | bc -l); curl_cpg=$(echo "$curl_cpu / $gib" | bc -l)
  ceiling=$(echo "$curl_cpg / $agent_cpg" | bc -l)
  printf 'round %d: agent %.0f Mbit/s (source %s), curl %.0f Mbit/s, ratio %.2f; CPU s/GiB agent %.2f curl %.2f\n' "$round" "$agent_mbit" "$source" "$curl_mbit" "$ratio" "$agent_cpg" "$curl_cpg"
  rows+=("| $round | $source | $(printf '%.0f' "$agent_mbit") | $(printf '%.0f' "$curl_mbit") | $(printf '%.2f' "$ratio") | $(printf '%.2f' "$agent_cpg") | $(printf '%.2f' "$curl_cpg") | $(printf '%.2f' "$ceiling") |")
  kill "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true
  sleep 0.5
  api GET /v1/admin/appliances >/dev/null
done
{
  echo "# fill-agent throughput ($DST_FS)"
  echo
  echo "Written by \`bench/fill.sh\` (SIZE_MB=$SIZE_MB ROUNDS=$ROUNDS) on $(date -u +%Y-%m-%d); $(nproc) cores, Linux $(uname -r)."
  echo "One agent fills one $SIZE_MB MiB file from a tier appliance's oca-daemon over loopback (streaming SHA-256,"
  echo "write, fsync, rename); curl then fetches the same signed URL to /dev/null. Source file in the page cache;"
  echo "the agent writes to $DST_FS ($(df -T "$WORK/dst/store" | awk 'NR==2 {print $2}'))."
  echo
  echo "CPU s/GiB: CPU time the whole machine spent per GiB moved (the agent's column includes starting it);"
  echo "CPU-bound ceiling = curl's CPU per GiB / the agent's: the best agent/curl ratio when both use every core."
  echo
  echo "| round | source | agent Mbit/s | curl Mbit/s | agent/curl | agent CPU s/GiB | curl CPU s/GiB | CPU-bound ceiling |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if [ -f "$REPO/bench/NOTES-fill.md" ]; then echo; cat "$REPO/bench/NOTES-fill.md"; fi
  echo
} > "$REPO/bench/results/fill-$DST_FS.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/fill-$DST_FS.md and bench/RESULTS.md"
