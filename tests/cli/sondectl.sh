#!/usr/bin/env bash
# Black-box tests of sondectl against a real `sonde run`: the new user's session (list, start,
# watch, pause --all, resume --all, shutdown), exit codes, --json, export, reload, persistence
# across a restart, tokens, TLS, and an engine that goes away under `sondectl watch`.
set -uo pipefail
: "${SONDE_BUILD_DIR:?}" "${SONDE_SOURCE_DIR:?}"
S=$SONDE_BUILD_DIR/bin/sonde
CTL=$SONDE_BUILD_DIR/bin/sondectl
source "$SONDE_SOURCE_DIR/tests/support/cli.sh"
start_listener 120

cat >"$work/tasks.toml" <<TOML
[defaults]
interval = "1s"
timeout = "500ms"
[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:$open"
TOML

start_engine e1 "$work/tasks.toml" --control 127.0.0.1:0 || exit 1
C=("$CTL" --connect "127.0.0.1:$port")

# --- the new user's session ---------------------------------------------------------------
sleep 1.2
expect_rc "list" 0 "${C[@]}" list
contains "list table header" "^ID +NAME +TYPE +TARGET +EVERY +STATE +LAST +LATENCY +WHEN +MESSAGE$"
contains "list row" "^- +web +tcp +127\.0\.0\.1:$open +1s +running +OK +[0-9.]+(us|ms) .* connected to 127\.0\.0\.1"
expect_rc "start" 0 "${C[@]}" start --type tcp --target "127.0.0.1:$open" --interval 5s
contains "start says what it did" "^started task tcp-127\.0\.0\.1:$open \(id 1\)$"
expect_rc "watch --count" 0 timeout 10 "${C[@]}" watch --count 2 --no-color
contains "watch lines" "Z  OK +(web|tcp-127)"
expect_rc "watch --json" 0 timeout 10 "${C[@]}" --json watch --count 1 --task web
contains "watch --json prints result records" '^\{"time":"[0-9T:.-]+Z","task":"web","type":"tcp","target":"127\.0\.0\.1:[0-9]+","status":"ok","reason":null,"latency_ms":[0-9.e-]+,"message":"connected to 127\.0\.0\.1 port [0-9]+","metrics":\{"connect_time":[0-9.e-]+\}\}$'
expect_rc "pause --all" 0 "${C[@]}" pause --all
contains "pause names the tasks" "^paused 2 tasks: web, tcp-127\.0\.0\.1:$open$"
expect_rc "list after pause" 0 "${C[@]}" list
contains "paused state" "web +tcp .* paused "
expect_rc "resume --all" 0 "${C[@]}" resume --all
contains "resume names the tasks" "^resumed 2 tasks"
expect_rc "status" 0 "${C[@]}" status
contains "status header" "^sonde [0-9.]+ \(control protocol 1\), up "
contains "status tasks" "^tasks: +2 \(2 running, 0 paused, 0 disabled; 1 from the control channel\)$"
contains "status plugins" "^plugins: .*tcp [0-9.]+ \(tcp\)"
expect_rc "clients" 0 "${C[@]}" clients
contains "clients table" "^ID +PEER +CONNECTED +REQUESTS +WATCHING +QUEUE +SENT +DROPPED$"
expect_rc "status --json" 0 "${C[@]}" status --json
contains "json reply" '^\{.*"ok":true.*"protocol":1'

# --- errors and exit codes ---------------------------------------------------------------
expect_rc "error reply exits 1" 1 "${C[@]}" start --type tcp --target 127.0.0.1 --interval 5s
contains "validation message" "invalid target \"127\.0\.0\.1\": a port is required"
expect_rc "unknown option" 1 "${C[@]}" start --name x --type tcp --target "127.0.0.1:$open" --set expcet=x
contains "option suggestion" "unknown option 'expcet' for type 'tcp' \(did you mean 'expect'\?\)"
expect_rc "unknown task" 1 "${C[@]}" stop wbe
contains "task suggestion" "no task named 'wbe' \(did you mean 'web'\?\)"
expect_rc "selector required" 3 "${C[@]}" pause
expect_rc "usage error" 3 "${C[@]}" frobnicate
closed=$(bash -c 'for p in $(seq 47400 47500); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done')
expect_rc "unreachable engine exits 2" 2 "$CTL" --connect "127.0.0.1:$closed" list
contains "unreachable message" "cannot connect to 127\.0\.0\.1:$closed"
expect_rc "raw send of the seed message" 0 "${C[@]}" send '{"command": "start", "service": "TCP", "host": "127.0.0.1:'"$open"'", "interval": 60, "service_id": 5}'
contains "seed reply" '"ok":true,"started":"tcp-5"'

# --- export, stop, reload, persistence ----------------------------------------------------
expect_rc "export" 0 "${C[@]}" export
contains "export is a task file" '^name = "tcp-5"$'
echo "$out" >"$work/exported.toml"
expect_rc "exported file checks" 0 "$S" check "$work/exported.toml"
expect_rc "stop a file task" 0 "${C[@]}" stop web
cat >>"$work/tasks.toml" <<TOML
[[task]]
name = "added"
type = "tcp"
target = "127.0.0.1:$open"
TOML
expect_rc "reload" 0 "${C[@]}" reload
contains "reload summary" "^reloaded: 0 unchanged; added: added; changed: none; removed: none$"
cp "$work/tasks.toml" "$work/tasks.good"
echo 'oops = 1' >>"$work/tasks.toml"
expect_rc "reload of a bad file" 1 "${C[@]}" reload
contains "reload refusal" "error in .*tasks\.toml; the running tasks are unchanged"
contains "positioned error" "tasks\.toml:[0-9]+:1: error: unknown key 'oops'"
cp "$work/tasks.good" "$work/tasks.toml"
compgen -G "$work/tasks.state/control-tasks.toml*" >/dev/null && ok "state (file or journal) beside the task file" || bad "no state file"

expect_rc "shutdown" 0 "${C[@]}" shutdown
contains "shutdown message" "^engine shutting down"
wait $engine_pid
rc=$?
[[ $rc -eq 0 ]] && ok "engine exits 0 after shutdown" || bad "engine exit $rc: $(cat "$work/e1.err")"
grep -q "shutdown requested over the control channel" "$work/e1.err" && ok "engine says why it stopped" || bad "e1.err: $(cat "$work/e1.err")"

start_engine e2 "$work/tasks.toml" --control 127.0.0.1:0 || exit 1
C=("$CTL" --connect "127.0.0.1:$port")
expect_rc "list after restart" 0 "${C[@]}" list
contains "started task survived" "^1 +tcp-127\.0\.0\.1:$open "
contains "seed task survived" "^5 +tcp-5 "
if grep -qE "^- +web " <<<"$out"; then bad "stopped task came back"; else ok "stopped task stays stopped"; fi
contains "stopped tasks listed" "^stopped task-file tasks: web$"

# --- watch survives the engine going away ---------------------------------------------------
"$CTL" --connect "127.0.0.1:$port" watch --no-color >"$work/watch.out" 2>"$work/watch.err" &
wpid=$!
pids+=($wpid)
sleep 1.5
"${C[@]}" shutdown >/dev/null
wait $engine_pid
sleep 1
"$S" run "$work/tasks.toml" --control "127.0.0.1:$port" >"$work/e3.out" 2>"$work/e3.err" &
engine_pid=$!
pids+=($engine_pid)
for _ in $(seq 100); do
  grep -q "reconnected" "$work/watch.err" && break
  sleep 0.1
done
grep -q "the engine is shutting down" "$work/watch.err" && ok "watch says the engine went away" || bad "watch.err: $(cat "$work/watch.err")"
grep -q "reconnected to 127.0.0.1:$port" "$work/watch.err" && ok "watch reconnects" || bad "watch.err: $(cat "$work/watch.err")"
before=$(grep -c 'Z  ' "$work/watch.out")
sleep 1.5
after=$(grep -c 'Z  ' "$work/watch.out")
[[ $after -gt $before ]] && ok "watch streams again after reconnecting ($before -> $after)" || bad "no results after reconnect"
kill $wpid 2>/dev/null
"$CTL" --connect "127.0.0.1:$port" shutdown >/dev/null
wait $engine_pid

# --- tokens ------------------------------------------------------------------------------------
expect_rc "beyond loopback without a token is refused" 3 "$S" run "$work/tasks.toml" --control 0.0.0.0:0 --state-dir "$work/st4"
contains "refusal names the rule" "refusing to listen on 0\.0\.0\.0:0 without a token"
SONDE_TOKEN=sekrit start_engine e5 "$work/tasks.toml" --control 127.0.0.1:0 --state-dir "$work/st5" || exit 1
grep -q "(token required)" "$work/e5.err" && ok "engine says a token is required" || bad "e5.err: $(cat "$work/e5.err")"
expect_rc "no token" 1 "$CTL" --connect "127.0.0.1:$port" list
contains "token required message" "a token is required"
expect_rc "wrong token" 1 "$CTL" --connect "127.0.0.1:$port" --token nope list
contains "wrong token message" "wrong token"
expect_rc "right token" 0 env SONDE_TOKEN=sekrit "$CTL" --connect "127.0.0.1:$port" list
kill $engine_pid
wait $engine_pid

# --- TLS ---------------------------------------------------------------------------------------
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  cat >"$work/tls.toml" <<TOML
[control]
listen = "127.0.0.1:0"
tls_cert = "cert.pem"
tls_key = "key.pem"
[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:$open"
TOML
  start_engine e6 "$work/tls.toml" --state-dir "$work/st6" || exit 1
  grep -q "(TLS)" "$work/e6.err" && ok "engine announces TLS" || bad "e6.err: $(cat "$work/e6.err")"
  expect_rc "TLS with the CA" 0 "$CTL" --connect "127.0.0.1:$port" --tls --ca-file "$work/cert.pem" status
  contains "TLS status" "^tasks: +1 "
  expect_rc "TLS without trust fails" 2 "$CTL" --connect "127.0.0.1:$port" --tls --timeout 3s status
  expect_rc "plain TCP to a TLS engine gets no reply" 2 "$CTL" --connect "127.0.0.1:$port" --timeout 1s status
  expect_rc "TLS shutdown" 0 "$CTL" --connect "127.0.0.1:$port" --tls --insecure shutdown
  wait $engine_pid

  # A TLS client that finishes the handshake and then says nothing is closed after auth_timeout;
  # with every slot held by an authenticated client, a newcomer is told so over TLS.
  cat >"$work/tls1.toml" <<TOML
[control]
listen = "127.0.0.1:0"
tls_cert = "cert.pem"
tls_key = "key.pem"
max_clients = 1
auth_timeout = "1s"
[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:$open"
interval = "200ms"
TOML
  start_engine e7 "$work/tls1.toml" --state-dir "$work/st7" || exit 1
  closed_after=$(python3 - "$port" <<'PY'
import socket, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
t0 = time.monotonic()
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
s.settimeout(8)
try:
    s.recv(100)  # says nothing; waits for the engine to close
except OSError:
    pass
print(int((time.monotonic() - t0) * 1000))
PY
)
  [[ -n $closed_after && $closed_after -lt 4000 ]] && ok "silent TLS client closed after auth_timeout (${closed_after} ms)" ||
    bad "silent TLS client not closed by auth_timeout (${closed_after:-?} ms)"
  "$CTL" --connect "127.0.0.1:$port" --tls --insecure watch --json >"$work/w7.out" 2>&1 &
  watcher=$!
  pids+=($watcher)
  for _ in $(seq 50); do grep -q . "$work/w7.out" 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
  expect_rc "a second TLS client is refused" 1 "$CTL" --connect "127.0.0.1:$port" --tls --insecure --timeout 3s status
  contains "refusal said over TLS" "too many clients \\(1\\)"
  kill $watcher 2>/dev/null
  wait $watcher 2>/dev/null
  # The watcher's slot frees once a result to it fails (a closed watcher may only have
  # half-closed, so its end of stream alone does not end it).
  for _ in $(seq 30); do
    "$CTL" --connect "127.0.0.1:$port" --tls --insecure --timeout 2s status >/dev/null 2>&1 && break
    sleep 0.2
  done
  expect_rc "TLS shutdown (2)" 0 "$CTL" --connect "127.0.0.1:$port" --tls --insecure shutdown
  wait $engine_pid
else
  bad "openssl is missing: apt-get install openssl (./dev deps installs it)"
fi

# --- alarms: alarms, silence, unsilence, ack, notifiers, watch --alarms ---------------------
closed=$(bash -c 'for p in $(seq 47400 47500); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done')
cat >"$work/alarms.toml" <<TOML
[alarms]
failure_threshold = 1
notify = ["file"]
[[notifier]]
name = "file"
type = "exec"
group_wait = "0s"
command = ["/bin/sh", "-c", "cat >> $work/alarms.out; echo >> $work/alarms.out"]
[[task]]
name = "down"
type = "tcp"
target = "127.0.0.1:$closed"
interval = "300ms"
timeout = "300ms"
tags = { team = "db" }
TOML
start_engine alarms "$work/alarms.toml" --control 127.0.0.1:0 --state-dir "$work/alarms-state" || exit 1
A=("$CTL" --connect "127.0.0.1:$port")
for _ in $(seq 50); do grep -q '"state":"firing"' "$work/alarms.out" 2>/dev/null && break; sleep 0.1; done
expect_rc "alarms" 0 "${A[@]}" alarms
contains "alarms table" "^ALARM +TASK +STATE +SEVERITY +SINCE +MESSAGE$"
contains "the firing alarm" "^[0-9a-f]{16} +down +firing +critical .*refused"
alarm_id=$(grep -oE '^[0-9a-f]{16}' <<<"$out" | head -1)
"${A[@]}" watch --alarms --json --count 1 >"$work/watch-alarms.out" 2>/dev/null &
watcher=$!
sleep 0.5
expect_rc "silence by tag" 0 "${A[@]}" silence --tag team=db --for 1h --reason "disk swap"
contains "silence reply" "^silence 1 until .* \(covers 1 task\)$"
wait $watcher
if grep -qE '"state":"silenced".*' "$work/watch-alarms.out" && grep -q '"held_by":"silence 1 (disk swap)"' "$work/watch-alarms.out"; then
  ok "watch --alarms streams the silenced event"
else
  bad "watch --alarms streams the silenced event: $(cat "$work/watch-alarms.out")"
fi
expect_rc "alarms while silenced" 0 "${A[@]}" alarms
contains "shown silenced" "^$alarm_id +down +silenced .*\[silence 1 \(disk swap\)\]$"
contains "silences listed" "^  1  until .*team=db  disk swap$"
expect_rc "unsilence" 0 "${A[@]}" unsilence 1
contains "lifted" "^silence 1 lifted$"
expect_rc "unsilence twice" 1 "${A[@]}" unsilence 1
contains "no such silence" "no active silence 1"
expect_rc "ack" 0 "${A[@]}" ack "$alarm_id"
contains "acknowledged" "^alarm $alarm_id \(down\) acknowledged$"
expect_rc "ack of nothing" 1 "${A[@]}" ack --task nope
expect_rc "notifiers" 0 "${A[@]}" notifiers
contains "notifiers table" "^file +exec +[1-9][0-9]* +0 +0 +0 +0 +$"
expect_rc "silence needs a duration" 1 "${A[@]}" silence down
contains "duration error" "give exactly one of \"for\""
kill "$engine_pid"

# --- history: history, uptime, percentiles, incidents, status ---------------------------------
start_listener 60
closed=$(bash -c 'for p in $(seq 47400 47500); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done')
cat >"$work/history.toml" <<TOML
[alarms]
failure_threshold = 1
[history]
commit_interval = "100ms"
[defaults]
interval = "300ms"
timeout = "300ms"
[[task]]
name = "web"
type = "tcp"
target = "127.0.0.1:$open"
[[task]]
name = "down"
type = "tcp"
target = "127.0.0.1:$closed"
TOML
start_engine history "$work/history.toml" --control 127.0.0.1:0 --state-dir "$work/history-state" || exit 1
H=("$CTL" --connect "127.0.0.1:$port")
sleep 3
# json_ok NAME PYTHON-EXPR : the JSON reply in $out (its line starting with "{") parses and the
# expression (over r) holds
json_ok() {
  if grep -m1 '^{' <<<"$out" | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); sys.exit(0 if ('"$2"') else 1)' 2>/dev/null; then
    ok "$1"
  else
    bad "$1: ($2) does not hold for: $out"
  fi
}
expect_rc "history" 0 "${H[@]}" history web --since 1m
contains "history header: task, metric, level, step" "^task web \(tcp 127\.0\.0\.1:$open\), metric latency \(ms\), level raw, step every result, [0-9T:-]+Z to [0-9T:-]+Z: [0-9]+ points$"
contains "history raw table" "^TIME +STATUS +VALUE +REASON +MESSAGE$"
contains "history raw row with the unit" "^20[0-9-]+T[0-9:]+\.[0-9]{3}Z +OK +[0-9]+\.[0-9]{3} ms +-$"
rows=$(grep -cE '^20[0-9-]+T.* OK ' <<<"$out")
[[ $rows -ge 5 ]] && ok "history shows the results so far ($rows)" || bad "history rows: $rows in: $out"
expect_rc "history of a failing task" 0 "${H[@]}" history down --since 1m
contains "failing rows carry reason and message" "^20[0-9-]+T[0-9:.]+Z +CRITICAL +[0-9.]+ ms +refused +connect failed: Connection refused$"
expect_rc "history with a step" 0 "${H[@]}" history web --since 10m --step 1m
contains "rollup header" "^task web \(tcp .*\), metric latency \(ms\), level minute, step 1m, "
contains "rollup table" "^TIME +N +UP% +OK +WARN +CRIT +UNK +MIN +AVG +MAX +P50 +P90 +P99$"
contains "rollup row" "^20[0-9-]+T[0-9:]+:00Z +[1-9][0-9]* +100% +[1-9][0-9]* +0 +0 +0( +[0-9]+\.[0-9]{3}){6}$"
expect_rc "history --json" 0 "${H[@]}" --json history web --since 1m
json_ok "history --json parses" 'r["ok"] and r["task"] == "web" and r["level"] == "raw" and len(r["points"]) >= 5 and r["points"][-1]["status"] == "ok"'
expect_rc "history --metric" 0 "${H[@]}" history web --since 1m --metric connect_time
contains "a metric's series" "metric connect_time, level raw"
expect_rc "uptime" 0 "${H[@]}" uptime
contains "uptime table: a column per window" "^TASK +1h +24h +7d +30d +1y$"
contains "uptime of the failing task" "^down +0% +0% +0% +0% +0%$"
contains "uptime of the healthy task" "^web +100% +100% +100% +100% +100%$"
expect_rc "uptime of one task over chosen windows" 0 "${H[@]}" uptime web --windows 1m,1h
contains "chosen windows" "^TASK +1m +1h$"
contains "one row" "^web +100% +100%$"
if grep -q "^down" <<<"$out"; then bad "uptime web shows down: $out"; else ok "uptime TASK shows only that task"; fi
expect_rc "uptime --json" 0 "${H[@]}" --json uptime
json_ok "uptime --json parses" 'r["ok"] and sorted(t["task"] for t in r["tasks"]) == ["down", "web"] and [t for t in r["tasks"] if t["task"] == "web"][0]["windows"]["1h"]["ok"] >= 5'
expect_rc "percentiles" 0 "${H[@]}" percentiles --since 10m
contains "percentiles header" "^latency in ms from [0-9T:-]+Z to [0-9T:-]+Z \(quantiles within 1%\)$"
contains "percentiles table" "^TASK +N +MIN +AVG +P50 +P90 +P95 +P99 +P99\.9 +MAX$"
contains "percentiles row" "^web +[1-9][0-9]*( +[0-9]+\.[0-9]{3}){8}$"
expect_rc "percentiles --json" 0 "${H[@]}" --json percentiles web
json_ok "percentiles --json parses" 'r["ok"] and len(r["tasks"]) == 1 and r["tasks"][0]["n"] >= 5 and r["tasks"][0]["min"] <= r["tasks"][0]["p50"] <= r["tasks"][0]["max"]'
expect_rc "incidents" 0 "${H[@]}" incidents
contains "incidents table" "^START +END +DURATION +TASK +SEVERITY +REASON +MESSAGE$"
contains "the ongoing incident" "^20[0-9-]+T[0-9:]+Z +ongoing +[0-9]+s +down +critical +refused +connect failed: Connection refused$"
expect_rc "incidents of a healthy task" 0 "${H[@]}" incidents web --since 1h
contains "none for web" "^no incidents from "
expect_rc "incidents --json --limit" 0 "${H[@]}" --json incidents down --limit 1
json_ok "incidents --json parses" 'r["ok"] and len(r["incidents"]) == 1 and r["incidents"][0]["task"] == "down" and r["incidents"][0]["end"] is None'
expect_rc "status shows history" 0 "${H[@]}" status
contains "status history line" "^history: +ok, [1-9][0-9]* written, 0 dropped, [0-9]+ queued, file [0-9.]+ [KMG]?i?B.* $work/history-state/history\.db$"
expect_rc "history of an unknown task" 1 "${H[@]}" history nope
contains "unknown task error" "^sondectl: no history for task 'nope'$"
expect_rc "uptime of an unknown task" 1 "${H[@]}" uptime web nope
contains "uptime error names it" "no history for task 'nope'"
expect_rc "percentiles of an unknown task" 1 "${H[@]}" percentiles nope
expect_rc "incidents of an unknown task" 1 "${H[@]}" incidents nope
expect_rc "unknown task with --json" 1 "${H[@]}" --json history nope
json_ok "the error reply as JSON" 'r["ok"] is False and "nope" in r["error"]'
expect_rc "a bad --since" 1 "${H[@]}" history web --since yesterday
contains "since error" "'yesterday' is neither a duration"
expect_rc "history needs a task" 3 "${H[@]}" history
kill "$engine_pid"
wait "$engine_pid"

echo "sondectl: $passes passed, $fails failed"
[[ $fails -eq 0 ]]
