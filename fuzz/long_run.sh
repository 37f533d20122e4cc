#!/usr/bin/env bash
# The long runs recorded in docs/fuzzing.md: each target until it has executed
# RUNS inputs (default 10 million) or MAX_SECS seconds have passed (default
# 1800), over a scratch copy of its corpus. Prints one Markdown table row per
# target: executions, seconds, executions per second, corpus size at the end,
# peak memory, crashes.
#
#   fuzz/long_run.sh                      every target, one after the other
#   RUNS=1000000 fuzz/long_run.sh pki_csr  one target, fewer runs
#   SANITIZER=none fuzz/long_run.sh translate_html
#                                         without AddressSanitizer: three to
#                                         four times the inputs per second
set -euo pipefail
cd "$(dirname "$0")"

sanitizer="${SANITIZER:-address}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/postern"
# Each sanitizer builds into a directory of its own: switching would rebuild
# everything in one.
if [[ "$sanitizer" == address ]]; then
    export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$cache/fuzz-target}"
else
    export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$cache/fuzz-$sanitizer}"
fi
runs="${RUNS:-10000000}"
max_secs="${MAX_SECS:-1800}"
work="${WORK:-$(mktemp -d)}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz >&2
fi

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# Built once, then run directly: a rebuild between targets would pick up
# whatever the work tree holds by then.
cargo +nightly fuzz build --sanitizer "$sanitizer" --debug-assertions >&2
bin="$work/bin"
mkdir -p "$bin" "$work/artifacts"
for target in "${targets[@]}"; do
    cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/$target" "$bin/"
done

for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    cp "corpus/$target"/* "$work/$target/"
    log="$work/$target.log"
    started=$SECONDS
    status=0
    "$bin/$target" "$work/$target" -artifact_prefix="$work/artifacts/$target-" \
        -runs="$runs" -max_total_time="$max_secs" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
    secs=$((SECONDS - started))
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    execs="$(stat number_of_executed_units)"
    crashes=0
    ((status == 0)) || crashes="1 (exit $status; see $log)"
    printf '| `%s` | %s | %s | %s | %s | %s | %s |\n' "$target" "${execs:-?}" "$secs" \
        "$(stat average_exec_per_sec)" "$(ls "$work/$target" | wc -l)" "$(stat peak_rss_mb)" "$crashes"
done
