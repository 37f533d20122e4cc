#!/bin/sh
# Runs the shared Samba AD DC of the postern-directory tests (see samba.rs).
# Usage: samba-watchdog.sh ROOT CONTROL_LOCK LEASE_LOCK IDLE_SECS
# Tests hold a shared lock on LEASE_LOCK while they use samba. Once nobody has held it
# for IDLE_SECS, this stops samba and removes ROOT, holding CONTROL_LOCK so that no test
# starts using the instance meanwhile.
ROOT=$1
CONTROL=$2
LEASE=$3
IDLE=$4

samba --configfile="$ROOT/etc/smb.conf" --foreground --no-process-group >"$ROOT/samba.out" 2>&1 &
SAMBA=$!
echo "$SAMBA" >"$ROOT/samba.pid"

# Whether process $1 exists and is not a zombie (kill -0 succeeds on zombies).
running() {
    state=$(sed -n 's/^.*) \([A-Za-z]\) .*$/\1/p' "/proc/$1/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop() {
    # samba and its workers run in this script's process group: stop all of them, not
    # this shell, and wait until every one has gone before removing their directory.
    trap '' TERM
    members=$(pgrep -g "$$" | grep -vx "$$")
    kill -TERM "-$$" 2>/dev/null
    n=0
    while [ "$n" -lt 100 ]; do
        alive=""
        for p in $members; do running "$p" && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1
        n=$((n + 1))
    done
    [ -n "$alive" ] && kill -KILL $alive 2>/dev/null
    wait "$SAMBA" 2>/dev/null
    rm -rf "$ROOT"
    echo "stopped samba after ${IDLE}s without a lease"
    exit 0
}
trap stop TERM

exec 9>>"$CONTROL"
idle=0
while running "$SAMBA"; do
    sleep 1
    if flock -n -x "$LEASE" true; then idle=$((idle + 1)); else idle=0; fi
    if [ "$idle" -ge "$IDLE" ] && flock -n -x 9; then
        # Re-check under the control lock: a test may have just taken a lease.
        if flock -n -x "$LEASE" true; then stop; fi
        flock -u 9
        idle=0
    fi
done
echo "samba exited by itself"
