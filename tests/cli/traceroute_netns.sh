#!/usr/bin/env bash
# traceroute across a real multi-hop path. Four network namespaces joined by veth pairs:
#
#   client --- router1 --- router2 --- server
#   .1.2    .1.1    .2.1   .2.2   .3.1   .3.2      IPv4 10.99.<net>.<host>/24 (client: also .1.3)
#   ::2     ::1     ::1    ::2    ::1    ::2       IPv6 fd99:<net>::<host>/64 (ULA)
#
# Private addresses exist only inside these namespaces; nothing is sent from the host
# namespace. router1 has no route to 10.99.200.0/24 (ICMP network unreachable) and drops
# 10.99.251.0/24 (blackhole: nothing answers at all); router2 drops 10.99.250.0/24 (the path
# goes silent after hop 1). Checked with `sonde probe traceroute` run inside the client:
#   - ICMP through datagram sockets (ping_group_range opened, CAP_NET_RAW dropped),
#     ICMP through raw sockets (range "1 0", root), UDP (unprivileged): the path, reached=1,
#     hops=3, over IPv4 and IPv6;
#   - no route at router1 -> reason unreachable, "!N"; router2 drops -> unreachable, hops=1;
#     nobody answers -> reason timeout; a router that sends no ICMP (router2's own ICMP is
#     blackholed by a policy rule) -> "2 *" but the server is still reached at hop 3;
#   - no permission for ICMP -> exit 3 with the fix-naming message;
#   - sonde_tests "[.traceroute-netns]" in a route-less namespace (no route, no answer).
# Needs SONDE_BUILD_DIR. Prints SKIP and exits 0 without root, ip, capsh or namespaces.
set -u

: "${SONDE_BUILD_DIR:?set SONDE_BUILD_DIR to the build directory}"
sonde="$SONDE_BUILD_DIR/bin/sonde"
tests="$SONDE_BUILD_DIR/bin/sonde_tests"

skip() {
  echo "SKIP: $*"
  exit 0
}

[[ -x $sonde ]] || { echo "FAIL: $sonde not found"; exit 1; }
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed"
command -v capsh >/dev/null 2>&1 || skip "capsh (libcap2-bin) is not installed"
command -v unshare >/dev/null 2>&1 || skip "unshare (util-linux) is not installed"
[[ $(id -u) == 0 ]] || skip "needs root to create network namespaces"

tag="sonde-tr-$$"
C="$tag-client" R1="$tag-router1" R2="$tag-router2" S="$tag-server"
cleanup() {
  for n in "$C" "$R1" "$R2" "$S"; do ip netns del "$n" 2>/dev/null; done
}
trap cleanup EXIT INT TERM

ip netns add "$C" 2>/dev/null || skip "cannot create a network namespace here"
ip netns add "$R1" && ip netns add "$R2" && ip netns add "$S" || { echo "FAIL: ip netns add"; exit 1; }
nsx() { ip netns exec "$@"; }

setup() {
  set -e
  local n
  for n in "$C" "$R1" "$R2" "$S"; do
    nsx "$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    # Deterministic answers: no ICMP rate limiting inside the test's namespaces.
    nsx "$n" sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0
    ip -n "$n" link set lo up
  done
  ip -n "$C" link add eth0 type veth peer name west netns "$R1"
  ip -n "$R1" link add east type veth peer name west netns "$R2"
  ip -n "$R2" link add east type veth peer name eth0 netns "$S"
  addr() { # ns dev net host
    ip -n "$1" addr add "10.99.$3.$4/24" dev "$2"
    ip -n "$1" -6 addr add "fd99:$3::$4/64" dev "$2" nodad
    ip -n "$1" link set "$2" up
  }
  addr "$C" eth0 1 2
  addr "$R1" west 1 1
  addr "$R1" east 2 1
  addr "$R2" west 2 2
  addr "$R2" east 3 1
  addr "$S" eth0 3 2
  for n in "$R1" "$R2"; do
    nsx "$n" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  done
  ip -n "$C" route add default via 10.99.1.1
  # Probes to the unroutable net leave from their own address: a Linux router limits its
  # "no route" errors per source (net.ipv4.route.error_cost/error_burst, host-wide: burst 5,
  # then 1/s) with the same per-peer bucket that icmp_ratelimit=0 keeps empty.
  ip -n "$C" addr add 10.99.1.3/24 dev eth0
  ip -n "$C" route add 10.99.200.0/24 via 10.99.1.1 src 10.99.1.3
  ip -n "$C" -6 route add default via fd99:1::1
  for net in 3 250; do
    ip -n "$R1" route add "10.99.$net.0/24" via 10.99.2.2
    ip -n "$R1" -6 route add "fd99:$net::/64" via fd99:2::2
  done
  ip -n "$R1" route add blackhole 10.99.251.0/24
  ip -n "$R1" -6 route add blackhole fd99:251::/64
  ip -n "$R2" route add 10.99.1.0/24 via 10.99.2.1
  ip -n "$R2" -6 route add fd99:1::/64 via fd99:2::1
  ip -n "$R2" route add blackhole 10.99.250.0/24
  ip -n "$R2" -6 route add blackhole fd99:250::/64
  ip -n "$S" route add default via 10.99.3.1
  ip -n "$S" -6 route add default via fd99:3::1
}
(setup) || { echo "FAIL: could not build the namespaces"; exit 1; }

