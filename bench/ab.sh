#!/usr/bin/env bash
# A/B of two oca-daemon binaries on bench/run.sh's corpus (run bench/run.sh once first): the same
# wrk load on each, alternating, N rounds. For telling a change in oca-daemon from a change in
# nginx's figure or the machine's mood between runs of bench/run.sh.
#
#   git worktree add /var/tmp/base <rev> && (cd /var/tmp/base && cargo build --release -p oca-daemon)
#   A=/var/tmp/base/target/release/oca-daemon bench/ab.sh              # 1 MiB ranges, 1000 conns
#   A=... RANGE=65536 CONNS=32 N=3 bench/ab.sh
#   A=... B=... B_ARGS="--body-path sendfile" bench/ab.sh   # extra flags for one side
#   A=... TLS=1 CLOSE=1 RANGE=1024 CONNS=32 bench/ab.sh       # HTTPS, a new connection per request
#                                               (run bench/https.sh once first: its certificate)
#   A=... WITH_NGINX=1 bench/ab.sh # nginx too, in the same rounds (its config from bench/run.sh or
#                                   bench/https.sh), and each binary's ratio to it: tells whether a
#                                   ratio moved because of oca-daemon or because of nginx's run
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-/var/tmp/oca-bench}
A=${A:?give A=path of the base oca-daemon}
B=${B:-$PWD/target/release/oca-daemon}
CONNS=${CONNS:-1000} RANGE=${RANGE:-1048576} D=${D:-8} N=${N:-3} TLS=${TLS:-0} CLOSE=${CLOSE:-0}
WITH_NGINX=${WITH_NGINX:-0}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FILES="$(ls "$WORK/store/objects/bm" | tr '\n' ' ')"
export FILES FILE_BYTES=$((256 << 20))
pids=()
NGINX_CONF=$WORK/nginx.conf NGINX_PID=$WORK/nginx.pid NGINX_PORT=18090
[ "$TLS" = 1 ] && NGINX_CONF=$WORK/nginx-tls.conf NGINX_PID=$WORK/nginx-tls.pid NGINX_PORT=18493
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  [ "$WITH_NGINX" = 1 ] && [ -f "$NGINX_PID" ] && kill "$(cat "$NGINX_PID")" 2>/dev/null || true
  wait
}
trap stop EXIT
start() { # binary port admin-port [extra args...]
  local extra=("${@:4}")
  "$1" --help | grep -q -- --max-connections-per-client && extra+=(--max-connections-per-client 0)
  if [ "$TLS" = 1 ]; then
    extra+=(--tls-listen "127.0.0.1:$(($2 + 2))" --tls-cert "$WORK/tls/cert.pem" --tls-key "$WORK/tls/key.pem")
  fi
  "$1" --listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" --store "$WORK/store" --allow-unsigned \
    --workers 2 --engine uring "${extra[@]}" > /dev/null 2> "$WORK/ab-$2.log" &
  pids+=($!)
}
start "$A" 18180 18181 ${A_ARGS:-}
start "$B" 18280 18281 ${B_ARGS:-}
sides=(A B) urls=() scheme=http off=0
[ "$TLS" = 1 ] && scheme=https off=2
urls+=("$scheme://127.0.0.1:$((18180 + off))/" "$scheme://127.0.0.1:$((18280 + off))/")
if [ "$WITH_NGINX" = 1 ]; then
  [ -f "$NGINX_CONF" ] || { echo "no $NGINX_CONF: run bench/run.sh (or bench/https.sh for TLS=1) once first" >&2; exit 1; }
  nginx -c "$NGINX_CONF" || { echo "nginx did not start (port $NGINX_PORT busy?)" >&2; exit 1; }
  sides+=(nginx) urls+=("$scheme://127.0.0.1:$NGINX_PORT/")
fi
sleep 1
declare -A sum
for _ in $(seq "$N"); do
  for i in "${!sides[@]}"; do
    RANGE_BYTES=$RANGE CLOSE=$CLOSE wrk -t2 -c"$CONNS" -d2s --timeout 10s -s bench/range.lua "${urls[$i]}" > /dev/null
    r=$(RANGE_BYTES=$RANGE CLOSE=$CLOSE wrk -t2 -c"$CONNS" -d"${D}s" --timeout 10s -s bench/range.lua "${urls[$i]}" | grep '^RESULT')
    echo "${sides[$i]} range=$RANGE conns=$CONNS tls=$TLS close=$CLOSE ${r#RESULT }"
    rps=$(echo "$r" | tr ' ' '\n' | grep '^rps=' | cut -d= -f2)
    sum[${sides[$i]}]=$(awk -v a="${sum[${sides[$i]}]:-0}" -v b="${rps:-0}" 'BEGIN { print a + b }')
  done
done
awk -v n="$N" -v a="${sum[A]}" -v b="${sum[B]}" -v x="${sum[nginx]:-0}" 'BEGIN {
  if (x > 0) printf "over %d rounds: A/nginx %.2fx, B/nginx %.2fx, B/A %.2fx\n", n, a / x, b / x, b / a
  else printf "over %d rounds: B/A %.2fx\n", n, b / a }'
