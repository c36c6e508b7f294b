#!/usr/bin/env bash
# How many routes one BGP session takes per second: BIRD 2 announces V4 IPv4 + V6 IPv6 routes to
# our speaker (oca-bgp-probe) and, in the same run, to a second BIRD as the reference receiver,
# each in its own network namespace; time from Established to every route held, both attribute
# modes (shared: packed UPDATEs; unique: one prefix per UPDATE). Needs root, bird2, iproute2.
# The measuring is bench/bgp_routes.py (its doc says how each side is timed).
#
#   bench/bgp_routes.sh                          # 100,000 IPv4 + 20,000 IPv6, 3 rounds
#   V4=20000 V6=5000 ROUNDS=1 bench/bgp_routes.sh
#   PERF=shared V4=1000000 V6=200000 SENDERS=replay ROUNDS=1 bench/bgp_routes.sh
#                                                # then perf record the probe (that mode, one run)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${BENCH_DIR:-/var/tmp/oca-bench-bgp}
V4=${V4:-100000} V6=${V6:-20000} ROUNDS=${ROUNDS:-3} MODES=${MODES:-shared,unique} SENDERS=${SENDERS:-replay,bird}
# The whole benchmark is bounded: each receiver run by --timeout, everything by this.
LIMIT=${LIMIT:-900}
[ "$(id -u)" = 0 ] || { echo "bgp_routes.sh: needs root (network namespaces)" >&2; exit 1; }
command -v bird >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq bird2 >/dev/null; }
cargo build --release -q -p oca-bgp --bin oca-bgp-probe
PROBE=$REPO/target/release/oca-bgp-probe
NS=obr$$
rm -rf "$WORK" && mkdir -p "$WORK"
cleanup() { for s in a o r; do ip netns del "$NS-$s" 2>/dev/null || true; done; }
trap cleanup EXIT
for s in a o r; do ip netns add "$NS-$s"; ip -n "$NS-$s" link set lo up; done
# announcer a0 <-> o1 (our speaker), a2 <-> r3 (the reference BIRD)
ip link add a0 netns "$NS-a" type veth peer name o1 netns "$NS-o"
ip link add a2 netns "$NS-a" type veth peer name r3 netns "$NS-r"
addr() { # ns dev v4 v6
  ip -n "$1" link set "$2" up
  ip -n "$1" addr add "$3/30" dev "$2"
  # nodad: a tentative address would fail the first connection for a second.
  ip -n "$1" addr add "$4/64" dev "$2" nodad
}
addr "$NS-a" a0 10.252.0.1 fd00:252::1
addr "$NS-o" o1 10.252.0.2 fd00:252::2
addr "$NS-a" a2 10.252.1.1 fd00:252:1::1
addr "$NS-r" r3 10.252.1.2 fd00:252:1::2
echo "$(nproc) cores, load $(cut -d" " -f1-3 /proc/loadavg); $(bird --version 2>&1); kernel $(uname -r); $(git -C "$REPO" rev-parse --short HEAD)"
timeout "$LIMIT" python3 "$REPO/bench/bgp_routes.py" --ns "$NS" --dir "$WORK" --probe "$PROBE" \
  --v4 "$V4" --v6 "$V6" --rounds "$ROUNDS" --modes "$MODES" --senders "$SENDERS" | tee "$WORK/out.txt"
if [ -n "${PERF:-}" ]; then
  command -v perf >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq linux-perf >/dev/null; }
  # The same run once more with the probe under perf record (call graphs by DWARF): where its
  # time goes. perf writes $WORK/perf.data; the report's top goes to $WORK/perf.txt.
  cat > "$WORK/perf-probe" <<EOF
#!/bin/sh
exec perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -o "$WORK/perf.data" -- "$PROBE" "\$@"
EOF
  chmod +x "$WORK/perf-probe"
  timeout "$LIMIT" python3 "$REPO/bench/bgp_routes.py" --ns "$NS" --dir "$WORK" --probe "$WORK/perf-probe" \
    --v4 "$V4" --v6 "$V6" --rounds 1 --modes "$PERF" --senders replay --timeout 300 --oca-only
  perf report -i "$WORK/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null | grep -v '^$' | head -80 > "$WORK/perf.txt"
  perf report -i "$WORK/perf.data" --children --percent-limit 3 --stdio -g none 2>/dev/null | grep '%' | head -50 >> "$WORK/perf.txt"
  echo "profile: $WORK/perf.txt"
fi
