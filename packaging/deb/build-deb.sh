#!/bin/sh
# Builds camera-classifier_<version>_<arch>.deb from an already built binary.
#
#   packaging/deb/build-deb.sh --arch arm64|armhf|amd64 --binary PATH --tool PATH --out DIR [--version V]
#
# --binary is the daemon, --tool bit-tool (import, quantize, finetune, eval on the device).
# The version defaults to [workspace.package] version in the repository's Cargo.toml (a
# SemVer pre-release "1.2.0-rc.1" becomes "1.2.0~rc.1" so that it sorts before "1.2.0").
# The binaries are packaged as given (not stripped here). Depends: libc6 (>= V) with V the
# newest GLIBC_ symbol version either binary needs (at least 2.17: the release builds target
# glibc 2.17 with cargo-zigbuild, see scripts/package.sh). Needs dpkg-deb, gzip, coreutils,
# findutils, od. SOURCE_DATE_EPOCH (default: the last commit's time) fixes the timestamps.
set -eu

PKG=camera-classifier
MAINTAINER="camera-classifier maintainers <maintainers@example.invalid>"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() {
    printf 'build-deb.sh: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 --arch arm64|armhf|amd64 --binary PATH --tool PATH --out DIR [--version V]
EOF
    exit 2
}

arch='' binary='' tool='' out='' version=''
while [ $# -gt 0 ]; do
    case "$1" in
        --arch | --binary | --tool | --out | --version)
            [ $# -ge 2 ] || usage
            case "$1" in
                --arch) arch=$2 ;;
                --binary) binary=$2 ;;
                --tool) tool=$2 ;;
                --out) out=$2 ;;
                --version) version=$2 ;;
            esac
            shift 2
            ;;
        --arch=*) arch=${1#*=}; shift ;;
        --binary=*) binary=${1#*=}; shift ;;
        --tool=*) tool=${1#*=}; shift ;;
        --out=*) out=${1#*=}; shift ;;
        --version=*) version=${1#*=}; shift ;;
        -h | --help) usage ;;
        *) printf 'build-deb.sh: unknown argument: %s\n' "$1" >&2; usage ;;
    esac
done
if [ -z "$arch" ] || [ -z "$binary" ] || [ -z "$tool" ] || [ -z "$out" ]; then usage; fi

# ELF class (1: 32-bit, 2: 64-bit) and e_machine expected for each Debian architecture.
case "$arch" in
    amd64) want_class=2 want_machine=62 machine_name=x86-64 ;;   # EM_X86_64 0x3E
    arm64) want_class=2 want_machine=183 machine_name=aarch64 ;; # EM_AARCH64 0xB7
    armhf) want_class=1 want_machine=40 machine_name=arm ;;      # EM_ARM 0x28
    *) die "unknown architecture '$arch' (expected arm64, armhf or amd64)" ;;
esac

