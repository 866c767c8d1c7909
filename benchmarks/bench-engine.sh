#!/bin/sh
# ENGINE_CMD adapter for ../shared/bench (run-peers.sh): drives the real engine path.
# Writes a task file of BENCH_COUNT tasks for BENCH_PROTO, runs `sonde run --once --quiet` with
# at most BENCH_CONCURRENCY probes in flight, and prints
#   count=<probes attempted> ok=<probes that succeeded> wall_s=<seconds spent probing>
# The harness charges this whole process tree (about 0.3 us per probe of it is this script).
#   ENGINE_CMD="$PWD/benchmarks/bench-engine.sh" SECTIONS=floor,engine ./run-peers.sh
# SONDE_BIN selects the binary (default: build/bin/sonde beside this script).
set -eu
bin=${SONDE_BIN:-$(cd "$(dirname "$0")" && pwd)/../build/bin/sonde}
n=${BENCH_COUNT:-20000}
conc=${BENCH_CONCURRENCY:-64}
timeout_ms=${BENCH_TIMEOUT_MS:-1000}
target=${BENCH_TARGET:-127.0.0.1}
addrs=${BENCH_ADDR_COUNT:-1}
proto=${BENCH_PROTO:?BENCH_PROTO is required}
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

# The task file goes to the engine through a pipe (no temporary file to write and remove), and
# the summary is taken apart with shell built-ins: the harness charges this script's own
# processes too, so they are kept few and cheap (seq for the common case, awk only for
# icmp-multi, whose targets vary).
tasks() {
  printf '[engine]\nmax_in_flight = %d\n\n[defaults]\ntype = "%s"\ninterval = "1h"\ntimeout = "%dms"\n' \
    "$conc" "$type" "$timeout_ms"
  [ -z "$extra" ] || printf '%s\n' "$extra"
  [ "$n" -gt 0 ] || return 0
  if [ "$proto" = icmp-multi ]; then
    # the addresses are counted up from the target once (no division per task); task i
    # targets address i modulo the count
    awk -v n="$n" -v target="$target" -v addrs="$addrs" 'BEGIN {
      split(target, o, "."); a = o[1] + 0; b = o[2] + 0; c = o[3] + 0; d = o[4] + 0
      m = addrs < n ? addrs : n
      prefix = a "." b "." c "."
      for (i = 0; i < m; i++) {
        t[i] = prefix d
        if (++d > 255) {
          d = 0
          if (++c > 255) { c = 0; if (++b > 255) { b = 0; a++ } }
          prefix = a "." b "." c "."
        }
      }
      for (i = 0; i < n; i++) printf "[[task]]\nname = \"t%d\"\ntarget = \"%s\"\n", i, t[i % m]
    }'
  else
    # one task per number; the format has a single conversion, the rest is literal
    seq -f "[[task]]
name = \"t%.0f\"
target = \"$target\"" 0 $((n - 1))
  fi
}

out=$(tasks | "$bin" run --once --quiet /dev/stdin 2>&1) || true
summary=
while IFS= read -r line; do
  case $line in summary:*) summary=$line ;; esac
done <<EOF
$out
EOF
if [ -z "$summary" ]; then
  printf 'bench-engine.sh: no summary from sonde:\n%s\n' "$out" >&2
  exit 1
fi
# summary: N results: A ok, B warning, C critical, D unknown; probing took Xs[; reasons: ...]
count=${summary#summary: }; count=${count%% results*}
wall=${summary#*probing took }; wall=${wall%%s*}
if [ "$proto" = udp-closed ]; then
  ok=
  case $summary in *"reasons: "*refused*) ok=${summary#*refused }; ok=${ok%%[!0-9]*} ;; esac
else
  ok=${summary#*results: }; ok=${ok%% ok*}
fi
echo "count=$count ok=${ok:-0} wall_s=$wall"
