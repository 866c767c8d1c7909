#!/usr/bin/env bash
# benchmarks/bench-engine.sh, the ENGINE_CMD adapter of the peer benchmark harness: small runs
# against loopback targets started here. Its last line is what the harness parses.
set -uo pipefail
: "${SONDE_BUILD_DIR:?}" "${SONDE_SOURCE_DIR:?}"
source "$SONDE_SOURCE_DIR/tests/support/cli.sh"
A=$SONDE_SOURCE_DIR/benchmarks/bench-engine.sh
export SONDE_BIN=$SONDE_BUILD_DIR/bin/sonde
start_listener 120
# (below the ephemeral range: a connect to a closed ephemeral port can pick that same port as
# its source and connect to itself, seen once as ok=1 of 50)
closed=$(bash -c 'for p in $(seq 23300 23400); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done')
# a UDP port nothing listens on: bound once to learn a free one, then released
udp_closed=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

expect_rc "tcp, 1 in flight" 0 env BENCH_PROTO=tcp BENCH_TARGET="127.0.0.1:$open" \
  BENCH_COUNT=200 BENCH_CONCURRENCY=1 "$A"
contains "tcp: every probe counted and ok" "^count=200 ok=200 wall_s=[0-9.]+$"
expect_rc "tcp to a closed port: counted, none ok" 0 env BENCH_PROTO=tcp \
  BENCH_TARGET="127.0.0.1:$closed" BENCH_COUNT=50 "$A"
contains "tcp closed: ok=0" "^count=50 ok=0 wall_s=[0-9.]+$"
expect_rc "udp-closed, 64 in flight" 0 env BENCH_PROTO=udp-closed \
  BENCH_TARGET="127.0.0.1:$udp_closed" BENCH_COUNT=500 BENCH_CONCURRENCY=64 "$A"
contains "udp-closed: ok counts the refused probes" "^count=500 ok=500 wall_s=[0-9.]+$"
if [[ $(id -u) -eq 0 ]]; then  # raw ICMP sockets
  expect_rc "icmp-multi over 10 addresses" 0 env BENCH_PROTO=icmp-multi BENCH_TARGET=127.0.0.1 \
    BENCH_ADDR_COUNT=10 BENCH_COUNT=100 "$A"
  contains "icmp-multi: every probe ok" "^count=100 ok=100 wall_s=[0-9.]+$"
fi
expect_rc "a task file the engine refuses: no summary, the engine's errors shown" 1 \
  env BENCH_PROTO=tcp BENCH_TARGET="bad target" BENCH_COUNT=3 "$A"
contains "the error names the task file position" "/dev/stdin:[0-9]+:[0-9]+: error: invalid target"
expect_rc "an unknown protocol is refused" 2 env BENCH_PROTO=gopher "$A"
contains "it says which" "unsupported protocol gopher"

echo "$passes passed, $fails failed"
[[ $fails -eq 0 ]]
