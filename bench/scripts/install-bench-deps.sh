#!/bin/sh
# Installs what `postern-bench proxy` measures against, if missing:
#   nginx and wrk (Debian packages), rathole (`cargo install rathole --locked`).
# Idempotent: run it as often as you like; it installs only what is absent.
# apt-get needs root (or sudo); rathole goes to ~/.cargo/bin.
set -eu

need_apt=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt="$need_apt nginx"
command -v wrk >/dev/null 2>&1 || need_apt="$need_apt wrk"

if [ -n "$need_apt" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "need root (or sudo) to install:$need_apt" >&2
            exit 1
        fi
    fi
    echo "installing:$need_apt"
    $sudo apt-get update
    # shellcheck disable=SC2086 # the list is meant to split into words
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $need_apt
    # The Debian package starts a system nginx on port 80; the bench runs its own.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
else
    echo "nginx and wrk: present"
fi

if command -v rathole >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/rathole" ]; then
    echo "rathole: present"
else
    echo "installing rathole (cargo install rathole --locked; a few minutes)"
    # rathole 0.5.0's lock file pins time 0.3.29, which newer compilers refuse
    # (Rust >= 1.80: "type annotations needed for Box<_>"); then resolve afresh.
    if ! cargo install rathole --locked; then
        echo "the locked build failed; retrying with current dependency versions"
        cargo install rathole
    fi
fi
