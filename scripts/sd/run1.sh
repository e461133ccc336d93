#!/bin/bash
# Device run 1 (helper sd, round 7): per-phase profile build + ncu source page of the normal build.
set -o pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
(cmake -S . -B /tmp/bp1 -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_TESTS=OFF -DCMAKE_CUDA_FLAGS=-DDSV4_SD_PROFILE >/dev/null && timeout 200 cmake --build /tmp/bp1 -j8 --target dsv4_cli >$OUT/build_p.log 2>&1; echo "bp rc=$?") &
(cmake -S . -B /tmp/bn1 -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_TESTS=OFF >/dev/null && timeout 200 cmake --build /tmp/bn1 -j8 --target dsv4_cli >$OUT/build_n.log 2>&1; echo "bn rc=$?") &
wait
echo "build done $(( $(date +%s) - T0 )) s"
P=/tmp/bp1/bin/dsv4
PRO1="sparse_decode --no-baseline --batch 128 --heads 128 --sq 1 --extra 1024 --iters 10 --warmup 2"
PRO2="sparse_decode --no-baseline --batch 128 --heads 128 --sq 2 --extra 1024 --iters 10 --warmup 2"
HCA="sparse_decode --no-baseline --batch 128 --heads 128 --sq 1 --extra 8192 --iters 5 --warmup 1"
run() { local tag=$1 v=$2; shift 2; echo "=== $tag VAR=$v"; DSV4_SD_VAR=$v timeout 40 $P bench "$@" >$OUT/p_${tag}_$v.log 2>&1; grep -E "sd-prof|fused" $OUT/p_${tag}_$v.log | grep -v "^$"; }
run pro1 0 $PRO1
run pro1 2 $PRO1
run pro1 1 $PRO1
run pro1 4 $PRO1
run pro1 6 $PRO1
run pro2 0 $PRO2
run pro2 2 $PRO2
run hca 0 $HCA
echo "profiles done $(( $(date +%s) - T0 )) s"
N=/tmp/bn1/bin/dsv4
timeout 30 $N bench $PRO1 2>&1 | grep fused
timeout 90 ncu --set full --import-source yes -k regex:sparse_decode_wg --launch-skip 2 --launch-count 1 -o /tmp/rep1 $N bench $PRO1 --iters 2 --warmup 1 >$OUT/ncu_run.log 2>&1; echo "ncu rc=$?"
if [ -f /tmp/rep1.ncu-rep ]; then
  timeout 40 ncu -i /tmp/rep1.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip >$OUT/src_sass.csv.gz
  timeout 20 ncu -i /tmp/rep1.ncu-rep --page details --csv >$OUT/details.csv 2>&1
  ls -la $OUT
fi
echo "all done $(( $(date +%s) - T0 )) s"
