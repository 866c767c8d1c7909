#!/usr/bin/env bash
# The central side of agents, black-box: a real `sonde run` central and real `sonde agent`
# processes on loopback. Two agents show in `sondectl agents`; a stopped agent turns critical
# within three intervals and recovers; `agent NAME info` answers from the agent; the central
# is SIGKILLed and restarted mid-stream and every result is stored exactly once and in order
# in its history store (history.db, read with Python's sqlite3);
# `agent NAME disconnect` makes the agent exit 0. Every wait is bounded.
set -uo pipefail
: "${SONDE_BUILD_DIR:?}" "${SONDE_SOURCE_DIR:?}"
S=$SONDE_BUILD_DIR/bin/sonde
CTL=$SONDE_BUILD_DIR/bin/sondectl
source "$SONDE_SOURCE_DIR/tests/support/cli.sh"

# An empty task file: the central runs no probes of its own.
: >"$work/central.toml"
state=$work/central-state

# start_central NAME ADDRESS: sets $port and $central_pid.
start_central() {
  start_engine "$1" "$work/central.toml" --control "$2" --state-dir "$state" --format json
  local rc=$?
  central_pid=$engine_pid
  return $rc
}

# start_agent NAME: sets agent_pid_NAME.
start_agent() {
  "$S" agent --server "127.0.0.1:$port" --name "$1" --interval 1s --state-dir "$work/agent-$1" \
    >"$work/agent-$1.out" 2>"$work/agent-$1.err" &
  local p=$!
  pids+=($p)
  printf -v "agent_pid_$1" '%s' "$p"
}

# agent_field NAME FIELD: one field of `sondectl agents --json` for that agent.
agent_field() {
  "$CTL" --connect "127.0.0.1:$port" --json agents 2>/dev/null |
    python3 -c "import json,sys
r=json.load(sys.stdin)
print(next((str(a.get('$2')) for a in r['agents'] if a['agent']=='$1'), ''))"
}

# wait_state NAME STATE SECONDS: poll every 0.1 s; prints the seconds waited.
wait_state() {
  local t0 end now
  t0=$(date +%s.%N)
  end=$(($(date +%s) + $3))
  while (($(date +%s) <= end)); do
    if [[ $(agent_field "$1" state) == "$2" ]]; then
      now=$(date +%s.%N)
      waited=$(python3 -c "print(f'{$now-$t0:.1f}')")
      return 0
    fi
    sleep 0.1
  done
  return 1
}

start_central c1 127.0.0.1:0 || exit 1
C=("$CTL" --connect "127.0.0.1:$port")
start_agent a
start_agent b

# --- both agents show, with their metrics ----------------------------------------------------
if wait_state a ok 15 && wait_state b ok 15; then ok "agents a and b are ok"; else bad "agents not ok: $("${C[@]}" agents 2>&1)"; fi
for _ in $(seq 50); do
  [[ $(agent_field b cpu) != None && -n $(agent_field b cpu) ]] && break
  sleep 0.2
done
out=$("${C[@]}" agents 2>&1)
echo "$out"
contains "table header" 'AGENT +ADDRESS +LAST SEEN +CPU +PER CORE % +MEMORY +LOAD 1/5/15 +STATE'
contains "row a" '^a +127\.0\.0\.1:[0-9]+ .* OK$'
contains "row b with cpu and memory" '^b +127\.0\.0\.1:[0-9]+ +[0-9.]+s ago +[0-9.]+% .*iB / .*iB .* OK$'
out=$("${C[@]}" agents --watch --count 2 2>&1)
if [[ $(grep -c '^AGENT' <<<"$out") -eq 2 ]]; then ok "agents --watch refreshes"; else bad "agents --watch: $out"; fi

# --- info from the agent ---------------------------------------------------------------------
out=$("${C[@]}" agent a info 2>&1)
echo "$out"
contains "info NAME" '^NAME +a$'
contains "info IP" '^IP +127\.0\.0\.1$'
contains "info OS" '^OS +[^-]'
contains "info CPU" '^CPU +.*CPUs\)'
contains "info RAM" '^RAM +[0-9.]+ [KMGT]iB'
out=$("${C[@]}" agent nobody info 2>&1)
rc=$?
[[ $rc -eq 1 ]] && ok "info on an unknown agent: exit 1" || bad "unknown agent: exit $rc: $out"

# --- dead-man switch: b stops, turns critical within three intervals, recovers ----------------
kill -STOP "$agent_pid_b"
if wait_state b critical 8; then
  ok "b critical ${waited}s after SIGSTOP (interval 1s)"
  python3 -c "import sys; sys.exit(0 if $waited <= 4.5 else 1)" && ok "within 3 intervals + sweep" ||
    bad "b took ${waited}s to turn critical"
