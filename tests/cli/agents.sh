#!/usr/bin/env bash
# The central side of agents, black-box: a real `sonde run` central and real `sonde agent`
# processes on loopback. Two agents show in `sondectl agents`; a stopped agent turns critical
# within three intervals and recovers; `agent NAME info` answers from the agent; the central
# is SIGKILLed and restarted mid-stream and every result is stored exactly once and in order;
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
  out=$(python3 - "$state/agents/$n.jsonl" "$work/agent-$n.err" <<'PY'
import json, re, sys
seqs = [json.loads(l)["seq"] for l in open(sys.argv[1]) if l.strip() and '"seq"' in l]
err = open(sys.argv[2]).read()
m = re.findall(r"stopped; (\d+) results? queued", err)
queued = int(m[-1]) if m else -1
ok = seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 8
print(("OK" if ok else "BAD"), len(seqs), "stored; still queued at exit:", queued, seqs[:3], seqs[-3:])
PY
  )
  if [[ $out == OK* ]]; then ok "agent $n: seq 1..N stored exactly once, in order ($out)"; else bad "agent $n store: $out"; fi
done

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

echo "agents.sh: $passes passed, $fails failed"
((fails == 0))
