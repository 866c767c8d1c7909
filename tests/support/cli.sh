# Shared by the black-box scripts in tests/cli/ (sourced, not run): a scratch directory and
# background processes cleaned up on exit, pass/fail counters and the usual checks.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok: $1"; }
bad() { fails=$((fails + 1)); echo "FAIL: $1"; }
# expect_rc NAME RC CMD... : run CMD, keep stdout+stderr in $out, compare the exit code
expect_rc() {
  local name=$1 want=$2
  shift 2
  out=$("$@" 2>&1)
  local rc=$?
  if [[ $rc -eq $want ]]; then ok "$name (exit $rc)"; else bad "$name: exit $rc, want $want; output: $out"; fi
}
# contains NAME REGEX : $out (from the last expect_rc) matches REGEX
contains() { if grep -qE -- "$2" <<<"$out"; then ok "$1"; else bad "$1: /$2/ not in: $out"; fi; }
# start_listener SECONDS : a loopback TCP listener that lives SECONDS; sets $open to its port
start_listener() {
  "$SONDE_BUILD_DIR/bin/sonde_test_listen" "$1" >"$work/port" &
  pids+=($!)
  for _ in $(seq 50); do
    [[ -s $work/port ]] && break
    sleep 0.1
  done
  open=$(cat "$work/port")
}
# start_engine NAME ARGS...: run `$S run ARGS` in the background ($S: the sonde binary), wait
# for its control address; sets $port and $engine_pid.
start_engine() {
  local name=$1
  shift
  "$S" run "$@" >"$work/$name.out" 2>"$work/$name.err" &
  engine_pid=$!
  pids+=($engine_pid)
  port=
  for _ in $(seq 100); do
    port=$(grep -oE 'control: listening on 127\.0\.0\.1:[0-9]+' "$work/$name.err" | grep -oE '[0-9]+$')
    [[ -n $port ]] && return 0
    kill -0 $engine_pid 2>/dev/null || break
    sleep 0.05
  done
  echo "engine $name did not start: $(cat "$work/$name.err")"
  return 1
}
