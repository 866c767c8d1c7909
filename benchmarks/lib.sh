# Shared setup of the shell benchmarks (sourced): a scratch directory and cleanup, a loopback
# TCP listener to probe, and waiting for an engine's control port.
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# bench_listener SECONDS: start sonde_test_listen for that long; sets $target (127.0.0.1:port).
bench_listener() {
  "$BUILD/bin/sonde_test_listen" "$1" >"$work/port" &
  pids+=($!)
  for _ in $(seq 50); do [[ -s $work/port ]] && break; sleep 0.1; done
  target=127.0.0.1:$(cat "$work/port")
}

# bench_control_port STDERR_FILE: wait (10 s at most) for "listening on 127.0.0.1:N" in an
# engine's stderr; sets $port, fails when it never comes.
bench_control_port() {
  port=
  for _ in $(seq 100); do
    port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$1" | grep -oE '[0-9]+$' || true)
    [[ -n $port ]] && return 0
    sleep 0.1
  done
  echo "engine did not start: $(cat "$1")" >&2
  return 1
}
