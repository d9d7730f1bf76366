#!/usr/bin/env bash
# Builds the camera-classifier daemon for a board and packages it as a .deb:
#
#   scripts/package.sh arm64    # Raspberry Pi 4/5 (64-bit Raspberry Pi OS), Jetson (L4T)
#   scripts/package.sh armhf    # Raspberry Pi 2/3/4 with 32-bit Raspberry Pi OS
#   scripts/package.sh amd64    # this machine (for testing the package)
#
# Output: target/deb/camera-classifier_<version>_<arch>.deb. Needs the Rust target and the
# cross toolchain (README "Deploying on a board"); no host-specific CPU flags are used, so the
# binary runs on every CPU of the family (tract picks its kernels at run time).
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
  built="$tdir/release/camera-classifier"
else
  cargo build --release --target "$target" --workspace --bins
  built="$tdir/$target/release/camera-classifier"
fi
mkdir -p "$tdir/deb"
# The release profile keeps line tables for backtraces (about 200 MB for tract): the package
# ships the stripped binary.
stripped="$tdir/deb/camera-classifier-$arch"
"$strip" -o "$stripped" "$built"
echo "binary: $(stat -c %s "$built") bytes as built, $(stat -c %s "$stripped") stripped"
packaging/deb/build-deb.sh --arch "$arch" --binary "$stripped" --out "$tdir/deb"
