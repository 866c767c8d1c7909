#!/usr/bin/env bash
# The history store (engine/src/history/store.hpp) against its goals. Run by hand; not a
# test. Five parts, chosen with PARTS (comma-separated; default all):
#
# ingest  sonde_history_bench feeds store::add_result at RATE results/s (20,000) for INGEST_SECS
#         (20) over INGEST_TASKS tasks (2,000), ICMP-like results, then sync(): achieved rate,
#         drops (goal: 0), the writer thread's CPU per result, commit duration p50/p99/max,
#         bytes on disk; and the floor: the same raw rows inserted into a bare table.
# jitter  `sonde run` with JIT_TASKS tcp tasks (1,000) at 1 s against a loopback listener,
#         --format json to a file (on JIT_OUT, default /dev/shm: see below), [history]
#         enabled = false and true in turn, JIT_ROUNDS (2) runs of JIT_SECS (30) each;
#         then both again while a disk hog writes to the same filesystem. Jitter: per task, the
#         deviation of each start ("time") from its first start + k * 1 s, k >= 1 (goal: p99
#         unchanged within 0.5 ms with the store on).
# size    one simulated day of DAY_TASKS tasks (100) at DAY_INTERVAL s (10) through the store,
#         then SQLite's dbstat: bytes per task per day of raw, minute, hour and day rows
#         (goal: under 50 KB per task per day after rollup), and at default retention.
# uptime  UP_TASKS tasks (1,000), one result each per UP_SPACING s (900) over UP_DAYS days (31)
#         and one per minute over the last 26 hours, through the store with a clock that follows
#         the data (retention expires raw and minute rows as it would); then query_uptime over
#         all tasks, {"30d"} and the five default windows, UP_RUNS (10) times: median and max
#         (goal: under 100 ms). UP_DB_DIR keeps the database between runs (generation is the
#         slow part).
# agents  a central (`sonde run` with no tasks) and AGENTS simulated agents (1,000; one Python
#         asyncio process) each sending one report every AG_INTERVAL s (5) for AG_SECS (30),
#         waiting for each ack: ack latency (send of `report` to its `ack`) median/p99/max,
#         without and then with the disk hog (goal: p99 under 50 ms under disk load).
#
# The disk hog (HOG=both|direct|buffered, default both): Python writers, 1 MiB blocks over one
# HOG_MB (256) MiB file each in the scratch directory (the state directories' filesystem;
# choose it with TMPDIR), rewritten until stopped or their time limit: "direct" with O_DIRECT,
# "buffered" through the page cache with an fdatasync per pass. The files are deleted at the end.
# The hog also takes CPU (on the 2-core build host: direct ~25 %, buffered ~50 % of a core,
# plus the kernel's writeback), so "under disk load" is under some CPU load too, the same for
# the runs with the store off and on.
#
# Usage: benchmarks/history_bench.sh [BUILD_DIR]     (env as above; about 8 minutes in all)
# Loopback only; every loop is bounded in count and time.
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
cd "$(dirname "$0")"
source ./lib.sh
PARTS=${PARTS:-ingest,jitter,size,uptime,agents}
RATE=${RATE:-20000} INGEST_SECS=${INGEST_SECS:-20} INGEST_TASKS=${INGEST_TASKS:-2000}
JIT_TASKS=${JIT_TASKS:-1000} JIT_SECS=${JIT_SECS:-30} JIT_ROUNDS=${JIT_ROUNDS:-2}
DAY_TASKS=${DAY_TASKS:-100} DAY_INTERVAL=${DAY_INTERVAL:-10}
UP_TASKS=${UP_TASKS:-1000} UP_DAYS=${UP_DAYS:-31} UP_SPACING=${UP_SPACING:-900}
UP_RUNS=${UP_RUNS:-10} UP_DB_DIR=${UP_DB_DIR:-}
AGENTS=${AGENTS:-1000} AG_INTERVAL=${AG_INTERVAL:-5} AG_SECS=${AG_SECS:-30}
HOG=${HOG:-both} HOG_MB=${HOG_MB:-256}
((JIT_SECS <= 300 && JIT_ROUNDS <= 5 && AG_SECS <= 300 && INGEST_SECS <= 300)) || {
  echo "each phase is limited to 300 s" >&2
  exit 2
}
want() { [[ ",$PARTS," == *",$1,"* ]]; }
bench=$BUILD/bin/sonde_history_bench
echo "history_bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), scratch $work ($(df -hT "$work" | awk 'NR==2 {print $2" on "$1}'))"

