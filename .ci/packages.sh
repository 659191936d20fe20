#!/usr/bin/env bash
# The crates are ready for crates.io (issue 17): every published crate's package carries both
# license files, and `cargo publish --dry-run --workspace` packages each one and builds it from
# its package against the other crates' packages (what a user downloading them gets).
# Runs on a clean clone: no --allow-dirty (a dirty tree fails here, as it would on release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL=0

# The published members: `publish = false` (ravelin-edge, ravelin-test-support) shows as [].
published=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p.get("publish") != []:
        print(p["name"])
')
if [ -z "$published" ]; then
  echo "no publishable crate found" >&2
  exit 1
fi

missing=0
for crate in $published; do
  files=$(cargo package --list --quiet -p "$crate")
  for license in LICENSE-MIT LICENSE-APACHE; do
    if ! grep -qx "$license" <<<"$files"; then
      echo "$crate: its package has no $license" >&2
      missing=1
    fi
  done
done
if [ "$missing" -ne 0 ]; then
  exit 1
fi
echo "license files in every package: $(tr '\n' ' ' <<<"$published")"

# The verification builds each package against the others through a temporary local registry,
# which cargo unpacks under $CARGO_HOME/registry/src/-<hash of its path>/ and then reuses as long
# as the version is unchanged, even after the crate did change: a second run would verify against
# the first run's copies. Remove those unpacked copies (cargo extracts them again from the new
# .crate files); crates.io's own cache (registry/src/index.crates.io-*) is not touched.
for stale in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/ravelin*; do
  if [ -e "$stale" ]; then
    rm -rf "$stale"
  fi
done

cargo publish --dry-run --workspace
