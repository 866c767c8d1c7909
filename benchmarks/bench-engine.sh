#!/bin/sh
# ENGINE_CMD adapter for ../shared/bench (run-peers.sh): drives the real engine path.
# Writes a task file of BENCH_COUNT tasks for BENCH_PROTO, runs `sonde run --once --quiet` with
# at most BENCH_CONCURRENCY probes in flight, and prints
#   count=<probes attempted> ok=<probes that succeeded> wall_s=<seconds spent probing>
# The harness charges this whole process tree, so the task file is generated with awk.
#   ENGINE_CMD="$PWD/benchmarks/bench-engine.sh" SECTIONS=floor,engine ./run-peers.sh
# SONDE_BIN selects the binary (default: build/bin/sonde beside this script).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${SONDE_BIN:-$here/../build/bin/sonde}
n=${BENCH_COUNT:-20000}
conc=${BENCH_CONCURRENCY:-64}
timeout_ms=${BENCH_TIMEOUT_MS:-1000}
target=${BENCH_TARGET:-127.0.0.1}
addrs=${BENCH_ADDR_COUNT:-1}
proto=${BENCH_PROTO:?BENCH_PROTO is required}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
file=$dir/tasks.toml

case $proto in
  icmp|icmp-multi) type=icmp; extra='count = 1' ;;
  tcp) type=tcp; extra='' ;;
  udp-closed) type=udp; extra='send = "x"' ;;
  http) type=http; extra='' ;;
  ntp) type=ntp; extra='' ;;
  dns) type=dns
       extra="query = \"${BENCH_DNS_NAME:-www.example.test}\"
record_type = \"${BENCH_DNS_TYPE:-A}\"" ;;
  *) echo "bench-engine.sh: unsupported protocol $proto" >&2; exit 2 ;;
esac

awk -v n="$n" -v conc="$conc" -v t="$timeout_ms" -v type="$type" -v extra="$extra" \
    -v target="$target" -v addrs="$addrs" -v multi="$([ "$proto" = icmp-multi ] && echo 1 || echo 0)" '
BEGIN {
  printf "[engine]\nmax_in_flight = %d\n\n[defaults]\ntype = \"%s\"\ninterval = \"1h\"\ntimeout = \"%dms\"\n", conc, type, t
  if (extra != "") print extra
  split(target, o, ".")
  base = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]
  for (i = 0; i < n; i++) {
    if (multi) {
      a = base + (i % addrs)
      tgt = sprintf("%d.%d.%d.%d", int(a / 16777216) % 256, int(a / 65536) % 256, int(a / 256) % 256, a % 256)
    } else tgt = target
    printf "[[task]]\nname = \"t%d\"\ntarget = \"%s\"\n", i, tgt
  }
}' >"$file"

summary=$("$bin" run --once --quiet "$file" 2>&1 | grep '^summary:' || true)
[ -n "$summary" ] || { echo "bench-engine.sh: no summary from sonde" >&2; exit 1; }
# summary: N results: A ok, B warning, C critical, D unknown; probing took Xs[; reasons: ...]
count=$(echo "$summary" | sed -n 's/^summary: \([0-9]*\) results.*/\1/p')
wall=$(echo "$summary" | sed -n 's/.*probing took \([0-9.]*\)s.*/\1/p')
if [ "$proto" = udp-closed ]; then
  ok=$(echo "$summary" | sed -n 's/.*reasons: .*refused \([0-9]*\).*/\1/p')
else
  ok=$(echo "$summary" | sed -n 's/.* \([0-9]*\) ok,.*/\1/p')
fi
echo "count=$count ok=${ok:-0} wall_s=$wall"
