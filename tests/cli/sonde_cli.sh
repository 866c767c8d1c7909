#!/usr/bin/env bash
# Black-box tests of the sonde command: exit codes, output formats, errors, signals,
# --plugin-dir on every command that loads plugins.
set -uo pipefail
: "${SONDE_BUILD_DIR:?}" "${SONDE_SOURCE_DIR:?}"
S=$SONDE_BUILD_DIR/bin/sonde
FIX=$SONDE_BUILD_DIR/tests/fixtures
source "$SONDE_SOURCE_DIR/tests/support/cli.sh"
start_listener 90
closed=$(bash -c 'for p in $(seq 47200 47300); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done')

expect_rc "--version" 0 "$S" --version
contains "--version names the version" "^sonde 0\.1\.0"
expect_rc "no subcommand is a usage error" 3 "$S"
expect_rc "unknown flag is a usage error" 3 "$S" probe tcp 127.0.0.1:1 --bogus

expect_rc "probe of a closed port is critical" 2 "$S" probe tcp "127.0.0.1:$closed"
contains "Nagios line with reason" "^TCP CRITICAL - 127\.0\.0\.1:$closed: refused: connect failed: Connection refused \| latency=[0-9.e-]+s$"
expect_rc "probe of an open port is ok" 0 "$S" probe tcp "127.0.0.1:$open"
contains "Nagios ok line with perfdata" "^TCP OK - 127\.0\.0\.1:$open: connected to 127\.0\.0\.1 port $open \| latency=[0-9.e-]+s connect_time=[0-9.e-]+s$"
expect_rc "--warn condition makes it a warning" 1 "$S" probe tcp "127.0.0.1:$open" --warn "connect_time >= 0s"
contains "warning names the condition" "^TCP WARNING - .*connect_time >= 0s \(connect_time = "
expect_rc "--crit beats --warn" 2 "$S" probe tcp "127.0.0.1:$open" --warn "latency >= 0s" --crit "latency >= 0s"
expect_rc "json output" 2 "$S" probe tcp "127.0.0.1:$closed" --format json
contains "json record fields" '^\{"time":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z","task":"probe","type":"tcp","target":"127\.0\.0\.1:[0-9]+","status":"critical","reason":"refused","latency_ms":[0-9.e-]+,"message":"connect failed: Connection refused","metrics":\{\}\}$'
expect_rc "seed type name TCP" 2 "$S" probe TCP "127.0.0.1:$closed"
expect_rc "missing port" 3 "$S" probe tcp 127.0.0.1
contains "target error" "invalid target \"127\.0\.0\.1\": a port is required"
expect_rc "unknown type" 3 "$S" probe tpc 127.0.0.1:1
contains "type suggestion" "unknown probe type 'tpc' \(did you mean 'tcp'\?\)"
expect_rc "unknown option" 3 "$S" probe tcp 127.0.0.1:1 --set expcet=x
contains "option suggestion" "unknown option 'expcet' for type 'tcp' \(did you mean 'expect'\?\)"
expect_rc "bad option value" 3 "$S" probe tcp 127.0.0.1:1 --set tls=maybe
contains "bad bool" "\"maybe\" is not a boolean"
expect_rc "bad condition" 3 "$S" probe tcp 127.0.0.1:1 --warn "conect_time > 1s"
contains "metric suggestion" "did you mean 'connect_time'"
expect_rc "bad timeout" 3 "$S" probe tcp 127.0.0.1:1 --timeout 5parsecs

cat >"$work/good.toml" <<TOML
[defaults]
interval = "1s"
timeout = "500ms"
[[task]]
name = "open"
type = "tcp"
target = "127.0.0.1:$open"
[[task]]
name = "closed"
type = "tcp"
target = "127.0.0.1:$closed"
[[task]]
name = "slow-warn"
type = "tcp"
target = "127.0.0.1:$open"
warn = "latency >= 0s"
TOML
expect_rc "check a good file" 0 "$S" check "$work/good.toml"
contains "check summary" "good\.toml: ok, 3 tasks \(3 enabled\): tcp 3"
cat >"$work/bad.toml" <<'TOML'
[[task]]
name = "a"
type = "tcp"
target = "127.0.0.1:80"
timout = "1s"
TOML
expect_rc "check a bad file" 3 "$S" check "$work/bad.toml"
contains "positioned error with suggestion" "bad\.toml:5:1: error: unknown key 'timout' for type 'tcp' \(did you mean 'timeout'\?\)"
contains "nothing runs" "1 error in .*bad\.toml; nothing was run"
expect_rc "run refuses a bad file" 3 "$S" run --once "$work/bad.toml"

