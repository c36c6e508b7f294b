#!/usr/bin/env bash
# HTTPS side by side: oca-daemon (rustls; kTLS when the kernel has it, else userspace) against
# nginx with OpenSSL, same files, same ECDSA P-256 certificate, same wrk load: 64 KiB and 1 MiB
# random ranges on keep-alive connections, and a new connection per request (handshake rate).
# Writes bench/results/https.md.
#
#   bench/https.sh               # 10 s per run
#   DURATION=5 bench/https.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-$(nproc)}
CONNS=${CONNS:-32}
FILE_MB=256
NFILES=4
OCA_PORT=18443 OCA_ADMIN=18444 NGINX_PORT=18493
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need openssl; then
  echo "installing nginx, wrk and openssl" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx-light wrk openssl >/dev/null
fi
NGINX=$(command -v nginx)
cargo build --release -q -p oca-daemon
OCA=$REPO/target/release/oca-daemon
field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }

mkdir -p "$WORK/store/objects/bm" "$WORK/nginx-root/c" "$WORK/nginx-tmp" "$WORK/tls"
FILES=""
for i in $(seq 0 $((NFILES - 1))); do
  id="bm_title${i}_1080p.mp4"
  f="$WORK/store/objects/bm/$id"
  if [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" != $((FILE_MB << 20)) ]; then
    echo "generating $f" >&2
    head -c $((FILE_MB << 20)) /dev/urandom > "$f.tmp" && mv "$f.tmp" "$f"
  fi
  ln -f "$f" "$WORK/nginx-root/c/$id"
  cat "$f" > /dev/null
  FILES="$FILES $id"
done
export FILES FILE_BYTES=$((FILE_MB << 20))
CERT=$WORK/tls/cert.pem KEY=$WORK/tls/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$KEY" -out "$CERT" \
  -days 7 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

cat > "$WORK/nginx-tls.conf" <<CONF
worker_processes $WORKERS;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx-tls.pid;
error_log $WORK/nginx-tls-error.log warn;
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
    listen 127.0.0.1:$NGINX_PORT ssl reuseport;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $WORK/nginx-root;
  }
}
CONF

cleanup() {
  [ -n "${OCA_PID:-}" ] && kill "$OCA_PID" 2>/dev/null || true
  [ -f "$WORK/nginx-tls.pid" ] && kill "$(cat "$WORK/nginx-tls.pid")" 2>/dev/null || true
}
trap cleanup EXIT
"$NGINX" -c "$WORK/nginx-tls.conf" -e "$WORK/nginx-tls-error.log" \
  || { echo "nginx did not start (port $NGINX_PORT busy?)" >&2; exit 1; }
"$OCA" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:$OCA_ADMIN --store "$WORK/store" --allow-unsigned \
  --tls-listen 127.0.0.1:$OCA_PORT --tls-cert "$CERT" --tls-key "$KEY" --workers "$WORKERS" 2> "$WORK/oca-tls.log" &
OCA_PID=$!
for _ in $(seq 50); do grep -q ' listening ' "$WORK/oca-tls.log" && break; sleep 0.1; done
grep -q ' listening ' "$WORK/oca-tls.log" || { cat "$WORK/oca-tls.log" >&2; exit 1; }
KTLS=$(grep -o 'kernel_tls=[^;]*' "$WORK/oca-tls.log" | head -1)
first=$(echo $FILES | cut -d' ' -f1)
for port in $OCA_PORT $NGINX_PORT; do
  code=$(curl -s -k -o /dev/null -w '%{http_code}' -r 0-99 "https://127.0.0.1:$port/c/$first")
  [ "$code" = 206 ] || { echo "server on $port answered $code" >&2; exit 1; }
done

run_wrk() { # port range close -> RESULT fields
  RANGE_BYTES=$2 CLOSE=$3 wrk -t"$WORKERS" -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$REPO/bench/range.lua" \
    "https://127.0.0.1:$1/" | grep '^RESULT' | sed 's/^RESULT //'
}

rows=()
printf '%-22s %-7s %10s %8s %8s %8s %6s\n' load server req/s GB/s p50_ms p99_ms errors
for load in "64K keep-alive:65536:0" "1M keep-alive:1048576:0" "new connection per request (1 KiB):1024:1"; do
  IFS=: read -r name range close <<< "$load"
  declare -A r=()
  for server in nginx oca; do
    port=$([ $server = oca ] && echo $OCA_PORT || echo $NGINX_PORT)
    DURATION=2 run_wrk $port "$range" "$close" > /dev/null
    r[$server]=$(run_wrk $port "$range" "$close")
    res=${r[$server]}
    printf '%-22s %-7s %10.0f %8.2f %8.2f %8.2f %6s\n' "${name:0:22}" $server "$(field "$res" rps)" \
      "$(echo "$(field "$res" bps) / 1000000000" | bc -l)" "$(echo "$(field "$res" p50_us) / 1000" | bc -l)" \
      "$(echo "$(field "$res" p99_us) / 1000" | bc -l)" "$(field "$res" errors)"
  done
  ro=${r[oca]} rn=${r[nginx]}
  ratio=$(echo "$(field "$ro" rps) / $(field "$rn" rps)" | bc -l)
  printf '%-22s ratio oca/nginx: %.2fx\n' "${name:0:22}" "$ratio"
  rows+=("| $name | $(printf '%.0f' "$(field "$rn" rps)") | $(printf '%.0f' "$(field "$ro" rps)") | $(printf '%.2f' "$ratio")x | $(printf '%.2f / %.2f' "$(echo "$(field "$rn" bps)/1000000000" | bc -l)" "$(echo "$(field "$ro" bps)/1000000000" | bc -l)") | $(printf '%.2f / %.2f' "$(echo "$(field "$rn" p99_us)/1000" | bc -l)" "$(echo "$(field "$ro" p99_us)/1000" | bc -l)") | $(field "$rn" errors) / $(field "$ro" errors) |")
  unset r
done
handshakes=$(curl -s "http://127.0.0.1:$OCA_ADMIN/metrics" | grep '^oca_tls_handshakes_total' | tr '\n' ' ')

{
  echo "# HTTPS: oca-daemon against nginx"
  echo
  echo "Written by \`bench/https.sh\` (DURATION=$DURATION WORKERS=$WORKERS CONNS=$CONNS) on $(date -u +%Y-%m-%d)."
  echo "Machine: $(nproc) cores, Linux $(uname -r); $("$NGINX" -v 2>&1 | sed 's/.*: //') with $(openssl version | cut -d' ' -f1-2); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)."
  echo "Both: ECDSA P-256 certificate, TLS 1.3 negotiated by wrk, $WORKERS workers, the 4 x $FILE_MB MiB corpus of bench/run.sh in the page cache."
  echo "oca-daemon TLS: $KTLS. Its handshake counters after the run: $handshakes"
  echo
  echo "| load | nginx req/s | oca req/s | oca/nginx | GB/s nginx / oca | p99 ms nginx / oca | errors nginx / oca |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  if [ -f "$REPO/bench/NOTES-https.md" ]; then echo; cat "$REPO/bench/NOTES-https.md"; fi
  echo
} > "$REPO/bench/results/https.md"
cat "$REPO"/bench/results/*.md > "$REPO/bench/RESULTS.md"
echo "wrote bench/results/https.md and bench/RESULTS.md"
