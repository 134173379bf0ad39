#!/bin/bash
# Like the official postgres image: the first start with an empty $PGDATA creates the cluster with superuser
# POSTGRES_USER (default postgres) and password POSTGRES_PASSWORD (required), and database POSTGRES_DB (default
# the user's name); every start runs the server as the postgres user, listening on all interfaces.
set -euo pipefail
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" != postgres ]; then exec "$@"; fi
shift

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?postgres: set POSTGRES_PASSWORD (the superuser password) for the first start}"
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    chown postgres "$pwfile"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    as_postgres initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        as_postgres postgres --single -D "$PGDATA" -c listen_addresses='' postgres \
            <<< "CREATE DATABASE \"$db\" OWNER \"$user\";" >/dev/null
    fi
    echo "postgres: created cluster in $PGDATA (user $user, database $db)"
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
