#!/usr/bin/env python3
"""Measures how long a route change takes to steer: from sending the health report that moves a
prefix to the first steering answer that follows it, on a fleet built by cp_fleet.py --bgp.

usage: bgp_move.py URL TOKEN DATA_DIR [--site 7] [--rounds 50]

Site S's appliances all hear its 100 prefixes. Each round, one of two of them (H) hears a /25
inside one of those prefixes with AS path length 2 and steering sends the /25's clients to H;
then the other (M) reports the same /25 with AS path length 1. Timed: from just before M's report
is sent until a steering answer for a client in the /25 names M first (asked back to back on one
keep-alive connection). Prints one RESULT line.
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("token")
ap.add_argument("data")
ap.add_argument("--site", type=int, default=7)
ap.add_argument("--rounds", type=int, default=50)
a = ap.parse_args()
u = urllib.parse.urlparse(a.url)


def prefix(n):
    return f"{11 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}.0/24"


def connect():
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


reporter, steerer = connect(), connect()


def call(conn, method, path, body, token):
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse()
    payload = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {payload[:300]!r}")
    return json.loads(payload)


creds = dict(line.split() for line in open(f"{a.data}/credentials.txt"))
s = a.site
assert s % 5 != 0 and s % 7 == 0, "an ISP site (every fifth is an IXP) with a client in clients.txt"
clients = [line.split() for line in open(f"{a.data}/clients.txt")]
want = prefix(s * 100 + 3).replace(".0/24", ".77")
client, content = next((c[0], c[1]) for c in clients if c[0] == want)
moved = prefix(s * 100 + 3).replace("/24", "/25")
base = [{"prefix": prefix(s * 100 + j), "neighbor": "100.64.0.1", "as_path": [64500, 65000 + s % 1000], "origin": "igp"}
        for j in range(100)]


def report(oca, path_len):
    routes = base + ([{"prefix": moved, "neighbor": "100.64.0.1", "as_path": [64500] * path_len, "origin": "igp"}]
                     if path_len else [])
    body = {"oca_id": oca, "site": "x", "version": "bench", "status": "ok",
            "serving": {"active_connections": 10, "bytes_per_sec": 1_000_000, "requests_per_sec": 10, "capacity_bps": 100_000_000_000},
            "disks": [], "prefixes": [],
            "bgp": {"sessions": [{"neighbor": "100.64.0.1", "peer_as": 64500, "state": "established", "since": 1764547200,
                                  "prefixes_received": len(routes), "prefixes_accepted": len(routes), "flaps": 0}],
                    "routes": routes},
            "inventory": {"kind": "delta", "base_seq": 1, "seq": 1, "added": [], "removed": []}}
    call(reporter, "POST", f"/v1/appliances/{oca}/health", body, creds[oca])


def first():
    ans = call(steerer, "GET", f"/v1/steer?client_ip={client}&content_id={content}", None, a.token)
    return ans["appliances"][0]["oca_id"] if ans["appliances"] else None


def wait_for(oca, limit=10.0):
    start, asked = time.perf_counter(), 0
    while True:
        asked += 1
        if first() == oca:
            return time.perf_counter(), asked
        if time.perf_counter() - start > limit:
            raise SystemExit(f"steering never followed to {oca}")


holder, mover = f"oca{s}-0", f"oca{s}-1"
moves, reports, asks = [], [], []
for _ in range(a.rounds):
    report(mover, 0)
    report(holder, 2)
    wait_for(holder)
    t0 = time.perf_counter()
    report(mover, 1)
    t_report = time.perf_counter()
    t1, asked = wait_for(mover)
    moves.append((t1 - t0) * 1000)
    reports.append((t_report - t0) * 1000)
    asks.append(asked)
    holder, mover = mover, holder
report(holder, 0)
report(mover, 0)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


print(f"RESULT rounds={a.rounds} move_p50_ms={statistics.median(moves):.2f} move_p90_ms={pct(moves, 0.9):.2f} "
      f"move_max_ms={max(moves):.2f} report_p50_ms={statistics.median(reports):.2f} "
      f"report_max_ms={max(reports):.2f} answers_before_following_max={max(asks) - 1}")
