#!/usr/bin/env bash
# The vendored tract crates as a patch series on the crates.io releases.
#
#   third_party/patches.sh verify [--tests]
#       Downloads each pristine release (checked against its pinned SHA-256), applies
#       third_party/patches/<crate>/*.patch in order, and requires the result to equal
#       third_party/<crate> byte for byte. --tests then runs the guard tests (the packing
#       layouts, the exact integer convolutions, thread-count equality, the alloc bound).
#   third_party/patches.sh port <crate> <version> <sha256>
#       Applies the series to another release into target/tract-port/<crate>-<version>,
#       reporting each patch that does not apply, for moving to a new tract (README).
set -euo pipefail
cd "$(dirname "$0")/.."
here=third_party
work=target/tract-patches
declare -A version=([tract-linalg]=0.23.9 [tract-core]=0.23.9)
declare -A sha256=(
  [tract-linalg]=ca57ed3a2f6293e7866c6ceed7c6ca3413b4e083a892a00a79f5e9b607154982
  [tract-core]=bb76580817f14ceb9f054d3732c1d09575940e88fa5bbfc85c3eae34482bb089
)
# Files of the published archives that are not vendored: cargo's own metadata, and in
# tract-linalg 0.23.9 two stray core dumps and a spreadsheet.
prune() {
  rm -f "$1/Cargo.toml.orig" "$1/.cargo_vcs_info.json" "$1"/core.[0-9]* "$1"/*.xlsx
  printf '{"v":1}' > "$1/.cargo-ok"
}

# pristine <crate> <version> <sha256> <dir>: the published crate, pruned, in <dir>.
pristine() {
  local crate=$1 ver=$2 sum=$3 dir=$4 archive="$work/$1-$2.crate"
  mkdir -p "$work"
  if [ ! -f "$archive" ] || ! echo "$sum  $archive" | sha256sum -c --quiet 2>/dev/null; then
    curl -sSfL -o "$archive.part" "https://static.crates.io/crates/$crate/$crate-$ver.crate"
    mv "$archive.part" "$archive"
  fi
  echo "$sum  $archive" | sha256sum -c --quiet || { echo "$archive: SHA-256 mismatch" >&2; exit 1; }
  rm -rf "$dir" && mkdir -p "$dir"
  tar xzf "$archive" -C "$dir" --strip-components=1
  prune "$dir"
}

# apply <crate> <dir>: the series onto <dir>; returns non-zero at the first patch that fails.
apply() {
  local crate=$1 dir=$2 p
  for p in "$here/patches/$crate"/*.patch; do
    [ -e "$p" ] || continue
    if ! patch -d "$dir" -p1 --quiet --no-backup-if-mismatch --forward < "$p"; then
      echo "$p: does not apply" >&2
      return 1
    fi
  done
}

case "${1:-}" in
  verify)
    for crate in tract-linalg tract-core; do
      dir="$work/$crate"
      pristine "$crate" "${version[$crate]}" "${sha256[$crate]}" "$dir"
      apply "$crate" "$dir"
      if diff -r "$dir" "$here/$crate" >"$work/$crate.diff"; then
        echo "$crate ${version[$crate]} + $(ls "$here/patches/$crate"/*.patch | wc -l) patches = third_party/$crate"
      else
        echo "third_party/$crate differs from ${version[$crate]} + its patches (see $work/$crate.diff)" >&2
        exit 1
      fi
      # Every hunk carries its patch's marker.
      for p in "$here/patches/$crate"/*.patch; do
        id=$(basename "$p" .patch | cut -d- -f1)
        hunks=$(grep -c '^@@' "$p")
        marked=$(awk '/^@@/{if(h)print m; h=1; m=0} /^\+.*bit-edge patch '"$id"'/{m=1} END{if(h)print m}' "$p" | grep -c 1 || true)
        [ "$hunks" = "$marked" ] || { echo "$p: $((hunks - marked)) of $hunks hunks carry no 'bit-edge patch $id' marker" >&2; exit 1; }
      done
    done
    if [ "${2:-}" = --tests ]; then
      cargo test --release -p bit-runtime --test packing --test alloc
      cargo test --release -p bit-e2e --test int8
    fi
    ;;
  port)
    crate=${2:?crate} ver=${3:?version} sum=${4:?sha256}
    dir="target/tract-port/$crate-$ver"
    pristine "$crate" "$ver" "$sum" "$dir"
    for p in "$here/patches/$crate"/*.patch; do
      if patch -d "$dir" -p1 --no-backup-if-mismatch --forward < "$p" >"$dir.$(basename "$p").log" 2>&1; then
        echo "applies: $(basename "$p")"
      else
        echo "FAILS:   $(basename "$p") (see $dir.$(basename "$p").log and the .rej files)"
      fi
    done
    echo "ported tree: $dir (review, test, then copy over third_party/$crate and regenerate the patches)"
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