# Fresh namespaces answer the first IPv6 packets only after ~0.9s (neighbour discovery on new
# links): wait until the server answers pings so the timings below are the path's own.
for t in 10.99.3.2 fd99:3::2; do
  for _ in $(seq 50); do
    nsx "$C" "$sonde" probe icmp "$t" --set count=1 --timeout 200ms >/dev/null 2>&1 && break
    sleep 0.1
  done
done

failures=0
out=""
fail() {
  echo "FAIL: $*"
  echo "  output: $out"
  failures=$((failures + 1))
}

# trace NAME EXPECTED_EXIT CMD...: run a command (client or unpriv), keep its output.
trace() {
  local name=$1 want=$2
  shift 2
  echo "=== $name"
  local t0=$SECONDS
  out=$("$@" 2>&1)
  local rc=$?
  echo "$out"
  echo "    (exit $rc, ${SECONDS}s total so far, $((SECONDS - t0))s)"
  [[ $rc == "$want" ]] || fail "$name: exit $rc, expected $want"
}
expect() { # regex...
  local re
  for re in "$@"; do
    [[ $out =~ $re ]] || fail "output does not match /$re/"
  done
}

# client CMD...: run in the client namespace.
client() { nsx "$C" "$@"; }
# unpriv ARGS...: `sonde probe traceroute ARGS...` in the client namespace without CAP_NET_RAW.
unpriv() {
  nsx "$C" capsh --drop=cap_net_raw -- -c "$(printf '%q ' "$sonde" probe traceroute "$@")"
}

path_v4='reached in 3 hops: 1 10\.99\.1\.1 [0-9.]+ ms, 2 10\.99\.2\.2 [0-9.]+ ms, 3 10\.99\.3\.2 [0-9.]+ ms'
path_v6='reached in 3 hops: 1 fd99:1::1 [0-9.]+ ms, 2 fd99:2::2 [0-9.]+ ms, 3 fd99:3::2 [0-9.]+ ms'
# sent: 9, or more when an answer was slower than packet_interval (probes beyond hop 3).
reached3='hops=3 reached=1 sent=[0-9]+ '

# ---- datagram ICMP sockets: ping_group_range open, CAP_NET_RAW dropped --------------------
nsx "$C" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
trace "icmp, datagram socket, IPv4" 0 unpriv 10.99.3.2
expect "^TRACEROUTE OK - 10\.99\.3\.2: 10\.99\.3\.2 $path_v4 \|" "$reached3" 'hop\.2\.loss=0% '
trace "icmp, datagram socket, IPv6" 0 unpriv fd99:3::2
expect "fd99:3::2 $path_v6" "$reached3"

# ---- raw ICMP sockets: range "1 0", root -------------------------------------------------
nsx "$C" sysctl -qw net.ipv4.ping_group_range="1 0"
trace "icmp, raw socket, IPv4" 0 client "$sonde" probe traceroute 10.99.3.2 --timeout 5s
expect "$path_v4" "$reached3"
trace "icmp, raw socket, IPv6" 0 client "$sonde" probe traceroute fd99:3::2 --timeout 5s
expect "$path_v6" "$reached3"

# ---- no permission for ICMP: the run says how to fix it ----------------------------------
trace "icmp without permission" 3 unpriv 10.99.3.2
expect "no permission to send ICMP echo requests" "ping_group_range" "CAP_NET_RAW"

