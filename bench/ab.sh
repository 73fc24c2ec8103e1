#!/bin/sh
# Before/after timing of two builds of pskv-bench, alternated: for each
# workload, ROUNDS rounds, each running both builds in a shuffled order
# (a noisy VM drifts; comparing within a round cancels most of it). The
# outputs land in OUT/<workload>-<round>-<before|after>.txt; compare the
# in-run ratios (pskv against its limit or peer) round by round.
# Usage: bench/ab.sh BEFORE_BENCH AFTER_BENCH OUT [ROUNDS [WORKLOAD...]]
#   e.g. bench/ab.sh ../old/build/bench/pskv-bench build/bench/pskv-bench /tmp/ab 2 dram delta
set -eu
[ $# -ge 3 ] || { sed -n '2,8p' "$0"; exit 2; }
before=$(realpath "$1") after=$(realpath "$2") out=$3
rounds=${4:-2}
shift $(($# < 4 ? $# : 4))
workloads=${*:-dram delta checkpoint}
mkdir -p "$out"
out=$(realpath "$out")
cd "$(mktemp -d)" # the benches write their stores here
for wl in $workloads; do
    r=1
    while [ "$r" -le "$rounds" ]; do
        for who in $(printf 'before\nafter\n' | shuf); do
            if [ "$who" = before ]; then bin=$before; else bin=$after; fi
            echo "$wl round $r: $who"
            "$bin" "$wl" >"$out/$wl-$r-$who.txt" 2>&1
        done
        r=$((r + 1))
    done
done