# ---- the disk hog -------------------------------------------------------------------------------
cat >"$work/hog.py" <<'PY'
import mmap, os, signal, sys, time
path, secs, mb, mode = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
buf.write(b"\xa5" * (1 << 20))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_DIRECT if mode == "direct" else 0), 0o600)
t0 = time.monotonic()
end, n = t0 + secs, 0
try:
    while time.monotonic() < end:
        os.lseek(fd, 0, 0)
        for _ in range(mb):
            os.write(fd, buf)
            n += 1
            if time.monotonic() >= end:
                break
        if mode != "direct":
            os.fdatasync(fd)
finally:
    os.close(fd)
    os.unlink(path)
    dt = time.monotonic() - t0
    print(f"  (disk hog {mode}: {n} MiB written in {dt:.0f} s, {n / dt:.0f} MiB/s)", file=sys.stderr)
PY
hog_pids=()
hog_start() {  # $1: time limit in seconds
  local modes=$HOG
  [[ $HOG == both ]] && modes="direct buffered"
  for m in $modes; do
    python3 "$work/hog.py" "$work/hog-$m.bin" "$1" "$HOG_MB" "$m" &
    hog_pids+=($!)
    pids+=($!)
  done
  sleep 2  # let it reach full speed
}
hog_stop() {
  for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${hog_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  hog_pids=()
}

# ---- 1. ingest ----------------------------------------------------------------------------------
if want ingest; then
  echo "== 1. ingest: $RATE results/s for ${INGEST_SECS}s over $INGEST_TASKS tasks (goal: sustained, 0 dropped) =="
  timeout $((INGEST_SECS + 120)) "$bench" ingest "$work/ingest" "$RATE" "$INGEST_SECS" "$INGEST_TASKS" || echo "ingest: FAILED (exit $?)"
  rm -rf "$work/ingest"
fi

# ---- 2. start-time jitter, store off and on, quiet disk and hogged disk ---------------------------
jitter_run() {  # $1: label, $2: true|false (history enabled)
  local tag=$1 f=$work/jit-$1.toml
  rm -f "$work/port"
  bench_listener $((JIT_SECS + 30))
  {
    echo "[engine]"
    echo "max_in_flight = 4096"
    echo "[control]"
    echo "listen = \"127.0.0.1:0\""
    echo "[history]"
    echo "enabled = $2"
    for i in $(seq "$JIT_TASKS"); do
      printf '[[task]]\nname = "t%d"\ntype = "tcp"\ntarget = "%s"\ninterval = "1s"\ntimeout = "900ms"\n' "$i" "$target"
    done
  } >"$f"
  "$BUILD/bin/sonde" run "$f" --format json --state-dir "$work/state-$tag" >"$jit_out/jit-$tag.json" 2>"$work/jit-$tag.err" &
  local pid=$!
  pids+=($pid)
  bench_control_port "$work/jit-$tag.err"
  sleep "$JIT_SECS"
  local hz cpu hist
  hz=$(getconf CLK_TCK)
  cpu=$(awk -v hz="$hz" '{print ($14+$15)/hz}' "/proc/$pid/stat")
  hist=$(timeout 10 "$BUILD/bin/sondectl" --connect "127.0.0.1:$port" --json status 2>/dev/null |
    python3 -c '
import json, sys
h = json.loads(sys.stdin.readline()).get("history", {})
print("history %s: written %s, dropped %s, commits %s, max commit %.1f ms, max batch %s" % (
    h.get("state"), h.get("written"), h.get("dropped"), h.get("commits"),
    h.get("max_commit_ms", 0), h.get("max_batch")))' || echo "history status unavailable")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  grep -h "history:" "$work/jit-$tag.err" | head -5 || true
  python3 - "$jit_out/jit-$tag.json" "$tag" "$cpu" "$hist" "$work/dev-$tag.txt" <<'PY'
import collections, datetime, json, sys
path, tag, cpu, hist, devs = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
by_task = collections.defaultdict(list)
n = 0
for line in open(path):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    t = datetime.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    by_task[r["task"]].append(t)
    n += 1
dev, missed = [], 0
for ts in by_task.values():
    ts.sort()
    t0 = ts[0]
    last_k = 0
    for t in ts[1:]:
        k = round(t - t0)  # interval 1 s
        missed += max(0, k - last_k - 1)
        last_k = k
        dev.append(abs(t - (t0 + k)) * 1000)
dev.sort()
q = lambda p: dev[min(len(dev) - 1, int(p / 100 * len(dev)))]
print(f"  {tag:<14} {len(by_task)} tasks, {n} results, {missed} missed; jitter p50 {q(50):.3f} ms, "
      f"p99 {q(99):.3f} ms, max {dev[-1]:.2f} ms; engine CPU {cpu:.2f} s over the run ({1e6 * cpu / n:.0f} us/result, start included); {hist}")
with open(devs, "a") as f:
    f.write("\n".join(f"{d:.4f}" for d in dev) + "\n")
PY
  rm -rf "$work/state-$tag" "$jit_out/jit-$tag.json"
}
if want jitter; then
  # The engine's JSON output goes to tmpfs (JIT_OUT), not to the hogged disk: its own buffered
  # writes would be throttled with the hog's dirty pages, store or no store.
  jit_out=${JIT_OUT:-/dev/shm}
  [[ -d $jit_out && -w $jit_out ]] || jit_out=$work
  jit_out=$(mktemp -d "$jit_out/sonde-hbench.XXXXXX")
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work" "$jit_out"' EXIT
  echo "== 2. start-time jitter: $JIT_TASKS tcp tasks at 1 s, $JIT_ROUNDS x ${JIT_SECS}s per configuration (goal: p99 with the store within 0.5 ms of without) =="
  echo "  (output in $jit_out, $(df -T "$jit_out" | awk 'NR==2 {print $2}'); state directories in $work)"
  for r in $(seq "$JIT_ROUNDS"); do
    jitter_run off false
    jitter_run on true
  done
  hog_start $((JIT_ROUNDS * 2 * (JIT_SECS + 15) + 20))
  for r in $(seq "$JIT_ROUNDS"); do
    jitter_run off+disk false
    jitter_run on+disk true
  done
  hog_stop
  rm -rf "$jit_out"
  python3 - "$work" <<'PY'
import sys
q = {}
for tag in ("off", "on", "off+disk", "on+disk"):
    d = sorted(float(x) for x in open(f"{sys.argv[1]}/dev-{tag}.txt") if x.strip())
    p = lambda x: d[min(len(d) - 1, int(x / 100 * len(d)))]
    q[tag] = p(99)
    print(f"  all runs {tag:<9} {len(d)} starts: jitter p50 {p(50):.3f} ms, p99 {p(99):.3f} ms, max {d[-1]:.2f} ms")
    print(f"RESULT jitter {tag} p50={p(50):.3f} p99={p(99):.3f} max={d[-1]:.2f} starts={len(d)}")
for disk in ("", "+disk"):
    delta = q["on" + disk] - q["off" + disk]
    print(f"  p99 with the store minus without{' (disk hog)' if disk else ''}: {delta:+.3f} ms "
          f"(goal: at most +0.5 ms)")
PY
fi

# ---- 3. bytes per task per day --------------------------------------------------------------------
if want size; then
  echo "== 3. size: one day of $DAY_TASKS tasks at ${DAY_INTERVAL}s (goal: under 50 KB per task per day after rollup) =="
  timeout 300 "$bench" day "$work/day" "$DAY_TASKS" "$DAY_INTERVAL" || echo "size: FAILED (exit $?)"
  rm -rf "$work/day"
fi

# ---- 4. 30-day uptime query over 1,000 tasks --------------------------------------------------------
if want uptime; then
  echo "== 4. uptime query: $UP_TASKS tasks, $UP_DAYS days (goal: 30 days over 1,000 tasks under 100 ms) =="
  dir=${UP_DB_DIR:-$work/uptime}
  timeout 600 "$bench" uptime "$dir" "$UP_TASKS" "$UP_DAYS" "$UP_SPACING" "$UP_RUNS" || echo "uptime: FAILED (exit $?)"
  [[ -n $UP_DB_DIR ]] || rm -rf "$work/uptime"
fi

# ---- 5. the central's ack latency, quiet and hogged disk --------------------------------------------
agents_run() {  # $1: label
  local tag=$1
  printf '[control]\nmax_clients = %d\n' "$((AGENTS + 64))" >"$work/central.toml"
  "$BUILD/bin/sonde" run "$work/central.toml" --control 127.0.0.1:0 --state-dir "$work/central-$tag" \
    >/dev/null 2>"$work/central-$tag.err" &
  local central=$!
  pids+=($central)
  bench_control_port "$work/central-$tag.err"
  timeout $((AG_SECS + 90)) python3 - "$port" "$AGENTS" "$AG_INTERVAL" "$AG_SECS" "$tag" <<'PY' || echo "  agents: FAILED"
import asyncio, json, random, sys, time

port, n, interval, secs, tag = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                float(sys.argv[4]), sys.argv[5])
lat, errors = [], 0
metrics = {"cpu.total": 3.1, "cpu.0": 2.0, "cpu.1": 4.0, "mem.used": 1.2e9, "mem.total": 1.6e10,
           "load.1": 0.5, "load.5": 0.4, "load.15": 0.3}

async def agent(i, start_at, stop_at):
    global errors
    await asyncio.sleep(max(0, start_at - time.monotonic()))
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    req = 0
    async def call(obj):
        nonlocal req
        req += 1
        obj["seq"] = req
        t = time.monotonic()
        w.write((json.dumps(obj) + "\n").encode())
        while True:
            line = json.loads(await r.readline())
            if "ok" in line:
                return line, time.monotonic() - t
    name = f"sim-{i:04d}"
    rep, _ = await call({"command": "agent_hello", "agent": name, "queue_id": f"q{i}",
                         "next_seq": 1, "interval_ms": int(interval * 1000),
                         "facts": {"os": "sim"}})
    seq = rep["last_seq"]
    nxt = time.monotonic() + random.random() * interval
    while True:
        await asyncio.sleep(max(0, nxt - time.monotonic()))
        if time.monotonic() >= stop_at:
            break
        seq += 1
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        res = {"seq": seq, "time": stamp, "task": "system", "type": "system",
               "target": "localhost", "status": "ok", "reason": None, "latency_ms": 250.0,
               "message": "cpu 3.1% (2 cores)", "metrics": metrics}
        rep, dt = await call({"command": "report", "agent": name, "queue_id": f"q{i}",
                              "next_seq": seq + 1, "dropped": 0, "queued": 1,
                              "results": [res]})
        if rep.get("ok") and rep.get("ack") == seq:
            if time.monotonic() >= measure_from:
                lat.append(dt)
        else:
            errors += 1
            if errors <= 3:
                print(f"  report refused: {rep}", file=sys.stderr)
        nxt += interval
    w.close()

async def main():
    global measure_from
    t0 = time.monotonic()
    ramp = min(5.0, secs / 4)
    measure_from = t0 + ramp + 1  # after every agent has said hello
    stop_at = t0 + ramp + secs
    tasks = [asyncio.create_task(agent(i, t0 + ramp * i / n, stop_at)) for i in range(n)]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [d for d in done if isinstance(d, BaseException)]
    if failed:
        print(f"  {len(failed)} agents failed, e.g. {failed[0]!r}", file=sys.stderr)
    failed = len(failed)
    q = sorted(lat) or [float("nan")]
    p = lambda x: 1000 * q[min(len(q) - 1, int(x / 100 * len(q)))]
    print(f"  {tag:<6} {n} agents, one report each per {interval:g}s, {len(q)} acks measured "
          f"over {secs - 1:.0f}s, errors {errors}, agents failed {failed}: ack latency median "
          f"{p(50):.2f} ms, p90 {p(90):.2f} ms, p99 {p(99):.2f} ms, max {1000 * q[-1]:.2f} ms")
    print(f"RESULT agents {tag} p50={p(50):.2f} p99={p(99):.2f} max={1000 * q[-1]:.2f} acks={len(q)} errors={errors}")

measure_from = 0
asyncio.run(main())
PY
  kill "$central"
  wait "$central" 2>/dev/null || true
  echo "  (central state: $(du -sh "$work/central-$tag" | cut -f1); history.db $(ls -l "$work/central-$tag/history.db" 2>/dev/null | awk '{print $5}') bytes)"
  rm -rf "$work/central-$tag"
}
if want agents; then
  echo "== 5. the central's ack latency: $AGENTS agents, a report each per ${AG_INTERVAL}s, ${AG_SECS}s per run (goal: p99 under 50 ms under disk load) =="
  ulimit -n "$((AGENTS * 2 + 256))" 2>/dev/null || true
  agents_run quiet
  hog_start $((AG_SECS + 40))
  agents_run disk
  hog_stop
fi
echo "history_bench: done, load average $(cut -d' ' -f1-3 /proc/loadavg)"
