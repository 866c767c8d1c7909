#!/usr/bin/env bash
# Catch2 test names must not contain ';': catch_discover_tests splits the name there, so ctest
# runs a filter that matches nothing and reports the test as passed without running it.
set -euo pipefail
src=${SONDE_SOURCE_DIR:?}
bad=$(python3 - "$src" <<'PY'
import glob, sys
root = sys.argv[1]
for p in glob.glob(root + '/tests/**/*.cpp', recursive=True):
    s = open(p, encoding='utf-8').read()
    i = 0
    while (j := s.find('TEST_CASE(', i)) >= 0:
        k = s.find('"[', j)
        span = s[j:k if k >= 0 else s.find(')', j)]
        if ';' in span:
            print(p + ': ' + span.splitlines()[0])
        i = j + 1
PY
)
if [[ -n $bad ]]; then
  echo "test names with ';' (ctest would never run them):" >&2
  echo "$bad" >&2
  exit 1
fi
echo "test names: ok"
