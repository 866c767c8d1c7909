#!/usr/bin/env bash
# Alarms: what they cost a long-running engine, and how fast a notification leaves.
#
# 1. CPU per result with alarms on and off: `sonde run` with N ICMP tasks to 127.0.0.1 at 1 s
#    (count 1: the cheapest real probe, ~5.5 us on loopback), all ok, steady state (first runs
#    spread over the interval; WARM seconds skipped, then MEASURE seconds of the engine's
#    utime+stime from /proc divided by the results it completed). Off and on alternate ROUNDS
#    times on the same shared machine; the difference of the medians is the alarms' cost.
# 2. Decision to receipt: T tasks (odd, so that each task's turn alternates) at 200 ms against a
#    loopback server that answers "up" and "down" in turn, thresholds 1 and flap detection off, so every result fires or resolves;
#    a webhook notifier (group_wait 0s) posts to a Python receiver that notes its clock at
#    receipt. Latency = receipt - the event's "time" (when the deciding result was judged).
#
# Usage: benchmarks/alarms_bench.sh [BUILD_DIR]   (env N, WARM, MEASURE, ROUNDS, T, LAT_SECONDS)
# Loopback only; every loop is bounded in count and time.
set -euo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
cd "$(dirname "$0")"
source ./lib.sh
N=${N:-10000} WARM=${WARM:-20} MEASURE=${MEASURE:-40} ROUNDS=${ROUNDS:-2}
T=${T:-9} LAT_SECONDS=${LAT_SECONDS:-30}

gen_tasks() {  # $1: file, $2: "on" or "off"
  {
    echo "[engine]"
    echo "max_in_flight = 20000"
    echo "[control]"
    echo "listen = \"127.0.0.1:0\""
    echo "[alarms]"
    [[ $2 == off ]] && echo "enabled = false"
    echo "notify = [\"sink\"]"
    echo "[[notifier]]"
    echo "name = \"sink\""
    echo "type = \"exec\""
    echo "command = [\"/bin/true\"]"
    for i in $(seq "$N"); do
      printf '[[task]]\nname = "p%d"\ntype = "icmp"\ntarget = "127.0.0.1"\ncount = 1\ninterval = "1s"\ntimeout = "900ms"\n' "$i"
    done
  } >"$1"
}

cpu_per_result() {  # $1: on|off -> prints microseconds of engine CPU per result
  local f=$work/tasks-$1.toml
  gen_tasks "$f" "$1"
  "$BUILD/bin/sonde" run "$f" --quiet --state-dir "$work/state-$1" 2>"$work/err-$1" &
  local pid=$!
  pids+=($pid)
  bench_control_port "$work/err-$1"
  sleep "$WARM"
  local t0 r0 t1 r1 hz
  hz=$(getconf CLK_TCK)
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  r0=$(echo '{"command":"status"}' | timeout 5 python3 -c '
import json,socket,sys
s=socket.create_connection(("127.0.0.1",'"$port"')); s.sendall(sys.stdin.read().encode())
print(json.loads(s.makefile().readline())["results"]["total"])')
  sleep "$MEASURE"
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  r1=$(echo '{"command":"status"}' | timeout 5 python3 -c '
import json,socket,sys
s=socket.create_connection(("127.0.0.1",'"$port"')); s.sendall(sys.stdin.read().encode())
print(json.loads(s.makefile().readline())["results"]["total"])')
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 -c "print(f'{($t1-$t0)/$hz/($r1-$r0)*1e6:.2f}')"
}

if ((ROUNDS > 0)); then
echo "== CPU per result, $N ICMP tasks at 1 s, ${MEASURE}s per round =="
offs=() ons=()
for r in $(seq "$ROUNDS"); do
  off=$(cpu_per_result off)
  on=$(cpu_per_result on)
  offs+=("$off")
  ons+=("$on")
  echo "round $r: alarms off ${off} us/result, on ${on} us/result"
done
python3 - "${offs[*]}" "${ons[*]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
mo, mn = statistics.median(off), statistics.median(on)
print(f"median: off {mo:.2f} us, on {mn:.2f} us, difference {mn - mo:+.2f} us per result "
      f"({(mn / mo - 1) * 100:+.1f}%); goal: under +1 us")
PY
fi

echo "== decision to webhook receipt, $T flapping tasks at 200 ms, ${LAT_SECONDS}s =="
cat >"$work/recv.py" <<'PY'
import http.server, json, sys, time
out = open(sys.argv[2], "w")
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        now = time.time()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        j = json.loads(body)
        for e in j.get("events", [j]):
            out.write(f'{now} {e["time"]}\n')
        out.flush()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
cat >"$work/flap.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(512); print(s.getsockname()[1], flush=True)
i = 0
while True:
    c, _ = s.accept(); c.sendall(b"up\n" if i % 2 == 0 else b"down\n"); c.close(); i += 1
PY
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$work/recv.py" "$rport" "$work/lat.txt" &
pids+=($!)
python3 "$work/flap.py" >"$work/flap.port" &
pids+=($!)
for _ in $(seq 50); do [[ -s $work/flap.port ]] && break; sleep 0.1; done
fport=$(cat "$work/flap.port")
{
  echo "[control]"
  echo "listen = \"127.0.0.1:0\""
  echo "[alarms]"
  echo "failure_threshold = 1"
  echo "success_threshold = 1"
  echo "flap_window = 0"
  echo "notify = [\"hook\"]"
  echo "[[notifier]]"
  echo "name = \"hook\""
  echo "type = \"webhook\""
  echo "url = \"http://127.0.0.1:$rport/\""
  echo "group_wait = \"0s\""
  for i in $(seq "$T"); do
    printf '[[task]]\nname = "f%d"\ntype = "tcp"\ntarget = "127.0.0.1:%s"\nexpect = "up"\ninterval = "200ms"\ntimeout = "200ms"\n' "$i" "$fport"
  done
} >"$work/lat.toml"
"$BUILD/bin/sonde" run "$work/lat.toml" --quiet --state-dir "$work/state-lat" 2>"$work/err-lat" &
epid=$!
pids+=($epid)
sleep "$LAT_SECONDS"
kill "$epid"
wait "$epid" 2>/dev/null || true
python3 - "$work/lat.txt" <<'PY'
import datetime, statistics, sys
lat = []
for line in open(sys.argv[1]):
    recv, t = line.split()
    sent = datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    lat.append((float(recv) - sent) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
print(f"{len(lat)} notifications: p50 {q(50):.1f} ms, p90 {q(90):.1f} ms, p99 {q(99):.1f} ms, "
      f"max {lat[-1]:.1f} ms (event times have millisecond resolution); goal: p99 under 50 ms")
PY
