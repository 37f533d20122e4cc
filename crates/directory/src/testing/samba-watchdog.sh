#!/bin/sh
# Runs a test run's Samba AD DC in its network namespace (see samba.rs).
# Usage: samba-watchdog.sh ROOT CONTROL_LOCK LEASE_LOCK IDLE_SECS NETNS OWNER_PID
# Tests hold a shared lock on LEASE_LOCK while they use samba. When the run is over
# (OWNER_PID, the process that runs its tests, has gone), or once nobody has held a
# lease for IDLE_SECS, this stops samba, deletes NETNS and removes ROOT, holding
# CONTROL_LOCK so that no test of the run starts using the instance meanwhile.
ROOT=$1
CONTROL=$2
LEASE=$3
IDLE=$4
NETNS=$5
OWNER=$6

ip netns exec "$NETNS" samba --configfile="$ROOT/etc/smb.conf" --foreground --no-process-group >"$ROOT/samba.out" 2>&1 &
SAMBA=$!
echo "$SAMBA" >"$ROOT/samba.pid"

# Whether process $1 exists and is not a zombie (kill -0 succeeds on zombies).
running() {
    state=$(sed -n 's/^.*) \([A-Za-z]\) .*$/\1/p' "/proc/$1/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# stop REASON: stops samba and its workers (this script's process group, not this
# shell), waits until every one has gone, then removes the namespace and directory.
stop() {
    trap '' TERM
    members=$(pgrep -g "$$" | grep -vx "$$")
    kill -TERM "-$$" 2>/dev/null
    n=0
    while [ "$n" -lt 100 ]; do
        alive=""
        for p in $members; do running "$p" && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.1 # poll pause, bounded above
        n=$((n + 1))
    done
    [ -n "$alive" ] && kill -KILL $alive 2>/dev/null
    wait "$SAMBA" 2>/dev/null
    ip netns del "$NETNS" 2>/dev/null
    rm -rf "$ROOT"
    echo "stopped samba: $1"
    exit 0
}
trap 'stop "asked to"' TERM

exec 9>>"$CONTROL"
idle=0
while running "$SAMBA"; do
    sleep 1 # the lease and owner check period
    if ! running "$OWNER"; then
        # The run is over: no test of it can come, so its lock files go too.
        rm -f "$CONTROL" "$LEASE"
        stop "the test run ended"
    fi
    if flock -n -x "$LEASE" true; then idle=$((idle + 1)); else idle=0; fi
    if [ "$idle" -ge "$IDLE" ] && flock -n -x 9; then
        # Re-check under the control lock: a test may have just taken a lease.
        if flock -n -x "$LEASE" true; then stop "${IDLE}s without a lease"; fi
        flock -u 9
        idle=0
    fi
done
ip netns del "$NETNS" 2>/dev/null
echo "samba exited by itself"
