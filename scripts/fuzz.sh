#!/usr/bin/env bash
# The fuzzing campaign: runs each fuzz target in turn, one job on one core, over a persistent
# corpus (fuzz/corpus/<target>, git-ignored, seeded from fuzz/regressions/<target>), and writes
# a markdown table of executions, exec/s, corpus size and coverage (libFuzzer's final cov/ft).
#
#   scripts/fuzz.sh [--time SECONDS] [--runs N] [--out FILE] [--nice N] [TARGET...]
#
# --time  the most seconds per target (default 600); --runs  stop a target after N executions
# first (default: no limit, the time decides); --out  the table (default
# fuzz/artifacts/campaign-<date>.md); --nice  the niceness of the fuzzer (default 10); no TARGET
# runs every target of `cargo fuzz list`. A crash stops that target only: its reproducer is
# under fuzz/artifacts/<target>/ and the table names it; the script exits 1 at the end.
# Logs: fuzz/artifacts/<target>/campaign.log. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_INCREMENTAL=0

time_per_target=600
runs=0
niceness=10
out="fuzz/artifacts/campaign-$(date -u +%Y%m%dT%H%M%SZ).md"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_per_target="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --nice) niceness="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# One build for every target: `cargo fuzz run` below then only runs.
cargo fuzz build -s none

mkdir -p "$(dirname "$out")"
{
  echo "Campaign of $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m), $(nproc) cores" \
    "($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo 'cpu unknown')," \
    "$(rustc --version)); one job per target, nice $niceness, at most ${time_per_target} s" \
    "$([ "$runs" -gt 0 ] && echo "or $runs executions") each."
  echo
  echo "| target | executions | exec/s | seconds | corpus entries | cov | ft | peak RSS MB | result |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
} >"$out"

failed=0
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  seeds="fuzz/regressions/$target"
  log="fuzz/artifacts/$target/campaign.log"
  mkdir -p "$corpus" "$seeds" "fuzz/artifacts/$target"
  limits=(-max_total_time="$time_per_target" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10)
  [ "$runs" -gt 0 ] && limits+=(-runs="$runs")
  echo "=== $target ($(date -u +%H:%M:%S))"
  started=$(date +%s)
  # The first corpus directory receives new inputs; the regression corpus is only read.
  if nice -n "$niceness" cargo fuzz run -s none "$target" "$corpus" "$seeds" -- "${limits[@]}" \
    >"$log" 2>&1; then
    result=ok
  else
    reproducer=$(grep -oE '(Test unit|artifact) written to [^ ]+' "$log" | tail -n1 | awk '{print $NF}' || true)
    result="**crash**: ${reproducer:-see $log}"
    failed=1
  fi
  seconds=$(($(date +%s) - started))
  stat() { grep -E "^stat::$1:" "$log" | tail -n1 | awk '{print $2}' || true; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  rss=$(stat peak_rss_mb)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  entries=$(find "$corpus" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$target" "${execs:-?}" "${rate:-?}" \
    "$seconds" "$entries" "${cov:-?}" "${ft:-?}" "${rss:-?}" "$result" >>"$out"
  tail -n1 "$out"
done

echo
cat "$out"
exit "$failed"
