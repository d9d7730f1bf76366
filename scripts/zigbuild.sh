#!/usr/bin/env bash
# cargo-zigbuild with zig, both from PyPI at pinned versions, in a virtualenv of their own
# (target/tools/zig unless BIT_ZIG_VENV says otherwise), installed on first use:
#
#   scripts/zigbuild.sh zigbuild --release --target aarch64-unknown-linux-gnu.2.17 --workspace --bins
#   scripts/zigbuild.sh test --release --target aarch64-unknown-linux-gnu.2.17 -p bit-engine
#
# The release binaries for the boards are built this way: zig links them against glibc 2.17's
# symbol versions (the ".2.17" of the target), so they run on every glibc from 2.17 on
# (Ubuntu 18.04 / JetPack 4, Raspberry Pi OS bullseye, ...), which a build with Debian 12's
# cross gcc (glibc 2.36) does not. Needs python3 with venv and pip; the wheels carry the
# binaries (about 50 MB for zig).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
venv=${BIT_ZIG_VENV:-${CARGO_TARGET_DIR:-$PWD/target}/tools/zig}
stamp="$venv/.versions"
want="cargo-zigbuild==$CARGO_ZIGBUILD_VERSION ziglang==$ZIGLANG_VERSION"
if [ ! -x "$venv/bin/cargo-zigbuild" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "zigbuild.sh: installing $want into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # two requirement words
    "$venv/bin/pip" install --quiet --disable-pip-version-check $want
    echo "$want" >"$stamp"
fi
# cargo-zigbuild runs zig as `python -m ziglang` from the interpreter on PATH.
PATH="$venv/bin:$PATH" exec cargo-zigbuild "$@"
