#!/usr/bin/env bash
# Runs a board package's binaries on Debian bullseye's glibc (2.31, what Raspberry Pi OS
# bullseye and Ubuntu 20.04 / JetPack 5 have) under qemu-user, without installing anything:
#
#   packaging/deb/test-old-glibc.sh camera-classifier_<version>_arm64.deb MODEL.onnx IMAGE_DIR
#
# The root is what debootstrap's first stage unpacks (--foreign: Debian's own packages,
# unpacked, nothing of them run), kept in target/bullseye-<arch> (BIT_BULLSEYE_ROOT) for the
# next run; qemu's -L makes its /lib the binaries' only C library. Checked, in that root:
# its glibc is 2.31; camera-classifier and bit-tool --version; --check-config and a run of the
# daemon over every image of IMAGE_DIR (a replay source that stops at its end: one JSON line
# per image); bit-tool classify of one image. Needs debootstrap (as root, or with fakeroot),
# qemu-user, dpkg-deb and the network to a Debian mirror (DEBIAN_MIRROR) on the first run.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -ne 3 ] || [ ! -f "$1" ] || [ ! -f "$2" ] || [ ! -d "$3" ]; then
    echo "usage: $0 camera-classifier_<version>_<arch>.deb MODEL.onnx IMAGE_DIR" >&2
    exit 2
fi
deb=$1 model=$(realpath "$2") images=$(realpath "$3")
case $deb in
    *_arm64.deb) arch=arm64 qemu=qemu-aarch64 cpu=cortex-a72 triple=aarch64-linux-gnu ;;
    *_armhf.deb) arch=armhf qemu=qemu-arm cpu=cortex-a7 triple=arm-linux-gnueabihf ;;
    *) echo "test-old-glibc.sh: $deb: not an arm64 or armhf package" >&2; exit 2 ;;
esac
root=$(realpath -m "${BIT_BULLSEYE_ROOT:-${CARGO_TARGET_DIR:-target}/bullseye-$arch}")
if [ ! -e "$root/.unpacked" ]; then
    rm -rf "$root"
    boot=(debootstrap)
    [ "$(id -u)" = 0 ] || boot=(fakeroot debootstrap)
    echo "unpacking Debian bullseye ($arch) into $root"
    "${boot[@]}" --foreign --arch="$arch" --variant=minbase bullseye "$root" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root.log" 2>&1 ||
        { tail -n 20 "$root.log" >&2; exit 1; }
    touch "$root/.unpacked"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/old-glibc.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
pass() { printf '  PASS  %s\n' "$1"; }
fail() { printf '  FAIL  %s\n' "$1"; failed=$((failed + 1)); }
# run PROGRAM ARGS...: PROGRAM on the emulated CPU with the root's C library. tract reads
# NEON from /proc/cpuinfo, which qemu-user shows as the host's (TRACT_CPU_ARM32_NEON=1 says
# what a Pi 2 would).
run() { TRACT_CPU_ARM32_NEON=1 "$qemu" -cpu "$cpu" -L "$root" "$@"; }

echo "$(basename "$deb") on Debian bullseye ($arch, $root) under $qemu -cpu $cpu"
libc_line=$(run "$root/lib/$triple/libc.so.6" 2>&1 | head -n 1 || true)
if [[ $libc_line == *"version 2.31"* ]]; then pass "the root's C library: $libc_line"; else fail "the root's C library is not glibc 2.31: $libc_line"; fi

dpkg-deb -x "$deb" "$work/pkg"
bin=$work/pkg/usr/bin
for b in camera-classifier bit-tool; do
    need=$(grep -aoE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' "$bin/$b" | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
    if v=$(run "$bin/$b" --version 2>&1) && [[ $v == "$b "* ]]; then
        pass "$b --version: $v (needs GLIBC_$need)"
    else
        fail "$b --version: $v"
    fi
done

n=$(find "$images" -maxdepth 1 -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.jpeg' \) | wc -l)
cat >"$work/config.toml" <<CONF
[model]
path = "$model"
threads = 1
[replay]
path = "$images"
fps = 50.0
at_end = "stop"
[mode]
kind = "continuous"
[output]
json = true
CONF
if out=$(run "$bin/camera-classifier" --config "$work/config.toml" --check-config 2>&1) && [[ $out == *": valid ("* ]]; then
    pass "--check-config: ${out##*: }"
else
    fail "--check-config: $out"
fi
rc=0
run "$bin/camera-classifier" --config "$work/config.toml" >"$work/results" 2>"$work/log" || rc=$?
lines=$(grep -c '"top"' "$work/results" || true)
if [ "$rc" = 0 ] && [ "$lines" = "$n" ]; then
    pass "a replay run over the $n images: $lines results, exit 0; the first: $(head -c 160 "$work/results")"
else
    fail "a replay run over the $n images: exit $rc, $lines results"
    tail -n 20 "$work/log" | sed 's/^/        /'
fi
first=$(find "$images" -maxdepth 1 -type f -name '*.png' | LC_ALL=C sort | head -n 1)
if out=$(run "$bin/bit-tool" classify --model "$model" -k 3 "$first" 2>&1); then
    pass "bit-tool classify $(basename "$first"): $(echo "$out" | tr '\n' ' ' | head -c 200)"
else
    fail "bit-tool classify $(basename "$first"): $out"
fi
[ "$failed" = 0 ] && echo "  PASS: all checks" || { echo "  FAIL: $failed check(s)"; exit 1; }
