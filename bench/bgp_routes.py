#!/usr/bin/env python3
"""How many routes one BGP session takes per second: oca-bgp's speaker against BIRD 2.

Run by bench/bgp_routes.sh, which builds oca-bgp-probe and makes the namespaces:

    <ns>-a  announcer (BIRD)  a0 10.252.0.1/30 fd00:252::1/64  ── veth ──  o1 .2 ::2  <ns>-o  oca-bgp-probe
                              a2 10.252.1.1/30 fd00:252:1::1/64 ── veth ── r3 .2 ::2  <ns>-r  BIRD, the reference

One BIRD in the announcer namespace holds V4 IPv4 and V6 IPv6 static routes (public, non-bogon
ranges, so our import filter runs in full and accepts all) and one BGP protocol per receiver,
disabled. A round starts a receiver afresh (passive, listening), enables the announcer's
protocol towards it, and measures from the receiver's session reaching Established to the
receiver holding every route; then disables the protocol and stops the receiver. Receivers
alternate within each round so both see the same machine. CPU seconds the receiver used
(utime + stime from /proc, from before the enable to the end) are reported too: when BIRD's
sending is the limit, the wall-clock rates converge and CPU per route still tells the receivers
apart.

  - oca: Established is the probe's `BGP state ... to=Established` log line, done the later of
    its two `End-of-RIB received` lines (BIRD sends one per family after its table, since we
    advertise graceful restart); then one snapshot checks every route was accepted.
  - bird: Established is `show protocols` Since (millisecond timeformat), done the first poll
    (every POLL_MS over the control socket) where both channels have imported every route.

Attribute modes: `shared` (every route the same attributes: BIRD packs ~800 IPv4 prefixes per
UPDATE) and `unique` (each route its own MED: one prefix per UPDATE, the receiver's
per-message cost). Prints JSON lines per measurement and a Markdown table at the end.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime

A_O4, O4 = "10.252.0.1", "10.252.0.2"
A_R4, R4 = "10.252.1.1", "10.252.1.2"
A_O6, A_R6 = "fd00:252::1", "fd00:252:1::1"


def v4_prefixes(n):
    # Consecutive /24s from 20.0.0.0: public unicast, never a bogon.
    return [f"{20 + i // 65536}.{(i // 256) % 256}.{i % 256}.0/24" for i in range(n)]


def v6_prefixes(n):
    # /48s under 2a00::/16 (RIPE's allocations): global unicast.
    return [f"2a00:{i // 65536:x}:{i % 65536:x}::/48" for i in range(n)]


def announcer_conf(v4, v6, mode):
    def statics(prefixes, base):
        if mode == "unique":
            return "".join(f"  route {p} blackhole {{ bgp_med = {base + i}; }};\n" for i, p in enumerate(prefixes))
        return "".join(f"  route {p} blackhole;\n" for p in prefixes)

    return f"""
