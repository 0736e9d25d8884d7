#!/usr/bin/env bash
# Make the local PostgreSQL ready for the test suite: installed, running, reachable over TCP
# without a password, with the database the tests use. Safe to run any number of times.
#
#   scripts/ci-postgres.sh          # then: SPECLEARN_TEST_DATABASE_URL is the printed DSN
#
# Env: PGPORT (5432), SPECLEARN_PG_CLUSTER (main), PGDATABASE_TEST (test), PG_WAIT_SECONDS (60).
set -euo pipefail

PORT="${PGPORT:-5432}"
CLUSTER="${SPECLEARN_PG_CLUSTER:-main}"  # not PGCLUSTER: pg_wrapper reads that one
DB="${PGDATABASE_TEST:-test}"
WAIT="${PG_WAIT_SECONDS:-60}"
DSN="postgresql://postgres@127.0.0.1:${PORT}/${DB}"

log() { echo "ci-postgres: $*" >&2; }

as_postgres() {
    # The postgres OS user can always reach the server over the socket (peer or trust auth).
    if [ "$(id -un)" = postgres ]; then "$@"
    elif command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"
    else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

tcp_ok() { pg_isready -q -h 127.0.0.1 -p "$PORT" -t 2; }

# 1. Installed?
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "PostgreSQL not installed; installing from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi

# 2. Running?
if ! tcp_ok; then
    VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    if [ ! -d "/etc/postgresql/$VERSION/$CLUSTER" ]; then
        log "creating cluster $VERSION/$CLUSTER on port $PORT"
        pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >/dev/null
    fi
    log "starting cluster $VERSION/$CLUSTER"
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" start || true  # already running: fine
fi
for _ in $(seq "$WAIT"); do
    tcp_ok && break
    sleep 1
done
if ! tcp_ok; then
    log "PostgreSQL did not accept connections on 127.0.0.1:$PORT within ${WAIT}s"
    tail -n 30 /var/log/postgresql/postgresql-*-"$CLUSTER".log 2>/dev/null || true
    exit 1
fi

# 3. Passwordless TCP for the tests (the machine's default; a fresh install needs it added).
if ! psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    HBA="$(as_postgres psql -p "$PORT" -Atqc 'SHOW hba_file')"
    log "allowing trust auth from 127.0.0.1 in $HBA (test machine only)"
    sed -i '1i host all all 127.0.0.1/32 trust' "$HBA"
    as_postgres psql -p "$PORT" -Atqc 'SELECT pg_reload_conf()' >/dev/null
    sleep 1
fi

# 4. The database the tests use.
psql_tcp() { psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }
if [ "$(psql_tcp -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    log "creating database $DB"
    psql_tcp -c "CREATE DATABASE \"$DB\"" || true  # lost a race with another run: fine
fi
psql -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -Atqc 'SELECT 1' >/dev/null

log "ready: $DSN"
echo "$DSN"
