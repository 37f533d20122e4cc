#!/bin/sh
# Installs the real directories the postern-directory tests start: OpenLDAP (slapd with
# the ppolicy overlay) and a Samba AD domain controller. Debian/Ubuntu, run as root.
#
# The tests start their own slapd and samba processes; the system services the packages
# install must NOT run (they would hold ports 389/636/88/445), so this script stops and
# disables them again.
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps.sh: run as root (apt-get install)" >&2
    exit 1
fi

need=""
command -v slapd >/dev/null 2>&1 || need="$need slapd"
command -v ldapsearch >/dev/null 2>&1 || need="$need ldap-utils"
command -v samba >/dev/null 2>&1 || need="$need samba samba-ad-dc winbind"
command -v samba-tool >/dev/null 2>&1 || need="$need samba-ad-dc"
command -v kinit >/dev/null 2>&1 || need="$need krb5-user"
command -v smbclient >/dev/null 2>&1 || need="$need smbclient"

if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # No initial slapd database and no prompts: the tests write their own slapd.conf.
    echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
    # Kerberos client prompts for a default realm; the tests never use the system krb5.conf.
    echo 'krb5-config krb5-config/default_realm string EXAMPLE.TEST' | debconf-set-selections
    apt-get update -q
    apt-get install -y -q slapd ldap-utils samba samba-ad-dc krb5-user winbind smbclient
fi

# Stop whatever the packages' init scripts started, and keep it from starting at boot.
for svc in slapd samba-ad-dc smbd nmbd winbind; do
    if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done
# System daemons only: those whose pid file lives under /run, and only if the pid still
# names that daemon (a stale file may name an unrelated process by now). The tests' own
# slapd and samba keep their pid files in their own directories.
stop_pidfile() {
    [ -f "$1" ] || return 0
    pid=$(cat "$1" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$2" ]; then
        kill "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}
stop_pidfile /run/slapd/slapd.pid slapd
stop_pidfile /run/samba/samba.pid samba
stop_pidfile /run/samba/smbd.pid smbd
stop_pidfile /run/samba/nmbd.pid nmbd
stop_pidfile /run/samba/winbindd.pid winbindd

echo "install-test-deps.sh: slapd $(slapd -VV 2>&1 | head -n1 | sed 's/.*slapd //;s/ .*//'), samba $(samba --version)"
