#!/bin/bash
# The postgres image's entry point (behaves as the official image's does for a plain start, written for
# these tests): when $PGDATA holds no cluster, initdb as the current user (the image's User, postgres)
# with the superuser password from POSTGRES_PASSWORD, allow password logins over TCP, then exec postgres
# so it is the supervised app and gets the stop signal (SIGINT: fast shutdown).
set -Eeuo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "docker-entrypoint.sh: refusing to initdb as root (set the image's User)" >&2
    exit 1
  fi
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "docker-entrypoint.sh: database is uninitialized and superuser password is not specified (POSTGRES_PASSWORD)" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA"
  echo "docker-entrypoint.sh: initdb as $(id -un) ($(id -u):$(id -g)) in $PGDATA"
  initdb --username="${POSTGRES_USER:-postgres}" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") ${POSTGRES_INITDB_ARGS:-}
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
  echo "docker-entrypoint.sh: PostgreSQL init process complete; ready for start up."
fi
exec "$@"
