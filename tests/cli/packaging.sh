#!/usr/bin/env bash
# Packaging: install sonde into a private prefix, build examples/consumer and examples/plugin
# against it with find_package(sonde), run the consumer's probe, and have the installed engine
# discover and run the out-of-tree plugin.
set -euo pipefail
: "${SONDE_BUILD_DIR:?}" "${SONDE_SOURCE_DIR:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$SONDE_BUILD_DIR" --prefix "$prefix" >/dev/null
test -f "$prefix/include/sonde/tcp.hpp"
test -x "$prefix/bin/sonde"
test -x "$prefix/bin/sondectl"
"$prefix/bin/sondectl" --version | grep -q "^sondectl "
ls "$prefix"/lib/sonde/plugins/sonde-tcp.so >/dev/null

# 1. A consumer of the header-only toolkit.
cmake -S "$SONDE_SOURCE_DIR/examples/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/consumer" -j2 >/dev/null
closed=$(bash -c 'for p in $(seq 47000 47100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done')
set +e
out=$("$work/consumer/tcp_check" "127.0.0.1:$closed" 1s)
rc=$?
set -e
echo "$out"
[[ $rc -eq 2 ]] || { echo "FAIL: consumer exit $rc, expected 2"; exit 1; }
grep -q "reason=refused" <<<"$out" || { echo "FAIL: consumer did not report refused"; exit 1; }

# 2. An out-of-tree plugin, discovered and run by the installed engine.
cmake -S "$SONDE_SOURCE_DIR/examples/plugin" -B "$work/plugin" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/plugin" -j2 >/dev/null
test -f "$work/plugin/sonde-resolve.so"
"$prefix/bin/sonde" plugins --plugin-dir "$work/plugin" | tee "$work/plugins.txt"
grep -q "resolve .*sonde-resolve.so" "$work/plugins.txt" || { echo "FAIL: plugin not listed"; exit 1; }
grep -q "refused" "$work/plugins.txt" && { echo "FAIL: a plugin was refused"; exit 1; }

out=$("$prefix/bin/sonde" probe resolve localhost --set family=ipv4 --plugin-dir "$work/plugin")
echo "$out"
grep -q "^RESOLVE OK - localhost: localhost -> 127.0.0.1" <<<"$out" || { echo "FAIL: probe output"; exit 1; }

cat >"$work/tasks.toml" <<TOML
[engine]
plugin_dirs = ["plugin"]
[[task]]
name = "hosts"
type = "resolve"
target = "localhost"
family = "ipv4"
crit = "addresses < 1"
TOML
out=$("$prefix/bin/sonde" run --once --format json "$work/tasks.toml")
echo "$out"
grep -q '"task":"hosts","type":"resolve","target":"localhost","status":"ok"' <<<"$out" || { echo "FAIL: run"; exit 1; }
echo "packaging: ok"
