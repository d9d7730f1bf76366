#!/usr/bin/env bash
# Builds the camera-classifier daemon and bit-tool for a board and packages them as a .deb:
#
#   scripts/package.sh arm64    # Raspberry Pi 4/5 (64-bit Raspberry Pi OS), Jetson (L4T)
#   scripts/package.sh armhf    # Raspberry Pi 2/3/4 with 32-bit Raspberry Pi OS
#   scripts/package.sh amd64    # this machine (for testing the package)
#
# Output: target/deb/camera-classifier_<version>_<arch>.deb. The board builds go through
# scripts/zigbuild.sh (cargo-zigbuild and zig from PyPI, installed on first use) for glibc
# 2.17, so the package installs on every release from Ubuntu 18.04 / JetPack 4 on; stripping
# needs the target's binutils (README "Deploying on a board"). No host-specific CPU flags are
# used, so the binaries run on every CPU of the family (tract picks its kernels at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: scripts/package.sh arm64|armhf|amd64}
case $arch in
  arm64) target=aarch64-unknown-linux-gnu; strip=aarch64-linux-gnu-strip ;;
  armhf) target=armv7-unknown-linux-gnueabihf; strip=arm-linux-gnueabihf-strip ;;
  amd64) target=x86_64-unknown-linux-gnu; strip="strip" ;;
  *) echo "package.sh: unknown architecture '$arch' (arm64, armhf or amd64)" >&2; exit 2 ;;
esac
command -v "$strip" >/dev/null || { echo "package.sh: $strip not found (apt-get install binutils for the target; see README)" >&2; exit 1; }
tdir=${CARGO_TARGET_DIR:-target}
# The same command as CI's build of every binary: cargo unifies dependency features over the
# packages it builds, so building the daemon alone would compile tract again.
if [ "$arch" = amd64 ]; then
  cargo build --release --workspace --bins
  out="$tdir/release"
else
  scripts/zigbuild.sh zigbuild --release --target "$target.2.17" --workspace --bins
  out="$tdir/$target/release"
fi
mkdir -p "$tdir/deb"
# The release profile keeps line tables for backtraces (about 200 MB for tract): the package
# ships stripped binaries.
for bin in camera-classifier bit-tool; do
  "$strip" -o "$tdir/deb/$bin-$arch" "$out/$bin"
  echo "$bin: $(stat -c %s "$out/$bin") bytes as built, $(stat -c %s "$tdir/deb/$bin-$arch") stripped"
done
packaging/deb/build-deb.sh --arch "$arch" --binary "$tdir/deb/camera-classifier-$arch" \
  --tool "$tdir/deb/bit-tool-$arch" --out "$tdir/deb"
