#!/bin/sh
# Run pskv's test suite, doing all set-up first (Debian packages, configure,
# build). Fast suites by default; --slow runs every suite.
#   scripts/test.sh [--slow] [--build DIR] [-- extra meson test args]
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
# Open MPI runs examples/federation_mpi (3 ranks) in the examples suite; the
# Python suites run on Debian's interpreter with numpy, pytest, meson-python
# and torch.
PSKV_EXTRA_PACKAGES="openmpi-bin libopenmpi-dev python3-numpy python3-pytest python3-mesonpy python3-pip python3-torch"

build=build
setup=fast
while [ $# -gt 0 ]; do
    case "$1" in
    --slow) setup=slow ;;
    --build) build=$2; shift ;;
    --) shift; break ;;
    *) echo "usage: scripts/test.sh [--slow] [--build DIR] [-- meson test args]" >&2; exit 2 ;;
    esac
    shift
done
pskv_setup "$build"
meson test -C "$build" --setup "$setup" --print-errorlogs "$@"
