#!/usr/bin/env bash
# The test command: setup, typecheck, the whole bun test suite, then a plain summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
export PATH="$PWD/node_modules/.bin:$PATH"
typecheck=0
bun run typecheck || typecheck=1
log=$(mktemp)
bun test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
pass=$(awk '/^ *[0-9]+ pass$/{p=$1} END{print p+0}' "$log")
fail=$(awk '/^ *[0-9]+ fail$/{f=$1} END{print f+0}' "$log")
skip=$(awk '/^ *[0-9]+ skip$/{s=$1} END{print s+0}' "$log")
rm -f "$log"
if [ "$typecheck" -ne 0 ]; then echo "typecheck failed"; fail=$((fail + 1)); rc=1; fi
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "${pass} passed, ${fail} failed, ${skip} skipped"
exit "$rc"
