#!/usr/bin/env bash
# How long an admin change made on one control-plane replica takes to reach another's views
# through the change feed (control-plane/src/follower.rs), with a catalog of the fleet
# benchmark's size, for two builds side by side: the build before the feed named the rows it
# touched (CP_BEFORE, a control-plane binary) and this tree's.
#
#   CP_BEFORE=/path/to/old/control-plane bench/catalog_feed.sh
#   TITLES=200000 SUBSCRIBERS=200000 ROUNDS=10 bench/catalog_feed.sh   # the defaults
#
# Each build gets a database of its own on one private PostgreSQL cluster (Debian's postgresql
# package), filled by SQL with TITLES titles (one licensed country and one rendition each) and
# SUBSCRIBERS subscribers, then two replicas, A and B. Each round changes one subscriber's
# plan on A (made inactive), then adds one title with a rendition on A, and times each from A's
# answer until B's plays show it (polled every 5 ms: that subscriber's play refused with 403;
# a play of the new title no longer 404). Prints the median and the slowest of each, and B's
# whole-catalog rereads (`cp_feed_catalog_reloads_total`, absent before).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-feed}
TITLES=${TITLES:-200000}
SUBSCRIBERS=${SUBSCRIBERS:-200000}
ROUNDS=${ROUNDS:-10}
PG_PORT=${PG_PORT:-15433}
CP_BEFORE=${CP_BEFORE:-}

cargo build --release -q -p control-plane --bin control-plane
CP_AFTER=$REPO/target/release/control-plane
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG_BIN/postgres" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK/pg"; chown postgres: "$WORK/pg"
PIDS=""
cleanup() {
  [ -n "$PIDS" ] && kill $PIDS 2>/dev/null; wait 2>/dev/null || true
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop > /dev/null 2>&1 || true
}
trap cleanup EXIT
runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U postgres > "$WORK/pg/init.log"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w \
  -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1" start > /dev/null
psql() { runuser -u postgres -- psql -h /tmp -p "$PG_PORT" -v ON_ERROR_STOP=1 -q "$@"; }

wait_listening() { # log file -> prints the address
  for _ in $(seq 600); do
    if grep -q ' listening ' "$1"; then grep -o ' addr=[^ ]*' "$1" | head -1 | cut -d= -f2; return; fi
    sleep 0.1
  done
  echo "no listening line in $1" >&2; return 1
}

# The value of counter $2 on replica $1's /metrics (0 when absent).
counter() {
  curl -sf -H "Authorization: Bearer $TOKEN" "http://$1/metrics" \
    | awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}

now_ms() { date +%s%3N; }

# A player token for subscriber $2, minted by replica $1.
token() {
  curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"ttl_secs":3600}' "http://$1/v1/admin/subscribers/$2/tokens" \
    | sed 's/.*"token":"\([^"]*\)".*/\1/'
}

