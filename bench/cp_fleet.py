#!/usr/bin/env python3
"""Builds a synthetic fleet in a running control plane through its admin API and health intake.

usage: cp_fleet.py URL TOKEN OUT_DIR [--sites 2000] [--per-site 5] [--content 100000] [--bgp]

2,000 sites (one IXP per four ISPs, 20 regions), 5 appliances per site, 100 prefixes per site
(200,000 in all, each site allowed its own), 25,000 titles with 4 renditions (100,000 content
ids), 200 files held per site, 1,000 subscribers with a player token each, a 0.0.0.0/0 zone in
NL. Writes the appliance credentials, player tokens, client addresses and ids the load scripts
use into OUT_DIR. With --bgp, appliances report their prefixes as BGP routes (one session,
AS path [64500, 65000 + site % 1000], origin IGP) instead of static prefixes.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import threading
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("token")
ap.add_argument("out")
ap.add_argument("--sites", type=int, default=2000)
ap.add_argument("--per-site", type=int, default=5)
ap.add_argument("--content", type=int, default=100000)
ap.add_argument("--bgp", action="store_true")
a = ap.parse_args()
u = urllib.parse.urlparse(a.url)
local = threading.local()


def call(method, path, body, token=a.token):
    c = getattr(local, "conn", None)
    if c is None:
        c = local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, path, body=data, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse()
    payload = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {payload[:200]!r}")
    return json.loads(payload) if payload else None


def parallel(fn, items, workers=16):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


def site_id(s):
    return f"ixp{s}" if s % 5 == 0 else f"isp{s}"


def prefix(n):
    return f"{11 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}.0/24"


os.makedirs(a.out, exist_ok=True)
# IXPs first (every fifth site), then the ISPs that fill from them.
ixps = [s for s in range(a.sites) if s % 5 == 0]
isps = [s for s in range(a.sites) if s % 5 != 0]
def allowed(s):
    return [prefix(s * 100 + j) for j in range(100)]


parallel(lambda s: call("POST", "/v1/admin/sites", {"id": site_id(s), "kind": "ixp", "region": f"r{s % 20}", "allowed_prefixes": allowed(s)}), ixps)
parallel(lambda s: call("POST", "/v1/admin/sites", {"id": site_id(s), "kind": "isp", "region": f"r{(s - s % 5) % 20}", "parent": site_id(s - s % 5), "allowed_prefixes": allowed(s)}), isps)
call("POST", "/v1/admin/zones", {"prefix": "0.0.0.0/0", "country": "NL"})
print(f"sites: {a.sites}", flush=True)

titles = a.content // 4
parallel(lambda t: call("POST", "/v1/admin/titles", {"id": f"t{t}", "name": f"title {t}", "countries": ["NL"]}), range(titles))
res = [2160, 1080, 720, 480]
sha = "0" * 64
parallel(lambda i: call("POST", "/v1/admin/content", {"id": f"t{i // 4}_{res[i % 4]}p.mp4", "title": f"t{i // 4}", "resolution": res[i % 4], "bitrate_kbps": res[i % 4] * 5, "size": 1 << 30, "sha256": sha, "content_type": "video/mp4", "origin": "embedded"}), range(titles * 4))
parallel(lambda s: call("POST", "/v1/admin/subscribers", {"id": f"s{s}", "active": True, "max_resolution": 2160, "max_streams": 1000000}), range(1000))
tokens = parallel(lambda s: call("POST", f"/v1/admin/subscribers/s{s}/tokens", {"ttl_secs": 7 * 86400})["token"], range(1000))
with open(os.path.join(a.out, "tokens.txt"), "w") as f:
    for t in tokens:
        f.write(t + "\n")
print(f"titles: {titles}, content: {titles * 4}", flush=True)

apps = [(s, k) for s in range(a.sites) for k in range(a.per_site)]
creds = parallel(lambda sk: (f"oca{sk[0]}-{sk[1]}", call("POST", "/v1/admin/appliances", {"id": f"oca{sk[0]}-{sk[1]}", "site": site_id(sk[0]), "url": f"http://oca{sk[0]}-{sk[1]}.example", "capacity_bps": 100_000_000_000})["credential"]), apps)
with open(os.path.join(a.out, "credentials.txt"), "w") as f:
    for oca, cred in creds:
        f.write(f"{oca} {cred}\n")
print(f"appliances: {len(creds)}", flush=True)


def held(s):
    # 200 files per site, spread so each file sits in a handful of sites.
    return [f"t{i // 4}_{res[i % 4]}p.mp4" for i in range((s * 37) % 500, titles * 4, 500)][:200]


def bgp_report(s, extra):
    """The BGP part of a report of site s's appliances: its 100 prefixes, plus `extra` routes."""
    routes = [{"prefix": p, "neighbor": "100.64.0.1", "as_path": [64500, 65000 + s % 1000], "origin": "igp"}
              for p in allowed(s)] + extra
    return {"sessions": [{"neighbor": "100.64.0.1", "peer_as": 64500, "state": "established", "since": 1764547200,
                          "prefixes_received": len(routes), "prefixes_accepted": len(routes), "flaps": 0}],
            "routes": routes}


def report(item):
    (s, k), (oca, cred) = item
    body = {"oca_id": oca, "site": site_id(s), "version": "bench", "status": "ok",
            "serving": {"active_connections": 10, "bytes_per_sec": 1_000_000, "requests_per_sec": 10, "capacity_bps": 100_000_000_000},
            "disks": [], "prefixes": allowed(s),
            "inventory": {"kind": "full", "seq": 1, "content": held(s)}}
    if a.bgp:
        body["prefixes"] = []
        body["bgp"] = bgp_report(s, [])
    call("POST", f"/v1/appliances/{oca}/health", body, token=cred)


parallel(report, list(zip(apps, creds)))
print("health: full reports sent", flush=True)
with open(os.path.join(a.out, "clients.txt"), "w") as f:
    for s in range(0, a.sites, 7):
        f.write(prefix(s * 100 + 3).replace(".0/24", ".77") + " " + held(s)[0] + " t" + held(s)[0][1:].split("_")[0] + "\n")