# ---- UDP: unprivileged --------------------------------------------------------------------
trace "udp, IPv4, unprivileged" 0 unpriv 10.99.3.2 --set method=udp
expect "$path_v4" "$reached3"
trace "udp, IPv6, unprivileged" 0 unpriv fd99:3::2 --set method=udp --set port=40000
expect "$path_v6" "$reached3"

# ---- JSON result ----------------------------------------------------------------------------
trace "icmp, JSON" 0 client "$sonde" probe traceroute 10.99.3.2 --format json --set probes_per_hop=1
expect '"status":"ok"' '"reason":null' '"hops":3' '"reached":1' '"hop\.1\.rtt_avg":' '"hop\.3\.loss":0'

# ---- no route at router1: ICMP network unreachable ----------------------------------------
for m in icmp udp; do
  trace "$m: no route at router1, IPv4" 2 client "$sonde" probe traceroute 10.99.200.1 --set method=$m --set probes_per_hop=2
  expect "CRITICAL - 10\.99\.200\.1: unreachable: 10\.99\.200\.1 not reached: 1 10\.99\.1\.1 [0-9.]+ ms !N: network unreachable from 10\.99\.1\.1 at hop 1 \|" \
    'hops=1 reached=0 ' 'loss=100%'
  trace "$m: no route at router1, IPv6" 2 client "$sonde" probe traceroute fd99:200::1 --set method=$m
  expect "unreachable: fd99:200::1 not reached: 1 fd99:1::1 [0-9.]+ ms !N: no route to destination from fd99:1::1 at hop 1" \
    'hops=1 reached=0 '
done

# ---- router2 drops: the path goes silent after hop 1 --------------------------------------
for t in 10.99.250.1 fd99:250::1; do
  trace "router2 drops $t" 2 client "$sonde" probe traceroute "$t" --set max_hops=6 --set wait=300ms
  expect "unreachable: $t not reached: 1 (10\.99\.1\.1|fd99:1::1) [0-9.]+ ms, 2-6 \* \|" 'hops=1 reached=0 sent=18 '
done

# ---- nobody answers: timeout -----------------------------------------------------------------
trace "nothing answers" 2 client "$sonde" probe traceroute 10.99.251.1 --set max_hops=4 --set wait=300ms --set method=udp
expect "CRITICAL - 10\.99\.251\.1: timeout: 10\.99\.251\.1 not reached: no hop answered 12 probes within [0-9.]+m?s \(1-4 \*\)" 'hops=0 reached=0 '

# ---- a hop that does not answer: router2's own ICMP is blackholed by a policy rule --------
# (forwarded traffic has a real input interface; locally generated ICMP is routed with iif lo)
ip -n "$R2" rule add iif lo ipproto icmp lookup 100 pref 100 &&
  ip -n "$R2" route add blackhole default table 100 &&
  ip -n "$R2" -6 rule add iif lo ipproto ipv6-icmp lookup 100 pref 100 &&
  ip -n "$R2" -6 route add blackhole default table 100 || fail "cannot add the policy rules"
for m in icmp udp; do
  for t in 10.99.3.2 fd99:3::2; do
    trace "$m: router2 silent, $t" 0 client "$sonde" probe traceroute "$t" --set method=$m --set wait=300ms
    expect "$t reached in 3 hops: 1 (10\.99\.1\.1|fd99:1::1) [0-9.]+ ms, 2 \*, 3 $t [0-9.]+ ms \|" \
      "$reached3" 'hop\.2\.loss=100% ' 'hop\.3\.loss=0'
    [[ $out == *hop.2.rtt_avg* ]] && fail "a silent hop has an rtt"
  done
done

# ---- unit tests that need a namespace without routes ---------------------------------------
if [[ -x $tests ]]; then
  echo "=== sonde_tests [.traceroute-netns]"
  if unshare --net bash -c 'ip link set lo up && sysctl -qw net.ipv4.icmp_echo_ignore_all=1 &&
      sysctl -qw net.ipv4.ping_group_range="1 0" && "$0" "[.traceroute-netns]"' "$tests"; then
    echo "--- ok"
  else
    fail "sonde_tests [.traceroute-netns]"
  fi
else
  echo "NOTE: $tests not built: skipping [.traceroute-netns]"
fi

echo "total ${SECONDS}s"
if ((failures)); then
  echo "FAIL: $failures check(s) failed"
  exit 1
fi
echo "PASS: traceroute across namespaces"
