#!/bin/sh
# The nginx image's entry point (as the official image's: run /docker-entrypoint.d/* then exec the command).
set -e
if [ -d /docker-entrypoint.d ]; then
  for f in /docker-entrypoint.d/*.sh; do
    [ -x "$f" ] || continue
    echo "$0: launching $f" >&2
    "$f"
  done
fi
exec "$@"
