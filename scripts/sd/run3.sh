#!/bin/bash
# Device run 3 (helper sd, round 7): 3-round A/B old / A / B (cli builds only).
set -o pipefail
R=$(pwd); T0=$(date +%s)
bld() { (cd $R/$1 && cmake -S . -B $2 -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_TESTS=OFF >/dev/null && timeout 200 cmake --build $2 -j5 --target dsv4_cli >$OUT/build_$(basename $2).log 2>&1; echo "build $2 rc=$?") ; }
bld .snap-sd /tmp/bb3 & bld .snap-sd-a /tmp/ba3 & bld .snap-sd-old /tmp/bo3 & wait
echo "builds $(( $(date +%s) - T0 )) s"
timeout 220 python3 $R/.snap-sd/scripts/ab-bench --rounds 3 --bin old=/tmp/bo3/bin/dsv4 --bin A=/tmp/ba3/bin/dsv4 --bin B=/tmp/bb3/bin/dsv4 --case 'sparse_decode --no-baseline --iters 30' --out $OUT/ab3.txt >$OUT/ab3_run.log 2>&1; echo "ab rc=$? ($(( $(date +%s) - T0 )) s)"
cat $OUT/ab3.txt
