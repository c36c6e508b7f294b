#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, makes one small request on each, leaves them
idle, prints the RSS (KiB) of the given PIDs (summed), then closes everything.

usage: idle_conns.py HOST PORT PATH N PID [PID...]
"""
import resource
import socket
import sys
import time

host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
pids = [int(p) for p in sys.argv[5:]]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 1000)), hard))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


req = f"GET {path} HTTP/1.1\r\nHost: bench\r\nRange: bytes=0-0\r\n\r\n".encode()
conns = []
deadline = time.time() + 120
for i in range(n):
    if time.time() > deadline:
        sys.exit(f"gave up after {i} connections (120 s bound)")
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(req)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection {i} closed by the server")
        got += chunk
    if not got.startswith(b"HTTP/1.1 206"):
        sys.exit(f"connection {i}: {got[:40]!r}")
    conns.append(s)
time.sleep(2)
total = sum(rss_kib(p) for p in pids)
print(f"IDLE conns={len(conns)} rss_kib={total}")
for s in conns:
    s.close()
