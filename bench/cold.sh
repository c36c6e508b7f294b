#!/usr/bin/env bash
# Cold-disk benchmark: oca-daemon (cold path, --cold-path auto) against nginx (aio threads +
# directio) on a working set far larger than the memory either may use, and fio (io_uring,
# O_DIRECT, same block size and queue depth) on the same files as the disk's ceiling. Then a
# mixed run: 90% of connections on a hot set in the page cache, 10% on cold files, comparing the
# hot requests' p99 with and without the cold load. Last, one stream: whole cold files one after
# another on one connection (a peer filling from this appliance), against fio's sequential read
# at queue depth 1 and 2. Writes bench/results/cold.md.
#
#   bench/cold.sh                          # 24 x 256 MiB corpus, 15 s per run
#   DURATION=8 NFILES=16 bench/cold.sh
#
# Needs root: page cache dropped before every run, servers in memory-limited cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-cold}
DURATION=${DURATION:-15}
NFILES=${NFILES:-24}
FILE_MB=${FILE_MB:-256}
MEM_MB=${MEM_MB:-512}
CONNS=${CONNS:-64}
QD=${QD:-32}
WORKERS=$(nproc)
OCA_PORT=18180 OCA_ADMIN=18181 NGINX_PORT=18190
ulimit -n 65536 2>/dev/null || true
[ "$(id -u)" = 0 ] || { echo "bench/cold.sh: run as root (drop_caches, cgroups)" >&2; exit 1; }
command -v nginx >/dev/null && command -v wrk >/dev/null && command -v fio >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq nginx-light wrk fio >/dev/null; }
cargo build --release -q -p oca-daemon
OCA=$REPO/target/release/oca-daemon
field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }

