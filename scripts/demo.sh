#!/bin/sh
# Run pskv's main job — examples/ctr_demo, a CTR model trained on a
# synthetic click stream — doing all set-up first (Debian packages,
# configure, build). Arguments go to ctr_demo (--help lists them).
set -eu
cd "$(dirname "$0")/.."
. scripts/setup.sh
pskv_setup build
exec build/examples/ctr_demo "$@"
