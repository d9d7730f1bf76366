#!/bin/bash
# Tests a camera-classifier .deb without installing it on this system:
#   packaging/deb/test-deb.sh camera-classifier_<version>_<arch>.deb
#
# i.  inspection: control fields, the exact file list (paths, modes, root/root), conffiles,
#     the binaries' ELF machine against Architecture and their glibc needs against Depends,
#     md5sums, the shipped text files, the tmpfiles.d entry (applied by the real
#     systemd-tmpfiles when run as root), and (when the binaries run here) --version and
#     --check-config on the packaged configuration.
# a-f the maintainer scripts, run by `dpkg --root=R --force-script-chrootless` in scratch
#     roots (so they see DPKG_ROOT=R), with stubs first in PATH for systemctl,
#     deb-systemd-helper, deb-systemd-invoke, systemd-tmpfiles, getent, addgroup, groupadd and
#     adduser that log
#     their arguments and keep the group database in R/etc/group. "systemd running" is
#     R/run/systemd/system existing.
# g.  the postinst run directly with DPKG_ROOT unset (a normal install): getent/addgroup.
#
# Needs dpkg, dpkg-deb, coreutils, grep, sed, gzip. Root is not needed. Exit status 0 only if
# every case passes. VERBOSE=1 lists every check; KEEP=1 keeps the scratch directory.
set -eu

PKG=camera-classifier
UNIT=camera-classifier.service
CONFFILE=/etc/camera-classifier/config.toml
MODEL_NOTE='sudo install -D -m 644 model.onnx /var/lib/camera-classifier/model.onnx'
FRAMES=/var/lib/camera-classifier-frames

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: $0 camera-classifier_<version>_<arch>.deb" >&2
    exit 2
fi
deb=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
name=$(basename "$deb")
if [[ ! $name =~ ^${PKG}_([^_]+)_([a-z0-9]+)\.deb$ ]]; then
    echo "test-deb.sh: $name is not named ${PKG}_<version>_<arch>.deb" >&2
    exit 2
fi
version=${BASH_REMATCH[1]}
arch=${BASH_REMATCH[2]}

work=$(mktemp -d "${TMPDIR:-/tmp}/$PKG-test.XXXXXX")
if [ -n "${KEEP:-}" ]; then
    echo "scratch directory: $work"
else
    trap 'rm -rf "$work"' EXIT
fi

# --- checks -----------------------------------------------------------------------------

# check DESCRIPTION COMMAND...: records a failure of the current case if COMMAND fails.
check() {
    local desc=$1
    shift
    if "$@"; then
        if [ -n "${VERBOSE:-}" ]; then printf '    ok    %s\n' "$desc"; fi
    else
        printf '    FAIL  %s\n' "$desc"
        case_failed=1
    fi
}
not() { ! "$@"; }
eq() { [ "$1" = "$2" ]; }
has_text() { grep -qF -- "$2" "$1"; }     # FILE contains the fixed STRING
file_is() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
absent() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
has() { grep -Eq -- "$2" "$1"; }            # FILE has a line matching ERE
lacks() { ! grep -Eq -- "$2" "$1"; }        # FILE has no line matching ERE
count_is() { [ "$(grep -Ec -- "$2" "$1" || true)" = "$3" ]; }  # FILE ERE N
same() { cmp -s "$1" "$2"; }
mode_is() { [ -e "$1" ] && [ "$(stat -c %a "$1")" = "$2" ]; }
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]; }

# ELF class and e_machine of a file, as "CLASS MACHINE" (decimal).
elf_id() {
    local b
    read -r -a b <<<"$(od -An -tu1 -N20 -w20 -v "$1")"
    [ "${#b[@]}" -eq 20 ] && [ "${b[0]} ${b[1]} ${b[2]} ${b[3]}" = "127 69 76 70" ] || return 1
    echo "${b[4]} $((b[18] + 256 * b[19]))"
}

# --- stubs ------------------------------------------------------------------------------