mkdir -p "$WORK/store/objects/co" "$WORK/nginx-root/c" "$WORK/nginx-tmp"
FILES="" PATHS=""
for i in $(seq 0 $((NFILES - 1))); do
  id="co_title${i}_1080p.mp4"
  f="$WORK/store/objects/co/$id"
  if [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" != $((FILE_MB << 20)) ]; then
    echo "generating $f" >&2
    head -c $((FILE_MB << 20)) /dev/urandom > "$f.tmp" && mv "$f.tmp" "$f"
  fi
  ln -f "$f" "$WORK/nginx-root/c/$id"
  FILES="$FILES $id"; PATHS="$PATHS${PATHS:+:}$f"
done
HOT_FILES=$(echo $FILES | cut -d' ' -f1)
COLD_FILES=$(echo $FILES | cut -d' ' -f2-)
export FILE_BYTES=$((FILE_MB << 20))

# Memory cgroups (v2, or v1's memory controller): page cache counts against the limit.
cg_make() { # name -> directory
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p "/sys/fs/cgroup/$1"; echo $((MEM_MB << 20)) > "/sys/fs/cgroup/$1/memory.max"; echo "/sys/fs/cgroup/$1"
  else
    mkdir -p "/sys/fs/cgroup/memory/$1"; echo $((MEM_MB << 20)) > "/sys/fs/cgroup/memory/$1/memory.limit_in_bytes"; echo "/sys/fs/cgroup/memory/$1"
  fi
}
CG_OCA=$(cg_make oca-bench-oca); CG_NGX=$(cg_make oca-bench-nginx)

cat > "$WORK/nginx.conf" <<CONF
worker_processes $WORKERS;
worker_rlimit_nofile 65536;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
thread_pool default threads=$QD max_queue=65536;
http {
  access_log off;
  sendfile on;
  aio threads;
  directio 4k;
  directio_alignment 4k;
  output_buffers 2 1m;
  keepalive_requests 1000000;
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
"$(command -v nginx)" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"
sleep 0.5
for p in $(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")"); do echo "$p" > "$CG_NGX/cgroup.procs"; done
# Per disk and worker: QD/workers reads in flight, QD in all, as fio and nginx's thread pool.
"$OCA" --listen 127.0.0.1:$OCA_PORT --admin-listen 127.0.0.1:$OCA_ADMIN --store "$WORK/store" --allow-unsigned \
  --workers "$WORKERS" --cold-queue-depth $((QD / WORKERS)) 2> "$WORK/oca.log" &
OCA_PID=$!
echo "$OCA_PID" > "$CG_OCA/cgroup.procs"
for _ in $(seq 50); do grep -q ' listening ' "$WORK/oca.log" && break; sleep 0.1; done
grep -q ' listening ' "$WORK/oca.log" || { cat "$WORK/oca.log" >&2; exit 1; }

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
wrk_run() { # port range files conns [duration] -> RESULT fields
  FILES="$3" RANGE_BYTES=$2 wrk -t"$WORKERS" -c"$4" -d"${5:-$DURATION}s" --timeout 10s -s "$REPO/bench/range.lua" \
    "http://127.0.0.1:$1/" | grep '^RESULT' | sed 's/^RESULT //'
}
gbs() { echo "$(field "$1" bps) / 1000000000" | bc -l | xargs printf '%.2f'; }
ms() { echo "$(field "$1" "$2") / 1000" | bc -l | xargs printf '%.1f'; }

rows=()
for range in 1048576 65536; do
  drop
  fio_out=$(fio --name=ceiling --rw=randread --bs=$range --iodepth=$QD --ioengine=io_uring --direct=1 \
    --runtime="$DURATION" --time_based --filename="$PATHS" --output-format=json 2>/dev/null)
  fio_bps=$(echo "$fio_out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"])')
  declare -A r=()
  for server in nginx oca; do
    port=$([ $server = oca ] && echo $OCA_PORT || echo $NGINX_PORT)
    drop
    r[$server]=$(wrk_run $port $range "$FILES" "$CONNS")
    echo "$((range >> 10)) KiB $server: $(gbs "${r[$server]}") GB/s p99 $(ms "${r[$server]}" p99_us) ms errors $(field "${r[$server]}" errors)"
  done
  ratio=$(echo "$(field "${r[oca]}" bps) / $(field "${r[nginx]}" bps)" | bc -l)
  fio_ratio=$(echo "$(field "${r[oca]}" bps) / $fio_bps" | bc -l)
  fio_gbs=$(echo "$fio_bps / 1000000000" | bc -l | xargs printf '%.2f')
  printf '%s KiB: fio %s GB/s; oca/nginx %.2fx, oca/fio %.2f\n' $((range >> 10)) "$fio_gbs" "$ratio" "$fio_ratio"
  rows+=("| $((range >> 10)) KiB | $fio_gbs | $(gbs "${r[nginx]}") | $(gbs "${r[oca]}") | $(printf '%.2f' "$ratio")x | $(printf '%.2f' "$fio_ratio") | $(ms "${r[nginx]}" p99_us) / $(ms "${r[oca]}" p99_us) | $(field "${r[nginx]}" errors) / $(field "${r[oca]}" errors) |")
  unset r
done
cold_parts=$(curl -s "http://127.0.0.1:$OCA_ADMIN/metrics" | grep '^oca_body_parts_total' | sed 's/oca_body_parts_total//' | tr '\n' ' ')

# Mixed: the hot set warmed into the page cache, 90% of connections on it, 10% on cold files.
mixed=()
HOT_CONNS=$((CONNS * 9 / 10)); COLD_CONNS=$((CONNS - HOT_CONNS))
for server in nginx oca; do
  port=$([ $server = oca ] && echo $OCA_PORT || echo $NGINX_PORT)
  drop
  wrk_run $port 262144 "$HOT_FILES" "$HOT_CONNS" 5 > /dev/null   # warms the hot set through the server
  alone=$(wrk_run $port 262144 "$HOT_FILES" "$HOT_CONNS")
  wrk_run $port 1048576 "$COLD_FILES" "$COLD_CONNS" > "$WORK/cold-$server.out" &
  cold_pid=$!
  with=$(wrk_run $port 262144 "$HOT_FILES" "$HOT_CONNS")
  wait $cold_pid
  cold=$(cat "$WORK/cold-$server.out")
  echo "mixed $server: hot p99 alone $(ms "$alone" p99_us) ms, with cold load $(ms "$with" p99_us) ms; cold $(gbs "$cold") GB/s"
  mixed+=("| $server | $(ms "$alone" p99_us) | $(ms "$with" p99_us) | $(gbs "$alone") / $(gbs "$with") | $(gbs "$cold") |")
done

# One stream: 8 whole cold files one after another on one connection, 3 rounds per server.
STREAM_FILES=$(echo $COLD_FILES | cut -d' ' -f1-8)
stream_gbs() { # port -> GB/s over the files
  local urls="" u
  for u in $STREAM_FILES; do urls="$urls -o /dev/null http://127.0.0.1:$1/c/$u"; done
  drop
  curl -s -w '%{size_download} %{time_total}\n' $urls \
    | awk '{b += $1; t += $2} END {printf "%.2f", b / t / 1e9}'
}
stream=()
for server in nginx oca; do
  port=$([ $server = oca ] && echo $OCA_PORT || echo $NGINX_PORT)
  runs=""
  for _ in 1 2 3; do runs="$runs $(stream_gbs $port)"; done
  echo "one stream $server:$runs GB/s"
  stream+=("| $server |$(echo $runs | sed 's/ / | /g; s/^/ /') |")
done
seq_fio() { # iodepth -> GB/s
  drop
  fio --name=seq --rw=read --bs=1m --iodepth="$1" --ioengine=io_uring --direct=1 --readonly \
    --filename="$(echo "$PATHS" | cut -d: -f2-9)" --output-format=json 2>/dev/null \
    | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"] / 1e9))'
}
fio_seq="queue depth 1: $(seq_fio 1) GB/s, 2: $(seq_fio 2) GB/s"
ahead=$(curl -s "http://127.0.0.1:$OCA_ADMIN/metrics" | grep '^oca_cold_reads_ahead_total' | sed 's/oca_cold_reads_ahead_total//' | tr '\n' ' ')

{
  echo "# Cold disks: oca-daemon's cold path against nginx (aio threads, directio) and fio"
  echo
  echo "Written by \`bench/cold.sh\` (DURATION=$DURATION NFILES=$NFILES FILE_MB=$FILE_MB MEM_MB=$MEM_MB CONNS=$CONNS QD=$QD) on $(date -u +%Y-%m-%d)."
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); disk $(df --output=source "$WORK" | tail -1) ($(cat /sys/block/vda/queue/rotational 2>/dev/null | sed 's/1/reported rotational/;s/0/solid state/'));"
  echo "$("$(command -v nginx)" -v 2>&1 | sed 's/.*: //'); $(fio --version)."
  echo "Working set $((NFILES * FILE_MB)) MiB; each server in a cgroup limited to $MEM_MB MiB; page cache dropped before every run;"
  echo "wrk -t$WORKERS -c$CONNS random aligned ranges over all files (bench/range.lua). oca-daemon: defaults (--cold-path auto),"
  echo "--cold-queue-depth $((QD / WORKERS)) x $WORKERS workers = $QD reads in flight. nginx: aio threads ($QD threads), directio 4k,"
  echo "output_buffers 2 1m. fio: randread, io_uring, O_DIRECT, iodepth $QD, same block size and files."
  echo
  echo "| range | fio GB/s | nginx GB/s | oca GB/s | oca/nginx | oca/fio | p99 ms nginx / oca | errors nginx / oca |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "oca-daemon's path decisions over these runs: $cold_parts"
  echo
  echo "Mixed: 1 hot file ($FILE_MB MiB) warmed into the page cache by the server itself, $HOT_CONNS connections of 256 KiB ranges on them;"
  echo "then the same again while $COLD_CONNS connections ask 1 MiB ranges of the $((NFILES - 1)) cold files."
  echo
  echo "| server | hot p99 ms alone | hot p99 ms with cold load | hot GB/s alone / with | cold GB/s |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${mixed[@]}"
  echo
  echo "One stream: the same 8 cold files ($FILE_MB MiB each) one after another on one connection (curl),"
  echo "page cache dropped before each round; fio sequential 1 MiB O_DIRECT reads of those files: $fio_seq."
  echo "oca-daemon's reads ahead over the whole benchmark: $ahead"
  echo
  echo "| server | round 1 GB/s | round 2 GB/s | round 3 GB/s |"
  echo "|---|---|---|---|"
  printf '%s\n' "${stream[@]}"
  if [ -f "$REPO/bench/NOTES-cold.md" ]; then echo; cat "$REPO/bench/NOTES-cold.md"; fi
  echo
} > "$REPO/bench/results/cold.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/cold.md and bench/RESULTS.md"
