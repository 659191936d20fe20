#!/usr/bin/env bash
# The external-types check (issue 17): no published crate exposes a third-party type in its
# public API by accident.
#
# For each crate under crates/ that publishes (not `publish = false`), cargo-check-external-types
# lists every type from another crate that appears in a public signature, minus the ones its
# allow list, crates/<crate>/external-types.toml, names (each entry there says why the type is
# part of the API). What remains must be a type of another ravelin crate that this crate
# re-exports from a public module, so a user can name it without adding that crate as a
# dependency; anything else fails the check. (Workspace crates are therefore never in an allow
# list: re-exporting is the rule for them, and this script checks it in the rustdoc JSON.)
#
# The tool reads rustdoc's JSON output, which only a nightly toolchain writes, in a format that
# changes between nightlies: TOOL_VERSION must be a release whose `rustdoc-types` matches the
# installed nightly (0.5.0 reads the JSON of nightly-2026-05-19, format 57). CI machines have a
# nightly toolchain; on a machine without one this script warns loudly and passes, so a
# stable-only checkout can still run .ci/run.
#
# Usage: .ci/external-types.sh [crate-dir-name…]   (default: every published crate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_INCREMENTAL=0

TOOL_VERSION=0.5.0
NIGHTLY=${RAVELIN_NIGHTLY:-nightly}

if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
  cat >&2 <<WARN

!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! WARNING: no '$NIGHTLY' toolchain installed: the external-types check did NOT run.
!!! It needs rustdoc's JSON output (nightly only). CI machines have a nightly toolchain; here,
!!! install one with: rustup toolchain install nightly
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

WARN
  exit 0
fi
nightly_version=$(rustup run "$NIGHTLY" rustc --version)
echo "nightly: $nightly_version"
# The tool reads one rustdoc JSON format: with another nightly it would fail on the format, not
# on the API. Say so plainly instead (update TOOL_VERSION and NIGHTLY_DATE together).
NIGHTLY_DATE=2026-05-19
if [[ "$nightly_version" != *"$NIGHTLY_DATE"* ]]; then
  cat >&2 <<WARN

!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! WARNING: the external-types check did NOT run: cargo-check-external-types $TOOL_VERSION
!!! reads the rustdoc JSON of the nightly of $NIGHTLY_DATE, and '$NIGHTLY' is: $nightly_version
!!! Point RAVELIN_NIGHTLY at that nightly, or move TOOL_VERSION and NIGHTLY_DATE together.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

WARN
  exit 0
fi

if ! cargo-check-external-types --version 2>/dev/null | grep -qx "cargo-check-external-types $TOOL_VERSION"; then
  cargo install --locked cargo-check-external-types --version "$TOOL_VERSION"
fi

metadata=$(cargo metadata --no-deps --format-version 1)
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")
if [ $# -gt 0 ]; then
  crates=("$@")
else
  # Every package under crates/ that publishes: `publish = false` shows as an empty list.
  mapfile -t crates < <(python3 -c '
import json, os, sys
root = os.getcwd()
for p in json.load(sys.stdin)["packages"]:
    d = os.path.relpath(os.path.dirname(p["manifest_path"]), root)
    if d.startswith("crates/") and p.get("publish") != []:
        print(os.path.basename(d))
' <<<"$metadata" | sort)
fi

# The features to document a crate with: all of them, except those that only turn on a binary
# (`required-features` of a [[bin]], e.g. botscore's `cli`): the library API is the same with or
# without them, and the tool cannot document a package whose binary is enabled (it passes
# rustdoc arguments without `--lib`).
features_of() {
  python3 -c '
import json, sys
name = sys.argv[1]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name:
        bins = {f for t in p["targets"] if "bin" in t["kind"] for f in t.get("required-features", [])}
        if bins:
            keep = sorted(f for f in p["features"] if f != "default" and f not in bins)
            print(" ".join(["--no-default-features", "--features", ",".join(keep)]))
        else:
            print("--all-features")
' "$1" <<<"$metadata"
}

report=$(mktemp)
trap 'rm -f "$report"' EXIT
failed=()
for crate in "${crates[@]}"; do
  printf '\n--- %s\n' "$crate"
  config="crates/$crate/external-types.toml"
  if [ ! -f "$config" ]; then
    echo "$config is missing: every published crate has an allow list" >&2
    failed+=("$crate")
    continue
  fi
  # markdown-table lists what the allow list does not cover (and exits 0 either way); the
  # script below decides.
  read -r -a features <<<"$(features_of "$crate")"
  if ! cargo "+$NIGHTLY" check-external-types "${features[@]}" \
    --manifest-path "crates/$crate/Cargo.toml" --config "$config" \
    --output-format markdown-table >"$report"; then
    cat "$report" >&2
    failed+=("$crate")
    continue
  fi
  if ! python3 - "$report" "$target_dir/doc/${crate//-/_}.json" "$crate" <<'PY'
import json, sys

report, doc, crate = sys.argv[1:4]
rows = []
for line in open(report):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0] not in ("Crate", "---"):
        rows.append(cells)

# The other ravelin crates' items this crate re-exports from its root or any public module
# (walked from the root, so a `pub use` inside a private module does not count).
krate = json.load(open(doc))
index, paths = krate["index"], krate["paths"]
reexported = set()
seen = set()
stack = [krate["root"]]
while stack:
    module_id = stack.pop()
    if module_id in seen:
        continue
    seen.add(module_id)
    for child in index[str(module_id)]["inner"]["module"]["items"]:
        item = index.get(str(child))
        if item is None or item["visibility"] != "public":
            continue
        inner = item["inner"]
        if "module" in inner:
            stack.append(child)
        elif "use" in inner and inner["use"]["id"] is not None:
            target = paths.get(str(inner["use"]["id"]))
            if target is not None:
                reexported.add("::".join(target["path"]))
                if target["kind"] == "module":
                    # A re-exported module: everything under it is nameable through it.
                    reexported.add("::".join(target["path"]) + "::")

def nameable(path):
    return path in reexported or any(
        r.endswith("::") and path.startswith(r) for r in reexported
    )

bad = {}
for krate_name, path, used_in in rows:
    if krate_name.startswith("ravelin_"):
        if nameable(path):
            continue
        why = "a ravelin type this crate does not re-export (add a `pub use` to its lib.rs)"
    else:
        why = "a third-party type not in the allow list"
    bad.setdefault((path, why), []).append(used_in)

for (path, why), places in sorted(bad.items()):
    print(f"{crate}: {path}: {why}\n    used in {', '.join(sorted(set(places))[:5])}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"{crate}: ok ({len(rows)} uses of re-exported ravelin types)")
PY
  then
    failed+=("$crate")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nexternal-types check failed for: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nexternal-types check passed: %s\n' "${crates[*]}"