router id {A_O4};
timeformat protocol iso long ms;
protocol device {{ }}
protocol static s4 {{ ipv4;
{statics(v4, 0)}}}
protocol static s6 {{ ipv6;
{statics(v6, 1_000_000)}}}
template bgp feed {{
  disabled; connect delay time 1; connect retry time 1; error wait time 1, 2;
  hold time 240; graceful restart on;
}}
protocol bgp to_oca from feed {{
  local {A_O4} as 64500; neighbor {O4} as 64501;
  ipv4 {{ import none; export where source = RTS_STATIC; }};
  ipv6 {{ import none; export where source = RTS_STATIC; next hop address {A_O6}; }};
}}
protocol bgp to_ref from feed {{
  local {A_R4} as 64500; neighbor {R4} as 64501;
  ipv4 {{ import none; export where source = RTS_STATIC; }};
  ipv6 {{ import none; export where source = RTS_STATIC; next hop address {A_R6}; }};
}}
"""


REF_CONF = f"""
router id {R4};
timeformat protocol iso long ms;
protocol device {{ }}
protocol bgp up {{
  local {R4} as 64501; neighbor {A_R4} as 64500; passive on;
  hold time 240; graceful restart on;
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
"""


def oca_conf(total):
    return f"""
local_as = 64501
router_id = "{O4}"
listen_addresses = ["{O4}"]
[[neighbors]]
address = "{A_O4}"
peer_as = 64500
passive = true
hold_time = 240
max_prefixes = {total + 1000}
"""


class Bird:
    """A BIRD process in a namespace and its control socket."""

    def __init__(self, ns, workdir, name, conf):
        self.ns, self.sock = ns, os.path.join(workdir, f"{name}.ctl")
        self.conf = os.path.join(workdir, f"{name}.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "bird", "-f", "-c", self.conf, "-s", self.sock],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"BIRD {name} did not start: see {self.log.name}")
            time.sleep(0.05)

    def cmd(self, line):
        """One command over the control socket (BIRD's numbered-line protocol); its text."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(self.sock)
        buf = b""
        # The greeting ends with "0001 BIRD ... ready."
        while not re.search(rb"(^|\n)0001 ", buf):
            buf += s.recv(65536)
        s.sendall(line.encode() + b"\n")
        out = b""
        while not re.search(rb"(^|\n)(0\d\d\d|[89]\d\d\d) [^\n]*\n$", out):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            out += chunk
        s.close()
        return out.decode(errors="replace")

    def cpu(self):
        return cpu_secs(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def since(bird_line):
    m = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", bird_line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp() if m else None


def imported(text):
    return sum(int(n) for n in re.findall(r"Routes:\s+(\d+) imported", text))


def wait(what, deadline, f, every=0.02):
    while True:
        v = f()
        if v:
            return v
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)



# ---- the replay sender: the same routes as pre-built UPDATEs, written as fast as TCP takes them ----

def msg(kind, body):
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + bytes([kind]) + body


def attr(flags, kind, value):
    if len(value) > 255:
        return bytes([flags | 0x10, kind]) + len(value).to_bytes(2, "big") + value
    return bytes([flags, kind, len(value)]) + value


def nlri(prefix):
    net, plen = prefix.split("/")
    plen = int(plen)
    raw = socket.inet_pton(socket.AF_INET6 if ":" in net else socket.AF_INET, net)
    return bytes([plen]) + raw[: (plen + 7) // 8]


def common_attrs(med):
    a = attr(0x40, 1, b"\x00")  # ORIGIN IGP
    a += attr(0x40, 2, bytes([2, 1]) + (64500).to_bytes(4, "big"))  # AS_SEQUENCE [64500], 4-octet
    if med is not None:
        a += attr(0x80, 4, med.to_bytes(4, "big"))
    return a


def update_v4(prefixes, nh, med):
    attrs = common_attrs(med) + attr(0x40, 3, socket.inet_aton(nh))
    return msg(2, b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs + b"".join(nlri(p) for p in prefixes))


def update_v6(prefixes, nh, med):
    reach = b"\x00\x02\x01" + bytes([16]) + socket.inet_pton(socket.AF_INET6, nh) + b"\x00"
    attrs = common_attrs(med) + attr(0x80, 14, reach + b"".join(nlri(p) for p in prefixes))
    return msg(2, b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs)


def chunks(prefixes, per):
    return [prefixes[i:i + per] for i in range(0, len(prefixes), per)]


def replay_blob(v4, v6, nh4, nh6, mode):
    """Every UPDATE, then End-of-RIB for each family; shared: as many prefixes per message as
    fit in 4096 bytes (as BIRD packs them), unique: one per message with its own MED."""
    out = []
    if mode == "unique":
        out += [update_v4([p], nh4, i) for i, p in enumerate(v4)]
        out.append(msg(2, b"\x00\x00\x00\x00"))
        out += [update_v6([p], nh6, 1_000_000 + i) for i, p in enumerate(v6)]
    else:
        out += [update_v4(c, nh4, None) for c in chunks(v4, 1000)]  # 4 bytes a /24: 4,000 + attributes
        out.append(msg(2, b"\x00\x00\x00\x00"))
        out += [update_v6(c, nh6, None) for c in chunks(v6, 570)]  # 7 bytes a /48: 3,990 + attributes
    out.append(msg(2, b"\x00\x00\x00\x06" + attr(0x80, 15, b"\x00\x02\x01")))
    assert all(len(m) <= 4096 for m in out)
    return b"".join(out)


def open_msg(router_id):
    caps = [
        bytes([1, 4, 0, 1, 0, 1]),  # MP IPv4 unicast
        bytes([1, 4, 0, 2, 0, 1]),  # MP IPv6 unicast
        bytes([2, 0]),  # route refresh
        bytes([65, 4]) + (64500).to_bytes(4, "big"),  # 4-octet AS
        bytes([64, 2, 0, 120]),  # graceful restart, 120 s, no families
    ]
    params = b"".join(bytes([2, len(c)]) + c for c in caps)
    return msg(1, bytes([4]) + (64500).to_bytes(2, "big") + (240).to_bytes(2, "big")
               + socket.inet_aton(router_id) + bytes([len(params)]) + params)


class Replayer:
    """Dials a receiver from the announcer's namespace (a child `ip netns exec ... python3`),
    does the OPEN exchange, then writes the blob in one go and idles until told to stop."""

    CHILD = r"""
import socket, sys, time
local, peer, openf, blobf = sys.argv[1:5]
blob, opn = open(blobf, "rb").read(), open(openf, "rb").read()
for _ in range(100):
    try:
        s = socket.create_connection((peer, 179), timeout=5, source_address=(local, 0))
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("replay: cannot connect")
s.settimeout(None)
s.sendall(opn)
got = b""
while got.count(b"\xff" * 16) < 2:  # the receiver's OPEN and KEEPALIVE
    b = s.recv(4096)
    if not b:
        sys.exit("replay: closed before Established")
    got += b
s.sendall(b"\xff" * 16 + b"\x00\x13\x04")
s.sendall(blob)
pass
sys.stdin.read()  # until stdin closes
s.close()
"""

    def __init__(self, ns, workdir, local, peer, blob):
        blobf, openf = os.path.join(workdir, "replay.bin"), os.path.join(workdir, "open.bin")
        with open(blobf, "wb") as f:
            f.write(blob)
        with open(openf, "wb") as f:
            f.write(open_msg(local))
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", self.CHILD, local, peer, openf, blobf],
                                     stdin=subprocess.PIPE)

    def cpu(self):
        return cpu_secs(self.proc.pid)

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class BirdSender:
    """The announcing BIRD's protocol towards one receiver, enabled and disabled."""

    def __init__(self, bird, proto):
        self.bird, self.proto = bird, proto
        bird.cmd(f"enable {proto}")

    def stop(self):
        self.bird.cmd(f"disable {self.proto}")

def run_bird_ref(args, sender, total):
    ref = Bird(args.ns + "-r", args.dir, "ref", REF_CONF)
    feed = None
    try:
        cpu0 = ref.cpu()
        feed = sender("ref")
        deadline = time.time() + args.timeout
        up = wait("the reference's session", deadline,
                  lambda: since(l) if "Established" in (l := ref.cmd("show protocols up")) else None)
        done = wait("the reference's routes", deadline,
                    lambda: time.time() if imported(ref.cmd("show protocols all up")) >= total else None,
                    every=args.poll_ms / 1000)
        cpu = ref.cpu() - cpu0
    finally:
        if feed:
            feed.stop()
        ref.stop()
    return done - up, cpu


LOG_TS = re.compile(r"^(\S+Z)\s")


def log_time(line):
    m = LOG_TS.match(line)
    # tracing's RFC 3339 timestamps carry microseconds; Python wants at most 6 digits.
    ts = re.sub(r"(\.\d{6})\d*Z$", r"\1Z", m.group(1)).replace("Z", "+00:00")
    return datetime.fromisoformat(ts).timestamp()


def run_oca(args, sender, total):
    conf = os.path.join(args.dir, "oca.toml")
    with open(conf, "w") as f:
        f.write(oca_conf(total))
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
    # A long interval: a snapshot of 120,000 routes is tens of MB of JSON; only one is asked for.
    p = subprocess.Popen(
        ["ip", "netns", "exec", args.ns + "-o", args.probe, "--config", conf, "--interval-ms", "3600000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events = {"up": None, "eor": [], "log": []}
    cond = threading.Condition()

    def read_log():
        for line in p.stderr:
            with cond:
                events["log"].append(line)
                if "BGP state" in line and "to=Established" in line:
                    events["up"] = log_time(line)
                elif "End-of-RIB received" in line:
                    events["eor"].append(log_time(line))
                cond.notify_all()

    threading.Thread(target=read_log, daemon=True).start()
    snapshots = []
    threading.Thread(target=lambda: snapshots.extend(p.stdout), daemon=True).start()
    feed = None
    try:
        wait("the probe's listener", time.time() + 10,
             lambda: any("BGP listening" in l for l in events["log"]))
        cpu0 = cpu_secs(p.pid)
        feed = sender("oca")
        deadline = time.time() + args.timeout
        with cond:
            ok = cond.wait_for(lambda: events["up"] and len(events["eor"]) >= 2, timeout=args.timeout)
        if not ok:
            raise SystemExit("timed out waiting for our speaker's routes; log:\n" + "".join(events["log"][-20:]))
        cpu = cpu_secs(p.pid) - cpu0
        if args.oca_only:
            # Profiling: no snapshot, whose JSON would take more samples than the routes did.
            return max(events["eor"]) - events["up"], cpu
        n = len(snapshots)
        p.stdin.write("snapshot\n")
        p.stdin.flush()
        wait("the snapshot", deadline, lambda: len(snapshots) > n, every=0.1)
        s = json.loads(snapshots[-1])["sessions"][0]
        if s["prefixes_accepted"] != total:
            raise SystemExit(f"our speaker accepted {s['prefixes_accepted']} of {total} "
                             f"(received {s['prefixes_received']}, last error {s['last_error']})")
    finally:
        if feed:
            feed.stop()
        p.stdin.close()
        try:
            p.wait(60)  # perf, when profiling, writes its data after the probe ends
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return max(events["eor"]) - events["up"], cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--v4", type=int, default=100_000)
    ap.add_argument("--v6", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="shared,unique")
    ap.add_argument("--senders", default="replay,bird")
    ap.add_argument("--poll-ms", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120, help="seconds a single run may take")
    ap.add_argument("--oca-only", action="store_true", help="no reference runs (for profiling)")
    args = ap.parse_args()
    total = args.v4 + args.v6
    v4, v6 = v4_prefixes(args.v4), v6_prefixes(args.v6)
    rows = []
    for mode in args.modes.split(","):
        for sender_kind in args.senders.split(","):
            announcer = None
            if sender_kind == "bird":
                announcer = Bird(args.ns + "-a", args.dir, f"announcer-{mode}", announcer_conf(v4, v6, mode))
                wait("the announcer's static routes", time.time() + args.timeout,
                     lambda: f"{total} of {total} routes" in announcer.cmd("show route count"), every=0.2)
                sender = lambda who: BirdSender(announcer, "to_" + who)
            else:
                blobs = {"oca": replay_blob(v4, v6, A_O4, A_O6, mode), "ref": replay_blob(v4, v6, A_R4, A_R6, mode)}
                peers = {"oca": (A_O4, O4), "ref": (A_R4, R4)}
                sender = lambda who: Replayer(args.ns + "-a", args.dir, *peers[who], blobs[who])
            try:
                res = {"oca": [], "bird": []}
                for r in range(args.rounds):
                    # Alternate who goes first, so neither always meets the machine warmer.
                    order = ["oca", "bird"] if r % 2 == 0 else ["bird", "oca"]
                    if args.oca_only:
                        order = ["oca"]
                    for who in order:
                        secs, cpu = (run_oca if who == "oca" else run_bird_ref)(args, sender, total)
                        res[who].append((secs, cpu))
                        print(json.dumps({"mode": mode, "sender": sender_kind, "round": r + 1, "receiver": who,
                                          "routes": total, "secs": round(secs, 3),
                                          "routes_per_sec": round(total / secs), "cpu_secs": round(cpu, 3)}),
                              flush=True)
                rows.append((mode, sender_kind, res))
            finally:
                if announcer:
                    announcer.stop()
    if args.oca_only:
        return
    print()
    print(f"{args.v4:,} IPv4 + {args.v6:,} IPv6 routes over one session; median of {args.rounds} rounds; "
          "receiver CPU seconds from the sender's start to the last route")
    print()
    print("| sender | attributes | oca routes/s | BIRD routes/s | oca/BIRD | oca CPU s | BIRD CPU s | oca s by round | BIRD s by round |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, sender_kind, res in rows:
        o = statistics.median(s for s, _ in res["oca"])
        b = statistics.median(s for s, _ in res["bird"])
        oc = statistics.median(c for _, c in res["oca"])
        bc = statistics.median(c for _, c in res["bird"])
        by = lambda k: ", ".join(f"{s:.2f}" for s, _ in res[k])
        print(f"| {sender_kind} | {mode} | {total / o:,.0f} | {total / b:,.0f} | {b / o:.2f}x | {oc:.2f} | {bc:.2f} "
              f"| {by('oca')} | {by('bird')} |")


if __name__ == "__main__":
    sys.exit(main())