stubs=$work/stubs
mkdir -p "$stubs"
# stub NAME <BODY: a command that logs "NAME ARGS" to $STUB_LOG, then runs BODY (sh) with
# $group_file set to the group database it emulates.
stub() {
    {
        cat <<'EOF'
#!/bin/sh
printf '%s\n' "${0##*/} $*" >>"$STUB_LOG"
group_file=${STUB_GROUP_FILE:-${DPKG_ROOT:-}/etc/group}
EOF
        cat
    } >"$stubs/$1"
    chmod 755 "$stubs/$1"
}
stub systemctl <<'EOF'
case "$*" in *is-active*) exit 3 ;; *is-enabled*) echo enabled ;; esac
EOF
stub deb-systemd-helper </dev/null
stub deb-systemd-invoke </dev/null
# Applies the package's one entry in a --root, as the real one would (but without chown);
# without --root (the live system) it only logs.
stub systemd-tmpfiles <<'EOF'
for a; do case $a in --root=*) d=${a#--root=}/var/lib/camera-classifier-frames; mkdir -p "$d" && chmod 2770 "$d" ;; esac; done
EOF
stub getent <<'EOF'
[ "$1" = group ] || exit 2
grep "^$2:" "$group_file" || exit 2
EOF
stub addgroup <<'EOF'
for g; do :; done
grep -q "^$g:" "$group_file" && exit 0
echo "$g:x:$((999 - $(wc -l <"$group_file"))):" >>"$group_file"
EOF
stub groupadd <<'EOF'
prefix=
while [ $# -gt 1 ]; do
    case "$1" in --prefix | -P) prefix=$2; shift ;; esac
    shift
done
group_file=$prefix/etc/group
grep -q "^$1:" "$group_file" && exit 9
echo "$1:x:$((999 - $(wc -l <"$group_file"))):" >>"$group_file"
EOF
stub adduser <<'EOF'
exit 1
EOF
export STUB_LOG
PATH=$stubs:$PATH:/usr/sbin:/sbin
export PATH
unset DPKG_ROOT STUB_GROUP_FILE

# mkroot DIR GROUPS SYSTEMD: an empty dpkg database, /etc/group with GROUPS (names), and
# run/systemd/system if SYSTEMD is "running".
mkroot() {
    local r=$1 g
    mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/etc"
    : >"$r/var/lib/dpkg/status"
    echo "root:x:0:" >"$r/etc/group"
    for g in $2; do
        case $g in
            video) echo "video:x:44:" ;;
            gpio) echo "gpio:x:997:" ;;
        esac
    done >>"$r/etc/group"
    if [ "$3" = running ]; then mkdir -p "$r/run/systemd/system"; fi
}

# dpkg_r ROOT ARGS...: dpkg acting on ROOT, scripts run with DPKG_ROOT=ROOT, output appended
# to $out. --force-not-root is needed for non-root users, --force-architecture and
# --force-depends because ROOT is empty.
dpkg_r() {
    local r=$1
    shift
    dpkg --root="$r" --admindir="$r/var/lib/dpkg" --log=/dev/null \
        --force-script-chrootless --force-not-root --force-architecture --force-depends \
        --force-unsafe-io "$@" </dev/null >>"$out" 2>&1
}
status_is() { [ "$(dpkg-query --admindir="$1/var/lib/dpkg" -W -f='${Status}' "$PKG" 2>/dev/null)" = "$2" ]; }
not_known() { ! dpkg-query --admindir="$1/var/lib/dpkg" -W "$PKG" >/dev/null 2>&1; }
verify_ok() { dpkg --root="$1" --admindir="$1/var/lib/dpkg" --verify "$PKG" >>"$out" 2>&1 && ! grep -q '^??5' "$out"; }
started() { grep -Eq '^(deb-systemd-invoke|systemctl) .*\b(start|restart|try-restart)\b' "$STUB_LOG"; }
# A file list in `dpkg-deb --contents` order: "MODE OWNER PATH".
listing() { dpkg-deb --contents "$1" | awk '{ print $1, $2, $6 }' | LC_ALL=C sort; }
before() { # LOG ERE1 ERE2: the first match of ERE1 comes before the first match of ERE2
    local a b
    a=$(grep -En -- "$2" "$1" | head -n 1 | cut -d: -f1)
    b=$(grep -En -- "$3" "$1" | head -n 1 | cut -d: -f1)
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}

# --- cases ------------------------------------------------------------------------------