# check_elf FILE: a readable ELF file of the architecture's class and machine.
check_elf() {
    [ -e "$1" ] || die "binary not found: $1"
    if [ ! -f "$1" ] || [ ! -r "$1" ]; then die "binary is not a readable file: $1"; fi
    # The first 20 bytes of the ELF header: magic, class, data (1: little-endian), ...,
    # e_machine (bytes 18-19, little-endian).
    # shellcheck disable=SC2046 # word splitting of od's output is intended
    set -- "$1" $(od -An -tu1 -N20 -v "$1")
    if [ $# -ne 21 ] || [ "$2 $3 $4 $5" != "127 69 76 70" ]; then
        die "not an ELF file: $1"
    fi
    class=$6 data=$7 machine=$((${20} + 256 * ${21}))
    [ "$data" = 1 ] || die "$1: not a little-endian ELF file"
    if [ "$machine" != "$want_machine" ] || [ "$class" != "$want_class" ]; then
        die "$1: ELF machine $(printf '0x%02X' "$machine"), class $((class * 32))-bit; --arch $arch needs $machine_name ($(printf '0x%02X' "$want_machine"), $((want_class * 32))-bit)"
    fi
}
check_elf "$binary"
check_elf "$tool"

# libc6 (>= the newest GLIBC_x.y symbol version the binaries need), at least 2.17. The names
# of needed symbol versions sit in .dynstr, so a byte search finds them on any architecture.
glibc=$(cat "$binary" "$tool" | grep -aoE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
glibc=$(printf '2.17\n%s\n' "$glibc" | sort -V | tail -n 1)

if [ -z "$version" ]; then
    cargo_toml=$repo/Cargo.toml
    [ -f "$cargo_toml" ] || die "no --version and no $cargo_toml"
    version=$(awk '
        /^[[:space:]]*\[/ { in_section = ($0 ~ /^[[:space:]]*\[workspace\.package\][[:space:]]*(#.*)?$/); next }
        in_section && /^[[:space:]]*version[[:space:]]*=/ {
            sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
        }' "$cargo_toml")
    [ -n "$version" ] || die "no [workspace.package] version in $cargo_toml"
    version=$(printf '%s' "$version" | sed 's/-/~/')
fi
# Debian policy 5.6.12 (upstream version only: no epoch, no revision).
printf '%s' "$version" | grep -Eq '^[0-9][A-Za-z0-9.+~-]*$' || die "invalid version '$version'"

unit=$repo/firmware/systemd/camera-classifier.service
libcamera=$repo/firmware/systemd/libcamera.conf
example=$repo/firmware/examples/config.toml
readme=$repo/firmware/README.md
tmpfiles=$here/tmpfiles.conf
labels=$repo/models/imagenet1k_labels.txt
for f in "$unit" "$libcamera" "$example" "$readme" "$labels" "$tmpfiles" "$here/config.toml" "$here/README.Debian" \
    "$here/copyright" "$here/postinst" "$here/prerm" "$here/postrm" "$here/60-camera-classifier-gpio.rules"; do
    [ -f "$f" ] || die "missing input file: $f"
done

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=$(date +%s)
fi
export SOURCE_DATE_EPOCH

umask 022
mkdir -p "$out" || die "cannot create output directory $out"
out=$(cd "$out" && pwd)
deb=$out/${PKG}_${version}_${arch}.deb
stage=$(mktemp -d "${TMPDIR:-/tmp}/${PKG}-deb.XXXXXX")
tmp_deb=$(mktemp "$out/.${PKG}_${version}_${arch}.deb.XXXXXX")
trap 'rm -rf "$stage"; rm -f "$tmp_deb"' EXIT
trap 'exit 130' INT TERM

root=$stage/root
doc=$root/usr/share/doc/$PKG
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/lib/udev/rules.d" \
    "$root/etc/$PKG" "$root/usr/share/$PKG" "$root/usr/lib/tmpfiles.d" "$doc"
install -m 0755 "$binary" "$root/usr/bin/$PKG"
install -m 0755 "$tool" "$root/usr/bin/bit-tool"
install -m 0644 "$tmpfiles" "$root/usr/lib/tmpfiles.d/$PKG.conf"
install -m 0644 "$unit" "$root/lib/systemd/system/$PKG.service"
install -m 0644 "$here/60-camera-classifier-gpio.rules" "$root/lib/udev/rules.d/60-camera-classifier-gpio.rules"
install -m 0644 "$here/config.toml" "$root/etc/$PKG/config.toml"
install -m 0644 "$labels" "$root/usr/share/$PKG/imagenet1k_labels.txt"
install -m 0644 "$libcamera" "$root/usr/share/$PKG/libcamera.conf"
install -m 0644 "$readme" "$doc/README.md"
install -m 0644 "$example" "$doc/config.example.toml"
install -m 0644 "$here/README.Debian" "$doc/README.Debian"
install -m 0644 "$here/copyright" "$doc/copyright"

date_r=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
cat >"$stage/changelog" <<EOF
$PKG ($version) unstable; urgency=medium

  * Built from the camera-classifier workspace, version $version.

 -- $MAINTAINER  $date_r
EOF
# A native package (no Debian revision): changelog.gz, not changelog.Debian.gz (Policy 12.7).
gzip -9n <"$stage/changelog" >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

# Installed-Size as dpkg-gencontrol computes it: KiB per file, rounded up, 1 per directory.
installed_size=$(cd "$root" && find . -path ./DEBIAN -prune -o ! -name . -printf '%y %s\n' |
    awk '{ n += ($1 == "f") ? int(($2 + 1023) / 1024) : 1 } END { print n + 0 }')

cat >"$root/DEBIAN/control" <<EOF
Package: $PKG
Version: $version
Architecture: $arch
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: libc6 (>= $glibc), adduser
Section: misc
Priority: optional
Description: BiT image classifier daemon for V4L2 cameras
 camera-classifier classifies the frames of a V4L2 camera with a BiT model in
 ONNX format, continuously, at an interval, or when a GPIO line, SIGUSR1 or a
 control FIFO triggers it. Results go to MQTT (with Home Assistant discovery),
 a local status page with Prometheus metrics, GPIO outputs driven by label
 rules, or JSON lines on stdout. It can keep every Nth or every triggered frame
 for calibration and teaching.
 .
 It runs under systemd (Type=notify with a watchdog, DynamicUser=yes) on
 Raspberry Pi 2/3/4/5 and Jetson boards. The model is not included: install it
 as /var/lib/camera-classifier/model.onnx (see README.Debian).
 .
 The package also ships bit-tool, which imports BiT checkpoints, quantizes a
 model to int8 on calibration frames, measures its fidelity and trains a new
 classification head, on the board itself.
EOF
printf '/etc/%s/config.toml\n' "$PKG" >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    while IFS= read -r f; do md5sum "$f"; done) >"$root/DEBIAN/md5sums"
for s in postinst prerm postrm; do
    install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
# The 32-bit build refuses ARMv6 CPUs (Pi Zero, Pi 1) before anything is unpacked.
if [ "$arch" = armhf ]; then
    install -m 0755 "$here/preinst" "$root/DEBIAN/preinst"
fi
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$root" "$tmp_deb" >/dev/null
chmod 0644 "$tmp_deb"
mv -f "$tmp_deb" "$deb"

size=$(wc -c <"$deb" | tr -d ' ')
printf '%s\t%s bytes, Installed-Size %s KiB, Depends libc6 (>= %s)\n' "$deb" "$size" "$installed_size" "$glibc"
