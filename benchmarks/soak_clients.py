#!/usr/bin/env python3
"""Hostile and faulty control clients for benchmarks/soak.sh (loopback only, bounded).

Runs for SECS seconds against the engine's control port and then exits by itself. Every
second it cycles through a mix of what a hostile client or a broken network does: connections
that never speak, garbage and overlong lines, deep nesting and duplicate keys, NUL bytes,
byte-by-byte (slowloris) senders, watchers that never read, forged agent hellos and reports
with absurd sequence numbers, connect-and-reset storms, and bursts of start/stop changes. A
few legitimate requests are timed along the way (the "probe" of whether the engine still
answers); their latencies are printed as JSON at the end.
"""
import json
import random
import socket
import sys
import time

port, secs, token = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""
HOST = "127.0.0.1"
MAX_OPEN = 400  # sockets this script holds at most (bounded load)
rng = random.Random(7)
held = []  # sockets kept open (silent, slow, non-reading)
stats = {"connects": 0, "refused": 0, "sent_bytes": 0, "ok_requests": 0, "failed_requests": 0}
latencies = []


def connect(timeout=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((HOST, port))
    except OSError:
        stats["refused"] += 1
        s.close()
        return None
    stats["connects"] += 1
    return s


def send(s, data):
    try:
        s.sendall(data)
        stats["sent_bytes"] += len(data)
        return True
    except OSError:
        return False


def hold(s):
    held.append(s)
    while len(held) > MAX_OPEN:
        held.pop(0).close()


def request(obj, raw=None):
    """One legitimate request on a fresh connection; returns the reply or None."""
    s = connect()
    if not s:
        stats["failed_requests"] += 1
        return None
    if token:
        obj = dict(obj, token=token)
    t0 = time.monotonic()
    ok = send(s, (raw if raw is not None else json.dumps(obj)).encode() + b"\n")
    buf = b""
    try:
        while ok and b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError:
        pass
    s.close()
    if b"\n" not in buf:
        stats["failed_requests"] += 1
        return None
    latencies.append(time.monotonic() - t0)
    stats["ok_requests"] += 1
    return json.loads(buf.split(b"\n")[0])


def silent():
    for _ in range(20):
        s = connect()
        if s:
            hold(s)


def garbage():
    s = connect()
    if not s:
        return
    send(s, bytes(rng.getrandbits(8) for _ in range(4096)) + b"\n")
    send(s, b"x" * 200_000 + b"\n")  # overlong line
    send(s, b'{"command":"list","seq":' + b"[" * 100_000 + b"\n")  # deep nesting
    send(s, b'{"command":"hello","command":"shutdown"}\n')  # duplicate key
    send(s, b'{"command":"list"}\x00{"command":"shutdown"}\n')  # NUL
    s.close()


def slowloris():
    s = connect()
    if s:
        send(s, b'{"comm')
        hold(s)


def nonreader():
    s = connect()
    if not s:
        return
    msg = {"command": "watch", "queue": 100000}
    if token:
        msg["token"] = token
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    send(s, json.dumps(msg).encode() + b"\n")
    hold(s)  # never reads


def forged_agent():
    s = connect()
    if not s:
        return
    name = "soak-agent-%d" % rng.randrange(20)
    hello = {"command": "agent_hello", "name": name, "queue_id": "q%d" % rng.randrange(5),
             "interval": "5s", "facts": {"os": ["x"], "deep": [[[[1]]]]}}
    if token:
        hello["token"] = token
    send(s, json.dumps(hello).encode() + b"\n")
    report = {"command": "report", "name": name, "queue_id": "q1", "dropped": 0,
              "results": [{"seq": 2**64 - 1, "result": {"task": "x"}}]}
    send(s, json.dumps(report).encode() + b"\n")
    send(s, b'{"command":"info_reply","facts":' + b"[" * 50_000 + b"\n")
    s.close()


def reset_storm():
    for _ in range(50):
        s = connect(0.5)
        if s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()


def churn():
    for i in range(10):
        name = "churn-%d" % rng.randrange(50)
        request({"command": "start", "name": name, "type": "tcp", "target": "127.0.0.1:9",
                 "interval": "30s"})
        request({"command": "stop", "name": name})


actions = [silent, garbage, slowloris, nonreader, forged_agent, reset_storm, churn]
end = time.monotonic() + secs
while time.monotonic() < end:
    t0 = time.monotonic()
    for a in actions:
        a()
    request({"command": "status"})  # does the engine still answer?
    # Trickle a byte into the slow senders.
    for s in held[:50]:
        try:
            s.send(b" ")
        except OSError:
            pass
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
for s in held:
    s.close()
latencies.sort()
def pct(p):
    return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else None
stats["status_ms_p50"] = pct(0.5)
stats["status_ms_p99"] = pct(0.99)
stats["status_ms_max"] = round(latencies[-1] * 1000, 2) if latencies else None
print(json.dumps(stats))