x=$work/extract     # the package's files
ctl=$work/control   # its control files
dpkg-deb -x "$deb" "$x"
dpkg-deb -e "$deb" "$ctl"
expected_files="./etc/camera-classifier/config.toml
./lib/systemd/system/camera-classifier.service
./lib/udev/rules.d/60-camera-classifier-gpio.rules
./usr/bin/bit-tool
./usr/bin/camera-classifier
./usr/lib/tmpfiles.d/camera-classifier.conf
./usr/share/camera-classifier/imagenet1k_labels.txt
./usr/share/camera-classifier/libcamera.conf
./usr/share/doc/camera-classifier/README.Debian
./usr/share/doc/camera-classifier/README.md
./usr/share/doc/camera-classifier/changelog.gz
./usr/share/doc/camera-classifier/config.example.toml
./usr/share/doc/camera-classifier/copyright"

field() { dpkg-deb --field "$deb" "$1"; }
md5_ok() { (cd "$x" && md5sum --quiet -c "$ctl/md5sums"); }
check_config_ok() { # OUTPUT RC: valid, or the only problem is the missing model file
    if [ "$2" = 0 ]; then
        has "$1" ': valid \('
    else
        has "$1" ': 1 problem\(s\):' &&
            has "$1" '^  model\.path: /var/lib/camera-classifier/model\.onnx: no such file'
    fi
}