expect_rc "run --once exits with the worst status" 2 "$S" run --once "$work/good.toml"
contains "text line for the ok task" "Z  OK        open       tcp   127\.0\.0\.1:$open +[0-9.]+(us|ms)  connected"
contains "text line for the refused task" "Z  CRITICAL  closed     tcp   127\.0\.0\.1:$closed +[0-9.]+(us|ms)  refused: connect failed"
contains "text line for the warning" "Z  WARNING   slow-warn  tcp"
contains "summary line" "^summary: 3 results: 1 ok, 1 warning, 1 critical, 0 unknown; probing took [0-9.]+s; reasons: refused 1, condition 1$"
out=$("$S" run --once --format json "$work/good.toml" 2>"$work/err")
rc=$?
[[ $rc -eq 2 ]] && ok "json run exit 2" || bad "json run exit $rc"
[[ $(grep -c '^{"time":' <<<"$out") -eq 3 ]] && ok "three JSON lines" || bad "JSON lines: $out"
grep -q "^summary: 3 results" "$work/err" && ok "json summary on stderr" || bad "json summary"

# A continuous run stops cleanly on SIGTERM and SIGINT with exit 0.
for sig in TERM INT; do
  "$S" run "$work/good.toml" >"$work/run.out" 2>"$work/run.err" &
  rp=$!
  sleep 2.3
  kill -s $sig $rp
  wait $rp
  rc=$?
  [[ $rc -eq 0 ]] && ok "SIG$sig exits 0" || bad "SIG$sig exit $rc"
  n=$(grep -c 'Z  ' "$work/run.out")
  [[ $n -ge 6 ]] && ok "SIG$sig: $n results before the signal" || bad "SIG$sig: only $n results: $(cat "$work/run.out")"
  grep -q "SIG$sig received" "$work/run.err" && ok "SIG$sig announced" || bad "SIG$sig message: $(cat "$work/run.err")"
done

# --plugin-dir on every command that loads plugins; bad plugins never stop the good ones.
expect_rc "plugins lists refused files" 0 "$S" plugins --plugin-dir "$FIX/plugins-bad"
contains "refused by name" "sonde-badabi\.so refused: built for plugin ABI 2"
contains "garbage refused" "sonde-garbage\.so refused: cannot load it as a shared object"
expect_rc "probe with --plugin-dir" 0 "$S" probe sleep x --set delay=5ms --plugin-dir "$FIX/plugins-test"
expect_rc "describe" 0 "$S" plugins --describe sleep --plugin-dir "$FIX/plugins-test"
contains "describe lists options" "delay +duration +10ms +How long to wait"
cat >"$work/sleep.toml" <<'TOML'
[[task]]
name = "s"
type = "sleep"
target = "x"
TOML
expect_rc "check with --plugin-dir" 0 "$S" check "$work/sleep.toml" --plugin-dir "$FIX/plugins-test"
expect_rc "run with --plugin-dir" 0 "$S" run --once "$work/sleep.toml" --plugin-dir "$FIX/plugins-test"
SONDE_PLUGIN_PATH="$FIX/plugins-test" expect_rc "SONDE_PLUGIN_PATH" 0 "$S" run --once "$work/sleep.toml"
expect_rc "a bad plugin does not stop the run" 0 "$S" run --once "$work/sleep.toml" --plugin-dir "$FIX/plugins-bad" --plugin-dir "$FIX/plugins-test"
contains "warning for the bad plugin" "warning: plugin .*sonde-notaplugin\.so refused: not a sonde plugin"

# Alarms: sonde check lists the notifiers; notify-test sends through one (exec to a file).
cat >"$work/alarms.toml" <<TOML
[alarms]
notify = ["file"]
[[notifier]]
name = "file"
type = "exec"
command = ["/bin/sh", "-c", "cat > $work/notified.json"]
[[notifier]]
name = "nowhere"
type = "webhook"
url = "http://127.0.0.1:$closed/hook"
timeout = "1s"
[[task]]
name = "t"
type = "tcp"
target = "127.0.0.1:$closed"
TOML
expect_rc "check with notifiers" 0 "$S" check "$work/alarms.toml"
contains "check lists the notifiers" "^alarms: 2 notifiers: file \(exec\), nowhere \(webhook\), 0 maintenance windows$"
expect_rc "notify-test delivers" 0 "$S" notify-test file "$work/alarms.toml"
contains "notify-test says delivered" "^notifier 'file' \(exec\): delivered"
if grep -q '"task":"sonde-notify-test"' "$work/notified.json" && grep -q '"test":true' "$work/notified.json"; then
  ok "the test message reached the program"
else
  bad "the test message reached the program: $(cat "$work/notified.json" 2>&1)"
fi
expect_rc "notify-test in either order" 0 "$S" notify-test "$work/alarms.toml" file
expect_rc "notify-test to a refused receiver fails" 2 "$S" notify-test nowhere "$work/alarms.toml"
contains "and says why" "failed \(the engine would retry\): .*refused"
expect_rc "notify-test of an unknown notifier" 3 "$S" notify-test fil "$work/alarms.toml"
contains "with a suggestion" "has no notifier 'fil' \(did you mean 'file'\?\)"

echo "$passes passed, $fails failed"
[[ $fails -eq 0 ]]
