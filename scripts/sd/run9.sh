#!/bin/bash
# Device run (helper sd3, round 9): build new (this snapshot) and old (../.snap-sd3-old = e85bb3d)
# in parallel, SparseDecode tests + verify on new, then interleaved A/B rounds (one ab-bench call a
# round, both the isolated and the CUDA-graph case) while the time budget lasts.
set -o pipefail
R=$(pwd); T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
BN=${BN:-/tmp/b91}; BO=${BO:-/tmp/b90}
if [ ! -x $BN/bin/dsv4 ] || [ ! -x $BO/bin/dsv4 ]; then
  (cmake -S . -B $BN -DCMAKE_BUILD_TYPE=Release >/dev/null && timeout 200 cmake --build $BN -j11 --target dsv4_cli dsv4_cuda_tests >$OUT/build_new.log 2>&1; echo "new build rc=$? ($(el) s)") &
  (cmake -S ../.snap-sd3-old -B $BO -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_TESTS=OFF >/dev/null && timeout 200 cmake --build $BO -j5 --target dsv4_cli >$OUT/build_old.log 2>&1; echo "old build rc=$? ($(el) s)") &
  wait
  grep -E "error|C751[0-5]|spill" $OUT/build_new.log | grep -v " 0 bytes spill" | head
fi
[ -x $BN/bin/dsv4 ] && [ -x $BO/bin/dsv4 ] || { echo "build failed"; tail -30 $OUT/build_new.log; exit 1; }
if [ -z "$SKIP_TESTS" ]; then
  timeout 90 $BN/tests/dsv4_cuda_tests --gtest_filter='SparseDecode*' >$OUT/tests.log 2>&1; a=$?
  echo "tests rc=$a ($(el) s): $(grep -E '^\[  (PASSED|FAILED)' $OUT/tests.log | tr '\n' ' ')"
  timeout 60 $BN/bin/dsv4 verify sparse_decode >$OUT/verify.log 2>&1; b=$?
  echo "verify rc=$b ($(el) s): $(grep -ciE 'pass' $OUT/verify.log) pass lines, $(grep -ciE 'fail' $OUT/verify.log) fail lines"
  [ $a = 0 ] && [ $b = 0 ] || { tail -40 $OUT/tests.log; tail -20 $OUT/verify.log; exit 1; }
fi
BUDGET=${BUDGET:-265}; r=0
while [ $(( BUDGET - $(el) )) -gt ${ROUND_S:-75} ]; do
  r=$((r + 1))
  if [ $((r % 2)) = 1 ]; then BB="--bin old=$BO/bin/dsv4 --bin new=$BN/bin/dsv4"; else BB="--bin new=$BN/bin/dsv4 --bin old=$BO/bin/dsv4"; fi
  timeout $(( BUDGET - $(el) - 3 )) python3 $R/scripts/ab-bench --rounds 1 $BB \
    --case 'sparse_decode --no-baseline --iters 30' --case 'sparse_decode --no-baseline --iters 30 --graph 20' \
    --out $OUT/ab$r.txt >$OUT/ab_run$r.log 2>&1; echo "ab round $r rc=$? ($(el) s)"
  if [ -f $OUT/ab$r.txt ]; then cat $OUT/ab$r.txt; fi
done
tar czf $OUT/logs.tgz -C $OUT $(cd $OUT && ls *.log) 2>/dev/null; rm -f $OUT/*.log