else
  bad "b never turned critical: $("${C[@]}" agents 2>&1)"
fi
if grep -q '"task":"agent:b".*"status":"critical".*silent for' "$work/c1.out"; then ok "critical result delivered to the sinks"; else bad "no agent:b critical result in the central's output"; fi
kill -CONT "$agent_pid_b"
if wait_state b ok 8; then ok "b recovers ${waited}s after SIGCONT"; else bad "b did not recover"; fi
if grep -q '"task":"b/system"' "$work/c1.out"; then ok "agent results delivered as b/system"; else bad "no b/system results in the central's output"; fi

# --- the central is killed and restarted mid-stream: exactly once, in order ------------------
sleep 1.5
kill -KILL "$central_pid"
wait "$central_pid" 2>/dev/null
sleep 2.5
start_central c2 "127.0.0.1:$port" || exit 1
# Wait until both agents have delivered to the new central (their backoff is at most a few s).
for _ in $(seq 150); do
  sa=$(agent_field a stored)
  sb=$(agent_field b stored)
  [[ ${sa:-0} =~ ^[1-9] && ${sb:-0} =~ ^[1-9] ]] && break
  sleep 0.1
done
[[ ${sa:-0} =~ ^[1-9] && ${sb:-0} =~ ^[1-9] ]] && ok "both agents deliver to the restarted central" || bad "after restart: stored a=$sa b=$sb"
sleep 1.5
# Stop the agents (they deliver, then exit 0), then read the store.
kill -TERM "$agent_pid_a" "$agent_pid_b"
for p in "$agent_pid_a" "$agent_pid_b"; do
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
for n in a b; do
  out=$(python3 - "$state/history.db" "$n" "$work/agent-$n.err" <<'PY'
import re, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
name = sys.argv[2]
seqs = [r[0] for r in db.execute(
    "SELECT result.seq FROM result JOIN task ON result.task = task.id "
    "WHERE task.name = ? ORDER BY result.t", (name + "/system",))]
err = open(sys.argv[3]).read()
m = re.findall(r"stopped; (\d+) results? queued", err)
queued = int(m[-1]) if m else -1
ok = seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 8
print(("OK" if ok else "BAD"), len(seqs), "stored; still queued at exit:", queued, seqs[:3], seqs[-3:])
PY
  )
  if [[ $out == OK* ]]; then ok "agent $n: seq 1..N stored exactly once, in order ($out)"; else bad "agent $n store: $out"; fi
