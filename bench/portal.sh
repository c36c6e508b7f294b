#!/usr/bin/env bash
# Portal page latency on a 10,000-appliance fleet (bench/cp_fleet.py: 2,000 sites, 5 appliances
# each, reported once; an operator signed in): wrk on the site page, the appliance page and the
# scoped JSON API for random sites and appliances, beside /v1/steer on the same fleet (the
# control plane's hot path, the yardstick). Writes bench/results/portal.md.
#
#   bench/portal.sh                     # full size
#   SITES=200 CONTENT=10000 bench/portal.sh   # smaller, quicker
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-portal}
DURATION=${DURATION:-10}
SITES=${SITES:-2000}
CONTENT=${CONTENT:-100000}
PORT=${PORT:-17074}
CONNS=${CONNS:-16}
command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p control-plane
CP=$REPO/target/release/control-plane
OCACTL=$REPO/target/release/ocactl
rm -rf "$WORK" && mkdir -p "$WORK"
# Plain HTTP on loopback: the lab's cookie setting; no prober (the fleet's URLs lead nowhere).
"$CP" --db "$WORK/cp.db" --listen "127.0.0.1:$PORT" --trusted-proxy 127.0.0.1 --report-interval 3600 \
  --probe-interval 0 --portal-insecure-cookies 2> "$WORK/cp.log" &
CP_PID=$!
trap 'kill $CP_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q ' listening ' "$WORK/cp.log" && break; sleep 0.1; done
TOKEN=$(cat "$WORK/cp.db.admin-token")
URL=http://127.0.0.1:$PORT
python3 "$REPO/bench/cp_fleet.py" --sites "$SITES" --content "$CONTENT" -- "$URL" "$TOKEN" "$WORK/data"
PASSWORD=$(head -c 18 /dev/urandom | base64)
echo "$PASSWORD" > "$WORK/password"
"$OCACTL" --url "$URL" --token-file "$WORK/cp.db.admin-token" user add op@bench --operator --password-file "$WORK/password" >/dev/null
COOKIE=$(curl -sf -o /dev/null -D - --data-urlencode login=op@bench --data-urlencode "password=$PASSWORD" "$URL/login" \
  | tr -d '\r' | awk -F'[:;] *' 'tolower($1) == "set-cookie" {print $2; exit}')
[ -n "$COOKIE" ] || { echo "no session cookie from /login" >&2; exit 1; }
# The first page of each kind loads the fleet view; warm it.
curl -sf -o /dev/null -H "Cookie: $COOKIE" "$URL/sites/isp1"

field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
ms() { echo "$1/1000" | bc -l | xargs printf '%.2f'; }
rows=()
page() { # name PAGE
  PAGE=$2 COOKIE=$COOKIE SITES=$SITES wrk -t2 -c"$CONNS" -d2s -s "$REPO/bench/portal_load.lua" "$URL/" >/dev/null
  r=$(PAGE=$2 COOKIE=$COOKIE SITES=$SITES wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$REPO/bench/portal_load.lua" "$URL/" | grep '^RESULT' | sed 's/^RESULT //')
  echo "$1: $r"
  rows+=("| $1 | $(field "$r" rps) | $(ms "$(field "$r" p50_us)") | $(ms "$(field "$r" p99_us)") | $(field "$r" errors) |")
}
page "site page (/sites/<id>)" site
page "appliance page (/appliances/<id>)" appliance
page "scoped API (/v1/portal/sites/<id>)" api_site
r=$(MODE=steer DATA="$WORK/data" TOKEN=$TOKEN wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$REPO/bench/cp_load.lua" "$URL/" | grep '^RESULT' | sed 's/^RESULT //')
echo "steer: $r"
rows+=("| /v1/steer (yardstick) | $(printf '%.0f' "$(field "$r" rps)") | $(ms "$(field "$r" p50_us)") | $(ms "$(field "$r" p99_us)") | $(field "$r" errors) |")
{
  echo "# portal"
  echo
  echo "Written by \`bench/portal.sh\` (SITES=$SITES CONTENT=$CONTENT DURATION=$DURATION CONNS=$CONNS) on $(date -u +%Y-%m-%d); $(nproc) cores, wrk -t2 -c$CONNS on the same machine, an operator's session (sees every site), plain HTTP."
  echo "Fleet: $SITES sites, $((SITES * 5)) appliances (bench/cp_fleet.py), reported once."
  echo
  echo "| page | req/s | p50 ms | p99 ms | errors |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if [ -f "$REPO/bench/NOTES-portal.md" ]; then echo; cat "$REPO/bench/NOTES-portal.md"; fi
  echo
} > "$REPO/bench/results/portal.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
