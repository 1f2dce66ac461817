#!/bin/sh
# Fake "postgres" for the offline RivetOS datahub (POSIX sh, run by busybox).
# Mimics what matters of the pgvector/postgres image:
#   - data directory $PGDATA (default /var/lib/postgresql/data) with PG_VERSION,
#     created on first start; an existing PG_VERSION that differs from
#     $POSTGRES_VERSION is refused, like a real major-version mismatch;
#   - listens on ${PGPORT:-5432} (busybox `nc -ll`); every connection gets one
#     fixed line from pg-session, which is all pg_isready needs;
#   - POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB are accepted, never printed;
#   - creates /rivet-shared/{plans,docs,status,whiteboard} when /rivet-shared is a mount;
#   - fast, clean shutdown on SIGTERM / SIGINT (docker stop).
set -u

# Anything other than "postgres" is run as-is (e.g. `docker run IMAGE sh`).
if [ "${1:-postgres}" != postgres ]; then exec "$@"; fi

log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC') [$$] $*"; }
fatal() { log "FATAL:  $1" >&2; [ -n "${2:-}" ] && log "DETAIL:  $2" >&2; exit 1; }

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
version="${POSTGRES_VERSION:-16}"
port="${PGPORT:-5432}"

# --- data directory --------------------------------------------------------
# (A real write probe: busybox `test -w` does not notice read-only mounts.)
mkdir -p "$PGDATA" 2>/dev/null
{ touch "$PGDATA/.rivetos-write-probe" && rm -f "$PGDATA/.rivetos-write-probe"; } 2>/dev/null ||
    fatal "data directory \"$PGDATA\" is missing or not writable by uid $(id -u)" \
          "Mount a volume there that uid $(id -u) can write (fresh named volumes inherit the image's ownership)."
if [ -f "$PGDATA/PG_VERSION" ]; then
    have="$(cat "$PGDATA/PG_VERSION")"
    [ "$have" = "$version" ] ||
        fatal "database files are incompatible with server" \
              "The data directory was initialized by PostgreSQL version $have, which is not compatible with this version $version."
    log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
else
    log "initializing database cluster in $PGDATA (version $version)"
    chmod 0700 "$PGDATA" 2>/dev/null
    mkdir -p "$PGDATA/base" || fatal "cannot initialize $PGDATA"
    # Role and database names only; the password is never written or logged.
    printf 'user=%s\ndatabase=%s\n' "${POSTGRES_USER:-postgres}" "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
        >"$PGDATA/base/rivetos-fake-cluster"
    echo "$version" >"$PGDATA/PG_VERSION" || fatal "cannot write $PGDATA/PG_VERSION"
fi

# --- shared volume ---------------------------------------------------------
# Field 5 of mountinfo is the mount point.
if awk '$5 == "/rivet-shared" { found = 1 } END { exit !found }' /proc/self/mountinfo 2>/dev/null; then
    for d in plans docs status whiteboard; do
        mkdir -p "/rivet-shared/$d" 2>/dev/null || log "WARNING:  cannot create /rivet-shared/$d (uid $(id -u))"
    done
fi

# --- serve -----------------------------------------------------------------
nc_pid=""
stop() {
    trap '' TERM INT QUIT
    log "LOG:  received $1 shutdown request"
    if [ -n "$nc_pid" ]; then kill "$nc_pid" 2>/dev/null; wait "$nc_pid" 2>/dev/null; fi
    # Sessions finish within a couple of seconds anyway; give them ~1 s.
    i=0
    while [ "$i" -lt 10 ] && ps 2>/dev/null | grep -q '[p]g-session'; do sleep 0.1; i=$((i + 1)); done
    log "LOG:  database system is shut down"
    exit 0
}
trap 'stop smart' TERM
trap 'stop fast' INT
trap 'stop immediate' QUIT

export POSTGRES_VERSION="$version"
fails=0
while :; do
    # -l repeated: persistent server; busybox also uses the count as listen() backlog.
    nc -llllllllllllllll -p "$port" -e /usr/local/bin/pg-session &
    nc_pid=$!
    log "LOG:  listening on IPv4 address \"0.0.0.0\", port $port"
    log "LOG:  database system is ready to accept connections"
    started="$(date +%s)"
    wait "$nc_pid"
    rc=$?
    # Only reached if the listener died on its own (e.g. port in use).
    if [ $(( $(date +%s) - started )) -lt 5 ]; then fails=$((fails + 1)); else fails=1; fi
    [ "$fails" -ge 5 ] && fatal "listener on port $port keeps failing (last status $rc)"
    log "LOG:  listener exited with status $rc; restarting"
    sleep 1 & wait $!
done
