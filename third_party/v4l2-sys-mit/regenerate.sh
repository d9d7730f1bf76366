#!/usr/bin/env bash
# Regenerates src/bindings/<arch>.rs the way the published v4l2-sys-mit 0.3.0 does at build time:
# its own build.rs (bindgen 0.65.1 on <linux/videodev2.h>), run in a scratch project that depends
# on the registry release, for the given targets (default: all three). Needs libclang
# (Debian: libclang-dev) and, for the ARM targets, the cross libc headers
# (libc6-dev-arm64-cross, libc6-dev-armhf-cross). Afterwards run the layout tests per target:
#   cargo test -p v4l2-sys-mit --target <triple>     (ARM targets run under qemu, .cargo/config.toml)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
cat > "$scratch/Cargo.toml" <<'TOML'
[package]
name = "v4l2-bindings-scratch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
v4l2-sys-mit = "=0.3.0"
TOML
echo > "$scratch/src/lib.rs"
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"
export BINDGEN_EXTRA_CLANG_ARGS_armv7_unknown_linux_gnueabihf="--sysroot=/usr/arm-linux-gnueabihf"
for t in "${targets[@]}"; do
  case "$t" in
    x86_64-unknown-linux-gnu) arch=x86_64 ;;
    aarch64-unknown-linux-gnu) arch=aarch64 ;;
    armv7-unknown-linux-gnueabihf) arch=armv7 ;;
    *) echo "regenerate.sh: no bindings file is defined for target $t (add it to src/lib.rs)" >&2; exit 2 ;;
  esac
  # Only the build script runs, on the host; no linker for the target is needed.
  (cd "$scratch" && cargo build --quiet --target "$t" -p v4l2-sys-mit)
  out=$(ls "$scratch"/target/"$t"/debug/build/v4l2-sys-mit-*/out/v4l2_bindings.rs)
  cp "$out" "$here/src/bindings/$arch.rs.new"
  mv "$here/src/bindings/$arch.rs.new" "$here/src/bindings/$arch.rs"
  echo "$t -> src/bindings/$arch.rs ($(wc -l < "$here/src/bindings/$arch.rs") lines)"
done
