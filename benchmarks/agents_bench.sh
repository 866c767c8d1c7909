#!/usr/bin/env bash
# Central-side agents benchmark (run by hand; not a test): one `sonde run` central with no tasks
# of its own accepts AGENTS simulated agents (one Python process, asyncio) that each say
# agent_hello and then send one report of one `system`-like result every INTERVAL seconds for
# SECS seconds, waiting for each ack. Reports the central's CPU (utime+stime from /proc) over
# the steady phase, results stored, the ack latency (median, p99, max) and the store's size.
#   SONDE_BUILD_DIR=build-central AGENTS=1000 INTERVAL=5 SECS=30 benchmarks/agents_bench.sh
set -euo pipefail
BUILD=${SONDE_BUILD_DIR:-build}
AGENTS=${AGENTS:-1000}
INTERVAL=${INTERVAL:-5}
SECS=${SECS:-30}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
ulimit -n "$((AGENTS * 2 + 256))" 2>/dev/null || true

printf '[control]\nmax_clients = %d\n' "$((AGENTS + 64))" >"$work/central.toml"
"$BUILD/bin/sonde" run "$work/central.toml" --control 127.0.0.1:0 --state-dir "$work/state" \
  >/dev/null 2>"$work/central.err" &
central=$!
pids+=($central)
port=
for _ in $(seq 100); do
  port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$work/central.err" 2>/dev/null | grep -oE '[0-9]+$' || true)
  [[ -n $port ]] && break
  sleep 0.05
done
[[ -n $port ]] || { cat "$work/central.err"; exit 1; }

python3 - "$port" "$AGENTS" "$INTERVAL" "$SECS" "$central" <<'PY'
import asyncio, json, os, random, statistics, sys, time

port, n, interval, secs, pid = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                float(sys.argv[4]), int(sys.argv[5]))
tick = os.sysconf("SC_CLK_TCK")

def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

lat, stored, errors = [], 0, 0
metrics = {"cpu.total": 3.1, "cpu.0": 2.0, "cpu.1": 4.0, "mem.used": 1.2e9, "mem.total": 1.6e10,
           "load.1": 0.5, "load.5": 0.4, "load.15": 0.3}

async def agent(i, start_at, stop_at):
    global stored, errors
    await asyncio.sleep(max(0, start_at - time.monotonic()))
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    req = 0
    async def call(obj):
        nonlocal req
        req += 1
        obj["seq"] = req
        w.write((json.dumps(obj) + "\n").encode())
        t = time.monotonic()
        while True:
            line = json.loads(await r.readline())
            if "ok" in line:
                return line, time.monotonic() - t
    name = f"sim-{i:04d}"
    rep, _ = await call({"command": "agent_hello", "agent": name, "queue_id": f"q{i}",
                         "interval_ms": int(interval * 1000), "facts": {"os": "sim"}})
    seq = rep["last_seq"]
    nxt = time.monotonic() + random.random() * interval
    while True:
        await asyncio.sleep(max(0, nxt - time.monotonic()))
        if time.monotonic() >= stop_at:
            break
        seq += 1
        res = {"seq": seq, "time": "2026-11-21T02:40:56.123456Z", "task": "system", "type": "system",
               "target": "localhost", "status": "ok", "reason": None, "latency_ms": 250.0,
               "message": "cpu 3.1% (2 cores)", "metrics": metrics}
        rep, dt = await call({"command": "report", "agent": name, "queue_id": f"q{i}",
                              "dropped": 0, "queued": 1, "results": [res]})
        if rep.get("ok") and rep.get("ack") == seq:
            stored += 1
            lat.append(dt)
        else:
            errors += 1
        nxt += interval
    w.close()

async def main():
    t0 = time.monotonic()
    ramp = min(5.0, secs / 4)
    stop_at = t0 + ramp + secs
    tasks = [asyncio.create_task(agent(i, t0 + ramp * i / n, stop_at)) for i in range(n)]
    await asyncio.sleep(ramp + 1)
    c0, w0 = cpu(), time.monotonic()
    s0 = stored
    await asyncio.sleep(max(1, stop_at - time.monotonic() - 0.5))
    c1, w1 = cpu(), time.monotonic()
    s1 = stored
    await asyncio.gather(*tasks, return_exceptions=True)
    q = sorted(lat)
    print(f"agents {n}, interval {interval}s, steady phase {w1 - w0:.1f}s: central CPU "
          f"{100 * (c1 - c0) / (w1 - w0):.2f}% of one core, {s1 - s0} reports stored "
          f"({(s1 - s0) / (w1 - w0):.0f}/s), {1e6 * (c1 - c0) / max(1, s1 - s0):.0f} us CPU per report")
    print(f"reports acked {stored}, errors {errors}; ack latency median "
          f"{1000 * statistics.median(q):.2f} ms, p99 {1000 * q[int(len(q) * 0.99)]:.2f} ms, "
          f"max {1000 * q[-1]:.2f} ms")

asyncio.run(main())
PY
echo "central RSS: $(grep VmRSS /proc/$central/status | awk '{print $2, $3}'); store: $(du -shc "$work/state/history.db"* | tail -1 | cut -f1) (history.db with its WAL)"
"$BUILD/bin/sondectl" --connect "127.0.0.1:$port" agents | head -3
