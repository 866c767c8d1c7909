#!/usr/bin/env bash
# ICMP socket modes, each in a private network namespace so the host's sysctls are never
# touched and no packet leaves loopback:
#   1. datagram ("ping") sockets: ping_group_range opened in the namespace, CAP_NET_RAW dropped,
#      runs sonde_tests "[.icmp-dgram]"; then echo replies off and "[.icmp-netns]" (timeouts,
#      ICMP errors through the socket error queue, no route)
#   2. raw sockets: range "1 0", echo replies off, "[.icmp-netns]" again
#   3. no permission: range "1 0" and CAP_NET_RAW dropped, "[.icmp-noperm]"
# Needs SONDE_BUILD_DIR (the build directory). Prints SKIP and exits 0 when unshare, capsh or
# ip is missing or namespaces cannot be created here.
set -u

: "${SONDE_BUILD_DIR:?set SONDE_BUILD_DIR to the build directory}"
bin="$SONDE_BUILD_DIR/bin/sonde_tests"

skip() {
  echo "SKIP: $*"
  exit 0
}

[[ -x $bin ]] || { echo "FAIL: test binary $bin not found"; exit 1; }
command -v unshare >/dev/null 2>&1 || skip "unshare (util-linux) is not installed"
command -v capsh >/dev/null 2>&1 || skip "capsh (libcap2-bin) is not installed"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed"
command -v sysctl >/dev/null 2>&1 || skip "sysctl (procps) is not installed"
unshare --net true 2>/dev/null ||
  skip "cannot create a network namespace here (needs root or CAP_SYS_ADMIN)"
unshare --net capsh --drop=cap_net_raw -- -c true 2>/dev/null ||
  skip "capsh cannot drop cap_net_raw here (needs CAP_SETPCAP)"
unshare --net sysctl -qw net.ipv4.ping_group_range="0 2147483647" 2>/dev/null ||
  skip "cannot set net.ipv4.ping_group_range inside a network namespace (read-only /proc/sys?)"

failures=0
run_step() {
  local name=$1 script=$2
  echo "=== $name"
  if unshare --net env BIN="$bin" bash -eu -c "$script"; then
    echo "--- $name: ok"
  else
    echo "--- $name: FAILED"
    failures=$((failures + 1))
  fi
}

# Every step starts like this: loopback up, and no route anywhere else.
common='
ip link set lo up
[[ -z $(tail -n +2 /proc/net/route) ]] || { echo "the namespace has routes"; exit 1; }
'

run_step "datagram ICMP sockets, unprivileged" "$common"'
sysctl -qw net.ipv4.ping_group_range="0 2147483647"
capsh --drop=cap_net_raw -- -c "\"\$BIN\" \"[.icmp-dgram]\""
sysctl -qw net.ipv4.icmp_echo_ignore_all=1
SONDE_EXPECT_ICMP_MODE=datagram "$BIN" "[.icmp-netns]"
'

run_step "raw ICMP sockets" "$common"'
sysctl -qw net.ipv4.ping_group_range="1 0"
sysctl -qw net.ipv4.icmp_echo_ignore_all=1
SONDE_EXPECT_ICMP_MODE=raw "$BIN" "[.icmp-netns]"
'

run_step "no ICMP permission" "$common"'
sysctl -qw net.ipv4.ping_group_range="1 0"
capsh --drop=cap_net_raw -- -c "\"\$BIN\" \"[.icmp-noperm]\""
'

if ((failures)); then
  echo "FAIL: $failures step(s) failed"
  exit 1
fi
echo "PASS: icmp socket modes"