done
[[ ! -e $state/agents/a.jsonl ]] && ok "no per-agent file is written" || bad "the central wrote $state/agents/a.jsonl"
n=$(python3 -c "import sqlite3,sys
db = sqlite3.connect('file:$state/history.db?mode=ro', uri=True)
print(db.execute(\"SELECT count(*) FROM result JOIN task ON result.task = task.id WHERE task.name = 'agent:b' AND task.type = 'agent' AND result.status = 2\").fetchone()[0])")
[[ ${n:-0} -ge 1 ]] && ok "the dead-man record of b is in history ($n)" || bad "agent:b critical records in history: '$n'"

# --- disconnect: the agent exits 0 and stays away --------------------------------------------
start_agent a
wait_state a ok 10 || bad "a did not come back"
out=$("${C[@]}" agent a disconnect --reason "test over" 2>&1)
contains "disconnect reply" 'agent a told to disconnect'
rc=
for _ in $(seq 100); do
  if ! kill -0 "$agent_pid_a" 2>/dev/null; then
    wait "$agent_pid_a"
    rc=$?
    break
  fi
  sleep 0.1
done
[[ $rc == 0 ]] && ok "agent a exited 0 after disconnect" || bad "agent a after disconnect: rc '$rc': $(tail -3 "$work/agent-a.err")"
grep -q 'asked this agent to disconnect: test over' "$work/agent-a.err" && ok "agent says why" || bad "agent stderr: $(tail -3 "$work/agent-a.err")"
[[ $(agent_field a state) == disconnected ]] && ok "a shows disconnected" || bad "a state $(agent_field a state)"


# --- identity (issue 10 #3): a listed agent must present its key; forgers are refused --------
key=0123456789abcdef0123456789abcdef
printf '# agent keys\nk1 %s\n' "$key" >"$state/agent-keys"
chmod 600 "$state/agent-keys"
printf '%s\n' "$key" >"$work/k1.key"
# raw_agent NAME FACTS_JSON [KEY]: one agent_hello (and, if accepted, a forged report) on a raw
# connection; prints the replies' errors or "ok".
raw_agent() {
  python3 - "$port" "$@" <<'PY'
import json, socket, sys
port, name, facts = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
f = s.makefile("rw")
def call(o):
    f.write(json.dumps(o) + "\n"); f.flush()
    return json.loads(f.readline())
h = {"command": "agent_hello", "agent": name, "queue_id": "q1", "next_seq": 5, "seq": 1,
     "facts": facts}
if len(sys.argv) > 4: h["key"] = sys.argv[4]
r = call(h)
print("hello:", "ok" if r.get("ok") else r.get("error"))
if r.get("ok"):
    r = call({"command": "report", "queue_id": "q1", "next_seq": 5, "seq": 2,
              "results": [{"seq": 18446744073709551615, "time": "2026-01-01T00:00:00Z",
                           "task": "system", "type": "system", "status": "ok"}]})
    print("report:", "ok" if r.get("ok") else r.get("error"))
PY
}
out=$(raw_agent k1 '{}' 2>&1)
contains "a forger without k1's key is refused" "hello: agent 'k1' must present its key"
out=$(raw_agent k1 '{}' wrong-key-0123456789 2>&1)
contains "a wrong key is refused" "hello: wrong key for agent 'k1'"
"$S" agent --server "127.0.0.1:$port" --name k1 --key-file "$work/k1.key" --interval 1s \
  --state-dir "$work/agent-k1" >"$work/agent-k1.out" 2>"$work/agent-k1.err" &
pids+=($!)
if wait_state k1 ok 10; then ok "k1 with --key-file is accepted"; else bad "k1: $(tail -3 "$work/agent-k1.err")"; fi
[[ $(agent_field k1 keyed) == True ]] && ok "k1 shows keyed" || bad "k1 keyed: $(agent_field k1 keyed)"
out=$(raw_agent k9 '{}' 2>&1)
contains "an unlisted name on loopback is accepted" '^hello: ok$'
contains "a seq of 2^64-1 is refused" '^report: "results\[0\]\.seq" is 18446744073709551615, beyond'

# --- one bad agent cannot break the view (issue 10 #7) ---------------------------------------
out=$(raw_agent evil '{"os": ["x"]}' 2>&1)
contains "a hello with os [\"x\"] is refused naming the field" 'hello: "facts.os" must be a string'
out=$("${C[@]}" agents 2>&1)
rc=$?
[[ $rc -eq 0 ]] && ok "sondectl agents still works" || bad "agents after a bad hello: exit $rc: $out"
out=$("${C[@]}" --json status 2>&1)
contains "status has an agents section" '"agents": *\{'

# --- the agent's queue on a full filesystem (issue 10 #4): counted, a gap, said -------------
full=$work/full
mkdir -p "$full"
if mount -t tmpfs -o size=2m tmpfs "$full" 2>/dev/null; then
  trap 'umount -l "$full" 2>/dev/null; cleanup' EXIT
  "$S" agent --server "127.0.0.1:$port" --name f --interval 100ms --state-dir "$full/agent-f" \
    >"$work/agent-f.out" 2>"$work/agent-f.err" &
  fpid=$!
  pids+=($fpid)
  wait_state f ok 10 || bad "f did not come up: $(tail -3 "$work/agent-f.err")"
  dd if=/dev/zero of="$full/filler" bs=4k 2>/dev/null  # until the filesystem is full
  sleep 2.5
  d1=$(agent_field f dropped)
  [[ ${d1:-0} =~ ^[1-9] ]] && ok "the central sees f's drops while its disk is full ($d1)" ||
    bad "f dropped=$d1 while full: $(tail -3 "$work/agent-f.err")"
  grep -q 'cannot queue a result: .*No space left on device.*counted as dropped' "$work/agent-f.err" &&
    ok "the agent says so" || bad "agent f stderr: $(tail -3 "$work/agent-f.err")"
  n=$(grep -c 'cannot queue a result' "$work/agent-f.err")
  ((n <= 2)) && ok "said at most every 10 s ($n lines for ~25 losses)" || bad "$n warnings in 2.5 s"
  [[ $(agent_field f queue_problem) == *"No space left"* ]] && ok "the central shows f's problem" ||
    bad "queue_problem: $(agent_field f queue_problem)"
  rm -f "$full/filler"
  sleep 2
  d2=$(agent_field f dropped)
  l2=$(agent_field f lost)
  [[ ${l2:-0} =~ ^[1-9] && $l2 == "$d2" ]] && ok "every drop is a gap the central counts (lost $l2 = dropped $d2)" ||
    bad "after space returned: lost=$l2 dropped=$d2"
  [[ $(agent_field f queue_problem) == None ]] && ok "the problem clears" || bad "problem: $(agent_field f queue_problem)"
  kill -TERM "$fpid"
  for _ in $(seq 50); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
  umount -l "$full"
else
  echo "skip: cannot mount a tmpfs (not root?); the full-disk case is covered by the unit tests"
fi

echo "agents.sh: $passes passed, $fails failed"
((fails == 0))
