#!/usr/bin/env python3
"""Hostile and awkward clients for bench/soak.sh, each bounded in time.

  soak_clients.py MODE PORT TLS SECONDS CONCURRENCY FILE_ID FILE_PATH

MODE: slow      connections reading a long range 4 KiB at a time with pauses, checking bytes
      pipeline  bursts of 500 pipelined requests (404s and 1-byte ranges), every answer checked
      garbage   random bytes, then wait for the server to close (never past 30 s)
TLS: 1 for HTTPS (no certificate check: the soak's own self-signed one).
Prints one line: RESULT mode=... ok=N errors=N (errors counts well-formed exchanges that failed;
garbage connections the server did not close within 30 s count as errors).
"""
import os, random, socket, ssl, sys, threading, time

mode, port, tls, secs, conc, fid, fpath = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
BODY = open(fpath, "rb").read()
END = time.time() + secs
ok = 0
errors = 0
notes = []
lock = threading.Lock()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def count(good, note=None):
    global ok, errors
    with lock:
        if good:
            ok += 1
        else:
            errors += 1
            if note and len(notes) < 5:
                notes.append(note)


def connect(timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


def read_response(f):
    """status, headers, body from a buffered reader."""
    line = f.readline()
    if not line:
        raise EOFError("closed")
    status = int(line[9:12])
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, _, v = h.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    body = f.read(length) if length else b""
    return status, body


def slow():
    while time.time() < END:
        start = random.randrange(0, len(BODY) - (4 << 20))
        try:
            s = connect()
            s.sendall(b"GET /c/%s HTTP/1.1\r\nHost: s\r\nRange: bytes=%d-%d\r\n\r\n" % (fid.encode(), start, start + (4 << 20) - 1))
            f = s.makefile("rb")
            status, _ = None, None
            line = f.readline()
            while f.readline() not in (b"\r\n", b""):
                pass
            got = b""
            # A player paused, then resumed: 4 KiB every 0.2 s for a while, never to the end.
            for _ in range(random.randrange(10, 60)):
                if time.time() >= END:
                    break
                chunk = f.read(4096)
                if not chunk:
                    break
                got += chunk
                time.sleep(0.2)
            good = line.startswith(b"HTTP/1.1 206") and got == BODY[start:start + len(got)]
            count(good, f"slow: {line!r} {len(got)} bytes")
            s.close()
        except Exception as e:  # noqa: BLE001
            count(False, f"slow: {e}")


def pipeline():
    while time.time() < END:
        try:
            s = connect()
            reqs = []
            for i in range(500):
                if i % 3 == 0:
                    at = random.randrange(len(BODY))
                    reqs.append((b"GET /c/%s/range/%d-%d HTTP/1.1\r\nHost:a\r\n\r\n" % (fid.encode(), at, at), at))
                else:
                    reqs.append((b"GET / HTTP/1.1\nHost:a\n\n", None))
            s.sendall(b"".join(r for r, _ in reqs))
            f = s.makefile("rb")
            good = True
            for _, at in reqs:
                status, body = read_response(f)
                if at is None:
                    good &= status == 404
                else:
                    good &= status == 206 and body == BODY[at:at + 1]
            count(good, "pipeline: wrong answer")
            s.close()
        except Exception as e:  # noqa: BLE001
            count(False, f"pipeline: {e}")


def garbage():
    rnd = random.Random()
    while time.time() < END:
        try:
            s = connect()
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 3000))))
            s.settimeout(30)
            closed = False
            try:
                while s.recv(65536):
                    pass
                closed = True
            except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
                closed = True
            count(closed, "garbage: not closed within 30 s")
            s.close()
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            count(True)


work = {"slow": slow, "pipeline": pipeline, "garbage": garbage}[mode]
threads = [threading.Thread(target=work, daemon=True) for _ in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=max(0.0, END - time.time()) + 60)
print(f"RESULT mode={mode} tls={int(tls)} ok={ok} errors={errors} {' | '.join(notes)}")
