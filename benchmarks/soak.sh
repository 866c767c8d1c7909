#!/usr/bin/env bash
# Soak (run by hand; not a test): one engine runs TASKS tcp tasks at 10 s plus a 1 s "jitter"
# task against loopback listeners, while benchmarks/soak_clients.py attacks its control port
# for the middle of the run (silent connections, garbage, deep and duplicate-key JSON, NUL,
# slowloris, watchers that never read, forged agents, reset storms, start/stop churn).
# Every 10 s it samples the engine's RSS and open descriptors; the 1 s task's start times give
# its jitter (distance from its grid). Reported per phase: before, during and after the attack.
#   SONDE_BUILD_DIR=build SECS=1800 benchmarks/soak.sh        # 30 minutes, as in README
#   SECS=120 benchmarks/soak.sh                               # a quick look
# Only loopback is used; every loop is bounded by SECS.
set -euo pipefail
BUILD=${SONDE_BUILD_DIR:-build}
TASKS=${TASKS:-1000}
SECS=${SECS:-1800}
QUIET=$((SECS / 10 > 120 ? 120 : SECS / 10)) # before and after the attack
ATTACK=$((SECS - 2 * QUIET))
TOKEN=${TOKEN:-soak-token-0123456789abcdef}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

"$BUILD/bin/sonde_test_listen" $((SECS + 60)) >"$work/port" &
pids+=($!)
for _ in $(seq 50); do [[ -s $work/port ]] && break; sleep 0.1; done
target=127.0.0.1:$(cat "$work/port")
{
  printf '[control]\nlisten = "127.0.0.1:0"\ntoken = "%s"\n' "$TOKEN"
  printf '[defaults]\ninterval = "10s"\ntimeout = "2s"\n'
  printf '[[task]]\nname = "jitter"\ntype = "tcp"\ntarget = "%s"\ninterval = "1s"\ntimeout = "500ms"\n' "$target"
  for i in $(seq 1 "$TASKS"); do printf '[[task]]\nname = "t%d"\ntype = "tcp"\ntarget = "%s"\n' "$i" "$target"; done
} >"$work/tasks.toml"

"$BUILD/bin/sonde" run "$work/tasks.toml" --format json --state-dir "$work/state" \
  >"$work/results.jsonl" 2>"$work/engine.err" &
engine=$!
pids+=($engine)
for _ in $(seq 100); do
  port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$work/engine.err" | grep -oE '[0-9]+$' || true)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { echo "engine did not start: $(cat "$work/engine.err")"; exit 1; }
start=$(date +%s.%N)
echo "soak: engine pid $engine, control port $port, $TASKS tasks; ${QUIET}s quiet, ${ATTACK}s attack, ${QUIET}s quiet" >&2

sample() { # phase: one line "t phase rss_kb fds"
  local t rss fds
  t=$(python3 -c "import time; print(round(time.time() - $start, 1))")
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$engine/status")
  fds=$(ls "/proc/$engine/fd" | wc -l)
  echo "$t $1 $rss $fds" >>"$work/samples"
}
phase_run() { # phase seconds
  local end=$(($(date +%s) + $2))
  while (($(date +%s) < end)); do
    sample "$1"
    sleep 10
  done
}
phase_run before "$QUIET"
echo "$(date +%s.%N) attack-start" >>"$work/marks"
python3 "$here/soak_clients.py" "$port" "$ATTACK" "$TOKEN" >"$work/clients.json" &
clients=$!
pids+=($clients)
phase_run during "$ATTACK"
wait "$clients" || true
echo "$(date +%s.%N) attack-end" >>"$work/marks"
phase_run after "$QUIET"
sample end
kill -TERM "$engine"
wait "$engine" || true

python3 - "$work" "$start" <<'PY'
import json, sys, datetime, statistics
work, start = sys.argv[1], float(sys.argv[2])
marks = [float(l.split()[0]) for l in open(work + "/marks")]
a0, a1 = marks[0], marks[1]
times = []
for line in open(work + "/results.jsonl"):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("task") == "jitter":
        t = datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
        times.append(t)
times.sort()
# Distance of each start from the task's 1 s grid (anchored at its median offset).
offs = [(t - times[0]) % 1.0 for t in times]
offs = [o - 1.0 if o > 0.5 else o for o in offs]
base = statistics.median(offs)
def phase(t):
    return "before" if t < a0 else "during" if t < a1 else "after"
rows = {"before": [], "during": [], "after": []}
for t, o in zip(times, offs):
    rows[phase(t)].append(abs(o - base) * 1000)
samples = [l.split() for l in open(work + "/samples")]
print("| phase | jitter runs | jitter p50 ms | p99 ms | max ms | RSS MB (min-max) | fds (min-max) |")
print("|---|---|---|---|---|---|---|")
for ph in ("before", "during", "after"):
    j = sorted(rows[ph])
    s = [x for x in samples if x[1] == ph or (ph == "after" and x[1] == "end")]
    rss = [int(x[2]) / 1024 for x in s]
    fds = [int(x[3]) for x in s]
    if not j:
        continue
    pick = lambda p: j[min(len(j) - 1, int(p * len(j)))]
    print("| %s | %d | %.2f | %.2f | %.2f | %.1f-%.1f | %d-%d |" % (
        ph, len(j), pick(0.5), pick(0.99), j[-1], min(rss), max(rss), min(fds), max(fds)))
expected = (times[-1] - times[0]) + 1 if times else 0
print()
print("jitter task: %d results over %.0f s (%.1f%% of its grid)" % (len(times), expected, 100 * len(times) / max(expected, 1)))
print("hostile clients:", open(work + "/clients.json").read().strip())
PY
grep -E "warning|error" "$work/engine.err" 2>/dev/null | sort | uniq -c | sort -rn | head -10 || true
