#!/bin/sh
# lintian on a built package: fails on any error or warning except the tags
# lintian-suppressed.txt lists, each with its reason there; info tags are printed.
#
#   packaging/deb/lintian.sh camera-classifier_<version>_<arch>.deb
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: $0 PACKAGE.deb" >&2; exit 2; }
command -v lintian >/dev/null || { echo "lintian.sh: lintian not found (apt-get install lintian)" >&2; exit 1; }
tags=$(grep -v '^#' "$here/lintian-suppressed.txt" | grep -v '^$' | paste -sd, -)
echo "lintian $(lintian --version | awk '{ print $NF }') on $(basename "$1") (not failing on: $tags)"
lintian --display-info --tag-display-limit 0 --fail-on error,warning --suppress-tags "$tags" "$1"
echo "lintian: no error or warning"