# The status of a play of title $3 on replica $1 with token $2, from a client in the zone.
play() {
  curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" \
    -H 'x-forwarded-for: 198.51.100.7' -H 'content-type: application/json' \
    -d "{\"title\":\"$3\"}" "http://$1/v1/play"
}

# Milliseconds from now until a play (as `play` $1 $2 $3) answers `$4 $5` (= 403, != 404).
until_answer() {
  local t0; t0=$(now_ms)
  until [ "$(play "$1" "$2" "$3")" $4 "$5" ]; do
    sleep 0.005
    [ $(( $(now_ms) - t0 )) -lt 120000 ] || { echo "not seen in 120 s" >&2; return 1; }
  done
  echo $(( $(now_ms) - t0 ))
}

stats() { sort -n | awk '{ v[NR] = $1 } END { printf "median %d ms, slowest %d ms", v[int((NR + 1) / 2)], v[NR] }'; }

run() { # name binary
  local name=$1 bin=$2 dir=$WORK/$1
  mkdir -p "$dir"
  psql -c "CREATE DATABASE feed_$name"
  local url="postgresql://postgres@127.0.0.1:$PG_PORT/feed_$name"
  local flags=(--db "$url" --admin-token-file "$dir/admin-token" --origin-dir "$dir/origin"
    --listen 127.0.0.1:0 --probe-interval 0 --trusted-proxy 127.0.0.1)
  # A first start migrates; the catalog is then filled by SQL, before the replicas load it.
  "$bin" "${flags[@]}" 2> "$dir/migrate.log" & local p=$!
  wait_listening "$dir/migrate.log" > /dev/null; kill $p; wait $p 2>/dev/null || true
  local t0; t0=$(now_ms)
  psql -d "feed_$name" <<SQL
INSERT INTO titles (id, name) SELECT 'title-' || g, 'Title ' || g FROM generate_series(1, $TITLES) g;
INSERT INTO title_countries (title, country) SELECT 'title-' || g, 'NL' FROM generate_series(1, $TITLES) g;
INSERT INTO content (id, title, resolution, bitrate_kbps, size, sha256, content_type, origin)
  SELECT 'title-' || g || '_1080p.mp4', 'title-' || g, 1080, 6000, 1000000, repeat('0', 64),
         'video/mp4', 'embedded' FROM generate_series(1, $TITLES) g;
INSERT INTO subscribers (id, active, max_resolution, max_streams)
  SELECT 'sub-' || g, true, 1080, 4 FROM generate_series(1, $SUBSCRIBERS) g;
SQL
  echo "$name: catalog filled in $(( $(now_ms) - t0 )) ms"
  "$bin" "${flags[@]}" 2> "$dir/a.log" & local pa=$!
  local a; a=$(wait_listening "$dir/a.log")
  "$bin" "${flags[@]}" 2> "$dir/b.log" & local pb=$!
  local b; b=$(wait_listening "$dir/b.log")
  PIDS="$pa $pb"
  TOKEN=$(cat "$dir/admin-token")
  local post=(curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json')
  "${post[@]}" -d '{"prefix":"198.51.100.0/24","country":"NL"}' "http://$a/v1/admin/zones"
  local subs="" titles="" k tok keep
  keep=$(token "$b" "sub-$SUBSCRIBERS")
  for k in $(seq "$ROUNDS"); do
    tok=$(token "$b" "sub-$k")
    [ "$(play "$b" "$tok" title-1)" != 403 ] || { echo "sub-$k refused before the change" >&2; exit 1; }
    "${post[@]}" -d "{\"id\":\"sub-$k\",\"active\":false,\"max_resolution\":1080,\"max_streams\":4}" \
      "http://$a/v1/admin/subscribers"
    subs="$subs $(until_answer "$b" "$tok" title-1 = 403)"
    "${post[@]}" -d "{\"id\":\"new-$k\",\"name\":\"new $k\",\"countries\":[\"NL\"]}" \
      "http://$a/v1/admin/titles"
    "${post[@]}" -d "{\"id\":\"new-${k}_1080p.mp4\",\"title\":\"new-$k\",\"resolution\":1080,\"bitrate_kbps\":6000,\"size\":1000,\"sha256\":\"$(printf '0%.0s' $(seq 64))\",\"content_type\":\"video/mp4\",\"origin\":\"embedded\"}" \
      "http://$a/v1/admin/content"
    titles="$titles $(until_answer "$b" "$keep" "new-$k" != 404)"
  done
  local reloads; reloads=$(counter "$b" cp_feed_catalog_reloads_total)
  local rss; rss=$(awk '/VmRSS/ { print int($2 / 1024) }' /proc/$pb/status)
  echo "$name: subscriber change reached B: $(echo $subs | tr ' ' '\n' | stats)"
  echo "$name: title + rendition reached B: $(echo $titles | tr ' ' '\n' | stats)"
  echo "$name: B's whole-catalog rereads: $reloads; B's RSS $rss MiB"
  kill $pa $pb; wait $pa $pb 2>/dev/null || true; PIDS=""
}

echo "catalog: $TITLES titles, $TITLES renditions, $SUBSCRIBERS subscribers; $ROUNDS rounds"
[ -z "$CP_BEFORE" ] || run before "$CP_BEFORE"
run after "$CP_AFTER"