case_inspect() {
    out=$work/i.out
    check "Package is $PKG" eq "$(field Package)" "$PKG"
    check "Version is $version (the file name's)" eq "$(field Version)" "$version"
    check "Architecture is $arch (the file name's)" eq "$(field Architecture)" "$arch"
    check "Section is misc" eq "$(field Section)" misc
    check "Priority is optional" eq "$(field Priority)" optional
    check "Maintainer is set" not eq "$(field Maintainer)" ""
    check "Description has a long description" has <(field Description) '^ \.$'

    # Depends: libc6 (>= V), adduser; V >= 2.17 and >= the binaries' newest GLIBC_ need. The
    # board builds target glibc 2.17 (scripts/package.sh): theirs must need no newer one.
    local depends libc need bin
    depends=$(field Depends)
    libc=$(sed -nE 's/^libc6 \(>= ([0-9.]+)\), adduser$/\1/p' <<<"$depends")
    check "Depends is 'libc6 (>= V), adduser' ($depends)" not eq "$libc" ""
    check "libc6 (>= ${libc:-?}) is at least 2.17" version_ge "${libc:-0}" 2.17
    for bin in "$PKG" bit-tool; do
        need=$(grep -aoE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' "$x/usr/bin/$bin" | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
        check "libc6 (>= ${libc:-?}) covers $bin's GLIBC_${need:-none}" version_ge "${libc:-0}" "${need:-0}"
        if [ "$arch" != amd64 ]; then
            check "$bin needs at most GLIBC_2.17 (needs GLIBC_${need:-none})" version_ge 2.17 "${need:-0}"
        fi
    done

    # The exact file list, modes and owners.
    local d f
    {
        echo "drwxr-xr-x root/root ./"
        for d in etc etc/camera-classifier lib lib/systemd lib/systemd/system lib/udev lib/udev/rules.d usr usr/bin \
            usr/lib usr/lib/tmpfiles.d usr/share usr/share/camera-classifier usr/share/doc usr/share/doc/camera-classifier; do
            echo "drwxr-xr-x root/root ./$d/"
        done
        while IFS= read -r f; do
            case $f in
                ./usr/bin/*) echo "-rwxr-xr-x root/root $f" ;;
                *) echo "-rw-r--r-- root/root $f" ;;
            esac
        done <<<"$expected_files"
    } | LC_ALL=C sort >"$work/contents.expected"
    listing "$deb" >"$work/contents.actual"
    check "contents (paths, modes, root/root) are exactly the expected list" \
        same "$work/contents.expected" "$work/contents.actual"
    if ! same "$work/contents.expected" "$work/contents.actual"; then
        diff "$work/contents.expected" "$work/contents.actual" | sed 's/^/          /' || true
    fi

    # Installed-Size as dpkg-gencontrol computes it.
    local computed
    computed=$(dpkg-deb --contents "$deb" | awk '$6 != "./" { n += ($1 ~ /^-/) ? int(($3 + 1023) / 1024) : 1 } END { print n + 0 }')
    check "Installed-Size $(field Installed-Size) matches the contents ($computed)" \
        eq "$(field Installed-Size)" "$computed"

    check "conffiles is exactly $CONFFILE" eq "$(cat "$ctl/conffiles")" "$CONFFILE"
    for f in postinst prerm postrm; do
        check "$f is executable" test -x "$ctl/$f"
    done

    local id want
    case $arch in
        amd64) want="2 62" ;;
        arm64) want="2 183" ;;
        armhf) want="1 40" ;;
        *) want="unknown architecture" ;;
    esac
    for bin in "$PKG" bit-tool; do
        id=$(elf_id "$x/usr/bin/$bin" || echo "not ELF")
        check "$bin's ELF class/machine ($id) is $arch's ($want)" eq "$id" "$want"
    done

    check "md5sums lists exactly the regular files" \
        eq "$(awk '{ print "./" $2 }' "$ctl/md5sums" | LC_ALL=C sort)" "$(LC_ALL=C sort <<<"$expected_files")"
    check "md5sums verify" md5_ok

    local doc=$x/usr/share/doc/$PKG conf=$x$CONFFILE
    check "the unit runs /usr/bin/$PKG with $CONFFILE" \
        has "$x/lib/systemd/system/$UNIT" "^ExecStart=/usr/bin/$PKG --config $CONFFILE\$"
    check "1000 labels" eq "$(wc -l <"$x/usr/share/$PKG/imagenet1k_labels.txt")" 1000
    check "config.toml: model path" has "$conf" '^path = "/var/lib/camera-classifier/model\.onnx"$'
    check "config.toml: /dev/video0" has "$conf" '^device = "/dev/video0"$'
    check "config.toml: continuous" has "$conf" '^kind = "continuous"$'
    check "config.toml: no result line per frame in the journal" has "$conf" '^json = "auto"$'
    check "config.toml: frames saved into $FRAMES" has "$conf" "^save_dir = \"$FRAMES\"\$"
    check "config.toml: no frame saved unless configured" lacks "$conf" '^(save_frames|save_every) *='
    local tmpfiles=$x/usr/lib/tmpfiles.d/$PKG.conf
    check "tmpfiles.d: $FRAMES 2770 root:camera-classifier, never aged" \
        eq "$(grep -v '^#' "$tmpfiles")" "d $FRAMES 2770 root camera-classifier -"
    check "the unit may write $FRAMES" has "$x/lib/systemd/system/$UNIT" "^ReadWritePaths=-$FRAMES\$"
    check "the unit's user is in the group camera-classifier" \
        has "$x/lib/systemd/system/$UNIT" '^SupplementaryGroups=.*\bcamera-classifier\b'
    # The real systemd-tmpfiles on the entry, in a scratch root (chown needs root).
    if [ "$(id -u)" = 0 ] && command -v systemd-tmpfiles >/dev/null; then
        local t=$work/tmpfiles-root
        mkdir -p "$t/etc" "$t/usr/lib/tmpfiles.d" "$t/var/lib"
        printf 'root:x:0:\ncamera-classifier:x:990:\n' >"$t/etc/group"
        printf 'root:x:0:0::/root:/bin/sh\n' >"$t/etc/passwd"
        cp "$tmpfiles" "$t/usr/lib/tmpfiles.d/"
        check "the real systemd-tmpfiles --create applies it" \
            env PATH=/usr/bin:/bin:/usr/sbin:/sbin systemd-tmpfiles --root="$t" --create "$PKG.conf"
        check "  $FRAMES: mode 2770, owner root, group camera-classifier (990)" \
            eq "$(stat -c '%a %u %g' "$t$FRAMES" 2>/dev/null)" "2770 0 990"
    else
        echo "    note  the real systemd-tmpfiles not applied: it needs root (to chown) and systemd"
    fi
    check "config.toml: points to config.example.toml" has "$conf" "/usr/share/doc/$PKG/config\\.example\\.toml"
    check "copyright is DEP-5" \
        has "$doc/copyright" '^Format: https://www\.debian\.org/doc/packaging-manuals/copyright-format/1\.0/$'
    check "changelog.gz names $PKG ($version)" \
        eq "$(gzip -dc "$doc/changelog.gz" | head -n 1 | cut -d';' -f1)" "$PKG ($version) unstable"
    check "README.Debian explains the model location" has_text "$doc/README.Debian" "$MODEL_NOTE"

    # The packaged configuration is valid for the daemon, the model file apart.
    local v rc=0
    v=$("$x/usr/bin/$PKG" --version 2>/dev/null || true)
    if [[ $v == "$PKG "* ]]; then
        check "bit-tool --version runs" grep -q '^bit-tool ' <("$x/usr/bin/bit-tool" --version 2>&1)
        "$x/usr/bin/$PKG" --config "$conf" --check-config >"$out" 2>&1 || rc=$?
        check "--check-config: valid but for the missing model file" check_config_ok "$out" "$rc"
    else
        echo "    note  --check-config skipped: the binary does not run here"
    fi
}

# Root A: a, b, b2, d, e in sequence.
A=$work/root-a
case_a() {
    out=$work/a.out STUB_LOG=$work/a.log
    mkroot "$A" video running
    check "dpkg -i succeeds" dpkg_r "$A" -i "$deb"
    check "installed: 'install ok installed'" status_is "$A" "install ok installed"
    check "dpkg --verify is clean" verify_ok "$A"
    check "$CONFFILE is a conffile in the database" \
        eq "$(dpkg-query --admindir="$A/var/lib/dpkg" -W -f='${Conffiles}' "$PKG" | awk 'NF { print $1 }')" "$CONFFILE"
    check "/usr/bin/$PKG is 755" mode_is "$A/usr/bin/$PKG" 755
    check "the unit is 644" mode_is "$A/lib/systemd/system/$UNIT" 644
    check "gpio group created in R/etc/group" count_is "$A/etc/group" '^gpio:' 1
    check "camera-classifier group created in R/etc/group" count_is "$A/etc/group" '^camera-classifier:' 1
    check "video group kept, not added again" count_is "$A/etc/group" '^video:' 1
    check "groupadd --prefix R --system for gpio and camera-classifier, no other group command" \
        eq "$(grep -E '^(groupadd|addgroup|adduser) ' "$STUB_LOG" | tr '\n' ' ')" \
        "groupadd --prefix $A --system gpio groupadd --prefix $A --system camera-classifier "
    check "systemd-tmpfiles --root=R --create camera-classifier.conf, after the group" \
        before "$STUB_LOG" "^groupadd .* camera-classifier\$" "^systemd-tmpfiles --root=$A --create camera-classifier.conf\$"
    check "$FRAMES created, mode 2770" mode_is "$A$FRAMES" 2770
    check "the host's group database is not used (no getent/addgroup)" lacks "$STUB_LOG" '^(getent|addgroup) '
    check "not enabled (no model: it would fail at every boot)" lacks "$STUB_LOG" "^deb-systemd-helper enable "
    check "the unit's state is recorded (deb-systemd-helper update-state)" \
        has "$STUB_LOG" "^deb-systemd-helper update-state $UNIT\$"
    check "systemctl daemon-reload" has "$STUB_LOG" '^systemctl (--system )?daemon-reload$'
    check "not started (no model)" not started
    check "the note on the model is printed" has_text "$out" "$MODEL_NOTE"
    check "/var/lib/camera-classifier is not created" absent "$A/var/lib/camera-classifier"
}

case_b() {
    out=$work/b.out STUB_LOG=$work/b.log
    mkdir -p "$A/var/lib/camera-classifier"
    echo model >"$A/var/lib/camera-classifier/model.onnx"
    check "dpkg -i (same version again: an upgrade for the scripts) succeeds" dpkg_r "$A" -i "$deb"
    check "no group created" lacks "$STUB_LOG" '^(groupadd|addgroup|adduser) '
    check "gpio still once in R/etc/group" count_is "$A/etc/group" '^gpio:' 1
    check "not stopped by prerm upgrade" lacks "$STUB_LOG" '\bstop\b'
    check "daemon-reload, then a non-blocking try-restart of $UNIT" \
        before "$STUB_LOG" '^systemctl (--system )?daemon-reload$' "^systemctl --no-block try-restart $UNIT\$"
    check "no note" not has_text "$out" "$MODEL_NOTE"
    check "the model is untouched" file_is "$A/var/lib/camera-classifier/model.onnx" model
    check "dpkg --verify is clean" verify_ok "$A"
}

case_b2() {
    out=$work/b2.out STUB_LOG=$work/b2.log
    # DynamicUser's layout, but without the link yet: the model only in private/.
    mkdir -p "$A/var/lib/private"
    mv "$A/var/lib/camera-classifier" "$A/var/lib/private/camera-classifier"
    check "dpkg -i succeeds" dpkg_r "$A" -i "$deb"
    check "try-restart $UNIT (model found in /var/lib/private/camera-classifier)" \
        has "$STUB_LOG" "^systemctl --no-block try-restart $UNIT\$"
    check "no note" not has_text "$out" "$MODEL_NOTE"
    ln -s private/camera-classifier "$A/var/lib/camera-classifier"
}

case_d() {
    out=$work/d.out STUB_LOG=$work/d.log
    mkdir -p "$A/var/lib/camera-classifier/frames"
    echo frame >"$A/var/lib/camera-classifier/frames/0001.jpg"
    check "dpkg -r succeeds" dpkg_r "$A" -r "$PKG"
    check "stop $UNIT, then daemon-reload" \
        before "$STUB_LOG" "^deb-systemd-invoke stop $UNIT\$" '^systemctl (--system )?daemon-reload$'
    check "not started" not started
    check "state 'deinstall ok config-files'" status_is "$A" "deinstall ok config-files"
    local f left=""
    while IFS= read -r f; do
        if [ "$f" != ".$CONFFILE" ] && [ -e "$A/$f" ]; then left="$left $f"; fi
    done <<<"$expected_files"
    check "every file but the conffile is gone${left:+ (left:$left)}" eq "$left" ""
    check "/usr/share/doc/$PKG is gone" absent "$A/usr/share/doc/$PKG"
    check "the conffile is kept" test -f "$A$CONFFILE"
    check "/var/lib/camera-classifier is still the link" test -L "$A/var/lib/camera-classifier"
    check "the model is kept" file_is "$A/var/lib/camera-classifier/model.onnx" model
    check "the saved frame is kept" file_is "$A/var/lib/private/camera-classifier/frames/0001.jpg" frame
}

case_e() {
    out=$work/e.out STUB_LOG=$work/e.log
    check "dpkg -P succeeds" dpkg_r "$A" -P "$PKG"
    check "the package is forgotten" not_known "$A"
    check "the conffile and /etc/camera-classifier are gone" absent "$A/etc/camera-classifier"
    check "deb-systemd-helper purge $UNIT" has "$STUB_LOG" "^deb-systemd-helper purge $UNIT\$"
    check "daemon-reload" has "$STUB_LOG" '^systemctl (--system )?daemon-reload$'
    check "/var/lib/camera-classifier is still the link" test -L "$A/var/lib/camera-classifier"
    check "the model is kept" file_is "$A/var/lib/camera-classifier/model.onnx" model
    check "the saved frame is kept" file_is "$A/var/lib/private/camera-classifier/frames/0001.jpg" frame
    check "says /var/lib/camera-classifier is kept" has "$out" 'kept /var/lib/camera-classifier '
    check "$FRAMES is kept" test -d "$A$FRAMES"
    check "says $FRAMES is kept" has "$out" "kept $FRAMES "
}

case_c() {
    local C=$work/root-c
    out=$work/c.out STUB_LOG=$work/c.log
    mkroot "$C" "" stopped
    check "dpkg -i succeeds" dpkg_r "$C" -i "$deb"
    check "no systemctl, no deb-systemd-invoke" lacks "$STUB_LOG" '^(systemctl|deb-systemd-invoke) '
    check "video created" count_is "$C/etc/group" '^video:' 1
    check "gpio created" count_is "$C/etc/group" '^gpio:' 1
    check "camera-classifier created" count_is "$C/etc/group" '^camera-classifier:' 1
    check "$FRAMES created without a running systemd" mode_is "$C$FRAMES" 2770
    check "not enabled without a model" lacks "$STUB_LOG" "^deb-systemd-helper enable "
    check "the note is printed" has_text "$out" "$MODEL_NOTE"
    mkdir -p "$C/var/lib/camera-classifier"
    echo model >"$C/var/lib/camera-classifier/model.onnx"
    check "dpkg -i again, with a model, succeeds" dpkg_r "$C" -i "$deb"
    check "dpkg -r succeeds" dpkg_r "$C" -r "$PKG"
    check "dpkg -P succeeds" dpkg_r "$C" -P "$PKG"
    check "still no systemctl, no deb-systemd-invoke" lacks "$STUB_LOG" '^(systemctl|deb-systemd-invoke) '
    check "the model is kept" file_is "$C/var/lib/camera-classifier/model.onnx" model
}

# variant VERSION LINE OUT: the package with another version and, if LINE is not empty,
# LINE appended to the packaged conffile.
variant() {
    local v=$work/variant sum
    rm -rf "$v"
    dpkg-deb -R "$deb" "$v"
    sed -i "s/^Version: .*/Version: $1/" "$v/DEBIAN/control"
    if [ -n "$2" ]; then
        echo "$2" >>"$v$CONFFILE"
        sum=$(md5sum <"$v$CONFFILE" | cut -d' ' -f1)
        sed -i "s|^[0-9a-f]*  ${CONFFILE#/}\$|$sum  ${CONFFILE#/}|" "$v/DEBIAN/md5sums"
    fi
    dpkg-deb --root-owner-group -Znone --build "$v" "$3" >/dev/null
    rm -rf "$v"
}

case_f() {
    local F=$work/root-f conf
    out=$work/f.out STUB_LOG=$work/f.log
    mkroot "$F" "video gpio" stopped
    conf=$F$CONFFILE
    check "dpkg -i succeeds" dpkg_r "$F" -i "$deb"
    sed -i 's/^kind = "continuous"/kind = "triggered"/' "$conf"
    echo "# local change" >>"$conf"
    cp "$conf" "$work/conf.user"
    variant "$version+test1" "" "$work/v1.deb"
    variant "$version+test2" "# a newer packaged default" "$work/v2.deb"
    check "upgrade, packaged conffile unchanged: succeeds without a prompt" dpkg_r "$F" -i "$work/v1.deb"
    check "  the user's config.toml is kept" same "$conf" "$work/conf.user"
    check "  no config.toml.dpkg-dist" absent "$conf.dpkg-dist"
    check "upgrade, packaged conffile changed, no --force-conf*: stops at the prompt (EOF)" \
        not dpkg_r "$F" -i "$work/v2.deb"
    check "  the user's config.toml is still in place" same "$conf" "$work/conf.user"
    check "  dpkg --force-confold --configure finishes the upgrade" \
        dpkg_r "$F" --force-confold --configure "$PKG"
    check "  the user's config.toml is kept" same "$conf" "$work/conf.user"
    check "  the new default is config.toml.dpkg-dist" has "$conf.dpkg-dist" '^# a newer packaged default$'
    check "  installed at $version+test2" \
        eq "$(dpkg-query --admindir="$F/var/lib/dpkg" -W -f='${Version} ${Status}' "$PKG")" "$version+test2 install ok installed"
    rm -f "$work/v1.deb" "$work/v2.deb"
}

postinst_direct() { # GROUP_FILE: the postinst as dpkg runs it on a live system (no DPKG_ROOT)
    env -u DPKG_ROOT STUB_GROUP_FILE="$1" sh "$ctl/postinst" configure "" >>"$out" 2>&1
}

case_g() {
    local G=$work/root-g
    out=$work/g.out STUB_LOG=$work/g.log
    mkdir -p "$G"
    echo "root:x:0:" >"$G/group"
    check "postinst configure (DPKG_ROOT unset) succeeds" postinst_direct "$G/group"
    check "getent group video" has "$STUB_LOG" '^getent group video$'
    check "getent group gpio" has "$STUB_LOG" '^getent group gpio$'
    check "addgroup --system video" has "$STUB_LOG" '^addgroup (--quiet )?--system video$'
    check "addgroup --system gpio" has "$STUB_LOG" '^addgroup (--quiet )?--system gpio$'
    check "addgroup --system camera-classifier" has "$STUB_LOG" '^addgroup (--quiet )?--system camera-classifier$'
    check "no groupadd" lacks "$STUB_LOG" '^groupadd '
    check "all three in the group database" count_is "$G/group" '^(video|gpio|camera-classifier):' 3
    check "systemd-tmpfiles --create camera-classifier.conf (no --root)" \
        has "$STUB_LOG" '^systemd-tmpfiles --create camera-classifier\.conf$'
    : >"$STUB_LOG"
    check "again: succeeds" postinst_direct "$G/group"
    check "again: no group created" lacks "$STUB_LOG" '^(addgroup|groupadd) '
}

# --- run --------------------------------------------------------------------------------

results=()
failed=0
case_p() { # the armhf preinst: ARMv6 refused with the reason, ARMv7 NEON and unknown CPUs pass
    if [ "$arch" != armhf ]; then
        check "no preinst in the $arch package" test ! -e "$ctl/preinst"
        return 0
    fi
    check "preinst is executable" test -x "$ctl/preinst"
    printf 'model name\t: ARMv6-compatible processor rev 7 (v6l)\nFeatures\t: half thumb fastmult vfp edsp java tls\nCPU architecture: 7\n' >"$work/zero"
    printf 'model name\t: ARMv7 Processor rev 5 (v7l)\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4\n' >"$work/pi2"
    printf 'processor\t: 0\nflags\t\t: fpu sse2 avx2\n' >"$work/x86"
    preinst() { # CPUINFO MACHINE
        CAMERA_CLASSIFIER_CPUINFO=$1 CAMERA_CLASSIFIER_MACHINE=$2 sh "$ctl/preinst" install 2>"$work/p.err"
    }
    check "a Pi Zero (armv6l) is refused" not preinst "$work/zero" armv6l
    check "  with the reason" grep -q "Raspberry Pi 2 or newer" "$work/p.err"
    check "ARMv6 features under an armv7l machine name are refused" not preinst "$work/zero" armv7l
    check "a Pi 2 (armv7l, neon) installs" preinst "$work/pi2" armv7l
    check "a qemu chroot (the host's cpuinfo) installs" preinst "$work/x86" armv7l
    check "another machine (dpkg --root from x86_64) installs" preinst "$work/x86" x86_64
}

run_case() { # ID TITLE FUNCTION
    local rc
    echo "$1. $2"
    out=/dev/null STUB_LOG=/dev/null
    set +e
    (
        set -e
        case_failed=0
        trap 'echo "    FAIL  unexpected error: $BASH_COMMAND"' ERR
        "$3"
        exit "$case_failed"
    )
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then
        results+=("$(printf '%-3s %-58s PASS' "$1" "$2")")
    else
        failed=$((failed + 1))
        results+=("$(printf '%-3s %-58s FAIL' "$1" "$2")")
        local f
        for f in "$work/$1.out" "$work/$1.log"; do
            if [ -s "$f" ]; then
                echo "    --- ${f##*/}:"
                sed 's/^/    | /' "$f"
            fi
        done
    fi
}

run_case i "inspection (control, contents, conffiles, ELF, md5sums)" case_inspect
run_case a "fresh install: no gpio, systemd, no model" case_a
run_case b "reinstall: model in /var/lib/camera-classifier, gpio" case_b
run_case b2 "reinstall: model only in /var/lib/private/..." case_b2
run_case d "dpkg -r: stopped, conffile, model, frames kept" case_d
run_case e "dpkg -P: conffile gone, model and frames kept" case_e
run_case c "install, remove, purge without a running systemd" case_c
run_case f "a modified conffile survives upgrades" case_f
run_case g "postinst without DPKG_ROOT: getent/addgroup" case_g
run_case p "preinst: the armhf build refuses ARMv6 CPUs" case_p

size=$(wc -c <"$deb" | tr -d ' ')
nfiles=$(dpkg-deb --contents "$deb" | grep -c '^-')
echo
echo "$name"
printf '  size %s bytes (%s MiB), Installed-Size %s KiB, %s files\n' "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" \
    "$(dpkg-deb --field "$deb" Installed-Size)" "$nfiles"
printf '  %s\n' "${results[@]}"
if [ "$failed" = 0 ]; then
    echo "  PASS: all ${#results[@]} cases"
else
    echo "  FAIL: $failed of ${#results[@]} cases"
    exit 1
fi
