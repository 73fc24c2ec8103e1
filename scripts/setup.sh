#!/bin/sh
# Shared set-up for scripts/demo.sh and scripts/test.sh: make sure the Debian
# packages pskv builds with are installed (installing them when root, or
# printing the exact apt line otherwise), then configure and build.
#   . scripts/setup.sh; pskv_setup BUILD_DIR [meson options...]
set -eu

PSKV_PACKAGES="build-essential meson ninja-build pkg-config liblmdb-dev liburing-dev libxxhash-dev liblz4-dev check"

# scripts/test.sh adds what only the tests need (PSKV_EXTRA_PACKAGES).
pskv_missing_packages() {
    missing=""
    for p in $PSKV_PACKAGES ${PSKV_EXTRA_PACKAGES:-}; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $p"
        fi
    done
    echo "$missing"
}

pskv_setup() {
    build_dir=$1
    shift
    missing=$(pskv_missing_packages)
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "pskv: installing Debian packages:$missing" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
        else
            echo "pskv: missing Debian packages. Run as root:" >&2
            echo "  apt-get install -y$missing" >&2
            exit 1
        fi
    fi
    if [ ! -f "$build_dir/build.ninja" ]; then
        meson setup "$build_dir" "$@" >&2
    else
        meson configure "$build_dir" "$@" >/dev/null 2>&1 || true
    fi
    ninja -C "$build_dir" >&2
}
