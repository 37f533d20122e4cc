#!/usr/bin/env bash
# Runs every fuzz target briefly over its committed corpus (fuzz/corpus/<target>)
# and then on fresh inputs, failing on the first crash. Called by .ci/run; see
# docs/fuzzing.md for the long runs.
#
#   fuzz/smoke.sh                 every target, FUZZ_SMOKE_SECS (default 4) seconds each
#   fuzz/smoke.sh pki_csr edge_path   only these
#
# The corpus is copied to a scratch directory first: a smoke run never writes
# into the repository.
set -euo pipefail
cd "$(dirname "$0")"

secs="${FUZZ_SMOKE_SECS:-4}"

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

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    if [[ ! -d "corpus/$target" ]] || [[ -z "$(ls -A "corpus/$target")" ]]; then
        echo "fuzz smoke: $target has no seed corpus in fuzz/corpus/$target" >&2
        exit 1
    fi
    mkdir -p "$scratch/$target"
    cp "corpus/$target"/* "$scratch/$target/"
    echo "fuzz smoke: $target (${secs} s)"
    # -rss_limit_mb: ASan's shadow memory on top of a target's own use.
    status=0
    cargo +nightly fuzz run --debug-assertions "$target" "$scratch/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 >"$scratch/$target.log" 2>&1 || status=$?
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$scratch/$target.log" || true
    if ((status != 0)); then
        tail -n 60 "$scratch/$target.log" >&2
        echo "fuzz smoke: $target FAILED (exit $status); the crashing input is under fuzz/artifacts/$target" >&2
        exit "$status"
    fi
done
echo "fuzz smoke: ${#targets[@]} targets, no crash, $((SECONDS - started)) s in all"
