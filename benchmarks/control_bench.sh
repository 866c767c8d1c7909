#!/usr/bin/env bash
# Control-path benchmark (run by hand; not a test): one engine running TASKS tcp tasks at 1 s
# against a loopback listener, first with no control clients, then with WATCHERS watchers that
# keep up (a Python client reading all of them). Reports the engine's CPU in both phases, the
# difference per delivered result, and whether any watcher lost a result: the engine's own
# count of results it queued ("sent") and dropped for each watcher, against what each watcher
# received.
#   SONDE_BUILD_DIR=build-ctl TASKS=1000 WATCHERS=100 SECS=20 benchmarks/control_bench.sh
set -euo pipefail
BUILD=${SONDE_BUILD_DIR:-build}
TASKS=${TASKS:-1000}
WATCHERS=${WATCHERS:-100}
SECS=${SECS:-20}
source "$(dirname "$0")/lib.sh"
bench_listener 600
{
  echo '[defaults]'
  echo 'interval = "1s"'
  echo 'timeout = "500ms"'
  for i in $(seq 1 "$TASKS"); do printf '[[task]]\nname = "t%d"\ntype = "tcp"\ntarget = "%s"\n' "$i" "$target"; done
} >"$work/tasks.toml"

"$BUILD/bin/sonde" run "$work/tasks.toml" --control 127.0.0.1:0 --state-dir "$work/state" \
  >/dev/null 2>"$work/engine.err" &
engine=$!
pids+=($engine)
bench_control_port "$work/engine.err"
CTL=("$BUILD/bin/sondectl" --connect "127.0.0.1:$port")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$engine/stat"; }
results() { "${CTL[@]}" --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["total"])'; }
hz=$(getconf CLK_TCK)

measure() { # prints: cpu_seconds results
  local c0 r0 c1 r1
  c0=$(cpu_ticks); r0=$(results)
  sleep "$SECS"
  c1=$(cpu_ticks); r1=$(results)
  python3 -c "print(($c1 - $c0) / $hz, $r1 - $r0)"
}

sleep 3 # first runs are spread over the first second
read -r cpu_a res_a < <(measure)

# Watchers: one process, WATCHERS connections, all read as fast as results come.
cat >"$work/watch.py" <<'PY'
import json, selectors, socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
counts, drops, bufs = [0] * n, [0] * n, [b""] * n
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b'{"command":"watch"}\n')
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
print("watching", flush=True)
end = time.time() + secs
while time.time() < end:
    for key, _ in sel.select(0.2):
        i = key.data
        data = key.fileobj.recv(1 << 20)
        if not data:
            sel.unregister(key.fileobj)
            continue
        lines = (bufs[i] + data).split(b"\n")
        bufs[i] = lines.pop()
        for l in lines:
            if l.startswith(b'{"event":"result"'):
                counts[i] += 1
            elif l.startswith(b'{"event":"dropped"'):
                drops[i] += json.loads(l)["dropped"]
print(json.dumps({"received": counts, "dropped_events": drops}), flush=True)
PY
python3 "$work/watch.py" "$port" "$WATCHERS" $((SECS + 10)) >"$work/watch.out" &
wpid=$!
pids+=($wpid)
for _ in $(seq 100); do grep -q watching "$work/watch.out" && break; sleep 0.1; done
sleep 2
read -r cpu_b res_b < <(measure)
"${CTL[@]}" pause --all >/dev/null # stop producing; let queues drain
sleep 3
"${CTL[@]}" --json clients >"$work/clients.json"
wait $wpid
python3 - "$work/clients.json" "$work/watch.out" <<PY
import json, sys
clients = [c for c in json.load(open(sys.argv[1]))["clients"] if c["watching"]]
got = json.loads(open(sys.argv[2]).read().splitlines()[-1])
sent = sorted(c["sent"] for c in clients)
dropped = sum(c["dropped"] for c in clients)
received = sorted(got["received"])
lost = sum(s - r for s, r in zip(sent, received))
cpu_a, res_a, cpu_b, res_b, secs, w = $cpu_a, $res_a, $cpu_b, $res_b, $SECS, $WATCHERS
print(f"tasks={$TASKS} watchers={w} window={secs}s")
print(f"no watchers:   engine CPU {cpu_a:.2f}s for {res_a} results ({cpu_a / secs * 100:.1f}% of a core, {cpu_a / res_a * 1e6:.1f} us/result)")
print(f"{w} watchers:  engine CPU {cpu_b:.2f}s for {res_b} results ({cpu_b / secs * 100:.1f}% of a core, {cpu_b / res_b * 1e6:.1f} us/result)")
extra = cpu_b / res_b - cpu_a / res_a
print(f"control path:  {extra * 1e6:.1f} us per result for {w} watchers = {extra / w * 1e9:.0f} ns per delivered result")
print(f"watchers: {len(clients)} connected, results queued per watcher {sent[0]}..{sent[-1]}, "
      f"received {received[0]}..{received[-1]}, dropped by the engine {dropped}, "
      f"dropped events {sum(got['dropped_events'])}, lost in transit {lost}")
PY
"${CTL[@]}" shutdown >/dev/null
wait $engine
