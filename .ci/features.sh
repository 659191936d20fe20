#!/usr/bin/env bash
# Every feature of every workspace crate builds alone (issue 17): `cargo hack check --each-feature
# --no-dev-deps --workspace` checks each crate with no features, with its default features, with
# each feature by itself and with all of them, without dev-dependencies (whose features would
# otherwise unify into the build and hide a feature that forgot what it needs: the facade's
# dev-dependency on ravelin-ratelimit with `redis`, botscore's on itself with `cli`). Then the
# facade's own targets, each feature alone.
#
# `--no-dev-deps` works by rewriting the members' Cargo.toml files while it runs. So that a
# developer's (or another tool's) edits to those files are never overwritten when it restores
# them, the check runs on a copy of the working tree (tracked and untracked, not ignored, files:
# ~7 MB), in the usual target directory so dependencies already built by `cargo clippy` are reused.
# The copy always has the same path (target/features-tree), so the members' artifacts of one run
# replace the last run's instead of piling up under a new path each time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL=0

if ! command -v cargo-hack >/dev/null 2>&1; then
  cargo install --locked cargo-hack
fi

root=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
copy="$root/target/features-tree"
rm -rf "$copy"
mkdir -p "$copy"
trap 'rm -rf "$copy"' EXIT
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$copy"

cd "$copy"
# Extra arguments go to cargo hack (say `--keep-going` to see every failure at once).
cargo hack check --each-feature --no-dev-deps --workspace "$@"
# The facade's examples, tests and benches with each feature alone: a target whose
# `required-features` are met must build with just those (with dev-dependencies this time; a
# target whose features are not met is skipped).
cargo hack check --each-feature --all-targets -p ravelin "$@"
