#!/bin/sh
# Install pskv into a scratch root, then link tests/static_link.c fully
# statically with what pkg-config --static says, and run it.
#   static_link.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --no-rebuild --destdir "$tmp/root" --quiet >/dev/null
pc=$(find "$tmp/root" -name pskv.pc | head -n 1)
[ -n "$pc" ] || { echo "no pskv.pc installed" >&2; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags="$(pkg-config --cflags pskv) $(pkg-config --static --libs pskv)"
echo "cc -static static_link.c $flags"
${CC:-cc} -static -o "$tmp/static_link" "$src/tests/static_link.c" $flags
"$tmp/static_link"
