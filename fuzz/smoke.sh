#!/usr/bin/env bash
# Runs every fuzz target briefly over a copy of its committed corpus
# (fuzz/corpus/<target>) and then on fresh inputs, failing on the first crash.
# Called by .ci/run; see docs/fuzzing.md for the long runs.
#
#   fuzz/smoke.sh                     every target, FUZZ_SMOKE_SECS (default 3) s each
#   fuzz/smoke.sh pki_csr edge_path   only these
#
# The build goes to FUZZ_TARGET_DIR (default: a cache directory outside the
# checkout), so that CI on the same machine rebuilds only what changed; a cold
# build of the targets takes minutes (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SMOKE_SECS:-3}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/postern/fuzz-target}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

started=$SECONDS
cargo +nightly fuzz build --debug-assertions
echo "fuzz smoke: build took $((SECONDS - started)) s"

bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p artifacts
for target in "${targets[@]}"; do
    if [[ -z "$(ls -A "corpus/$target" 2>/dev/null)" ]]; then
        echo "fuzz smoke: $target has no seed corpus in fuzz/corpus/$target" >&2
        exit 1
    fi
    mkdir -p "$scratch/$target" "artifacts/$target"
    cp "corpus/$target"/* "$scratch/$target/"
    status=0
    # -rss_limit_mb: ASan's shadow memory on top of a target's own use.
    "$bin/$target" "$scratch/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 >"$scratch/$target.log" 2>&1 || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")"
    if ((status != 0)); then
        tail -n 60 "$scratch/$target.log" >&2
        echo "fuzz smoke: $target FAILED (exit $status); the input is in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
    echo "fuzz smoke: $target: ${runs:-?} inputs in ${secs} s, no crash"
done
echo "fuzz smoke: ${#targets[@]} targets, no crash, $((SECONDS - started)) s in all"
