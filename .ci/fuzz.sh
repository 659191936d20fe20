#!/usr/bin/env bash
# CI fuzz smoke (issue 17): every fuzz target for a bounded time over a fresh copy of its committed
# regression corpus (fuzz/regressions/<target>/: seeds and every crash input found, minimized), so
# a parser change that brings back a fixed crash, or a new shallow one, fails CI. Whole run,
# including installing cargo-fuzz and building the targets, stays under ten minutes on the 2-core
# CI machine (docs/fuzzing.md has the measurement).
#
# FUZZ_SECONDS (default 15): seconds per target. A crash fails the run after the other targets
# ran; its reproducer is under fuzz/artifacts/<target>/ and, base64-encoded, in the log.
# The campaign with figures is scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_INCREMENTAL=0
seconds="${FUZZ_SECONDS:-15}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

# One build for all targets (stable: no sanitizer); each run below then only checks it is fresh.
cargo fuzz build -s none

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in $(cargo fuzz list); do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  # A copy: the run adds what it finds to its first corpus directory, and the committed
  # regression corpus must not grow in CI.
  if [ -d "fuzz/regressions/$target" ]; then
    cp -R "fuzz/regressions/$target/." "$corpus/"
  fi
  log="$work/$target.log"
  printf '%-20s %3s entries, %s s ... ' "$target" "$(find "$corpus" -type f | wc -l)" "$seconds"
  if cargo fuzz run -s none "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units:' "$log" | awk '{print "ok, " $2 " executions"}'
  else
    echo "FAILED"
    tail -n 40 "$log"
    reproducer=$(grep -oE '(Test unit|artifact) written to [^ ]+' "$log" | tail -n1 | awk '{print $NF}' || true)
    if [ -n "$reproducer" ] && [ -f "$reproducer" ]; then
      echo "reproducer: $reproducer"
      echo "  run it:   cargo fuzz run -s none $target $reproducer"
      echo "  base64:   $(head -c 8192 "$reproducer" | base64 -w0)"
    fi
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
