#!/bin/bash
# Device run 2 (helper sd3, round 9): builds split (default), eonly (-DDSV4_SD_R9_EMPTY_ONLY) and old
# (../.snap-sd3-old) in parallel, SparseDecode tests + verify on both new builds, then interleaved
# A/B rounds (isolated and CUDA-graph cases) while the time budget lasts. Few files in $OUT.
set -o pipefail
R=$(pwd); T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
A=/tmp/s9a$$; E=/tmp/s9e$$; O=/tmp/s9o$$
(cmake -S . -B $A -DCMAKE_BUILD_TYPE=Release >/dev/null && timeout 210 cmake --build $A -j6 --target dsv4_cli dsv4_cuda_tests >$OUT/build_a.log 2>&1; echo "split build rc=$? ($(el) s)") &
(cmake -S . -B $E -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_FLAGS=-DDSV4_SD_R9_EMPTY_ONLY >/dev/null && timeout 210 cmake --build $E -j6 --target dsv4_cli dsv4_cuda_tests >$OUT/build_e.log 2>&1; echo "eonly build rc=$? ($(el) s)") &
(cmake -S ../.snap-sd3-old -B $O -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_TESTS=OFF >/dev/null && timeout 210 cmake --build $O -j4 --target dsv4_cli >$OUT/build_o.log 2>&1; echo "old build rc=$? ($(el) s)") &
wait
grep -hE "error|C751[0-5]|[1-9][0-9]* bytes spill" $OUT/build_a.log $OUT/build_e.log | head
L=("old=$O/bin/dsv4")
for v in a e; do
  D=$A; [ $v = e ] && D=$E
  [ -x $D/bin/dsv4 ] || { echo "$v: no binary"; continue; }
  timeout 60 $D/tests/dsv4_cuda_tests --gtest_filter='SparseDecode*' >$OUT/tests_$v.log 2>&1; a=$?
  timeout 45 $D/bin/dsv4 verify sparse_decode >>$OUT/tests_$v.log 2>&1; b=$?
  echo "$v tests rc=$a verify rc=$b ($(el) s): $(grep -E '^\[  (PASSED|FAILED)' $OUT/tests_$v.log | tr '\n' ' ') verify PASS lines $(grep -c PASS $OUT/tests_$v.log) FAIL lines $(grep -c FAIL $OUT/tests_$v.log)"
  N=split; [ $v = e ] && N=eonly
  [ $a = 0 ] && [ $b = 0 ] && L+=("$N=$D/bin/dsv4")
done
grep -hE "FAIL|PASS" $OUT/tests_a.log $OUT/tests_e.log | head -30 > $OUT/tests_summary.txt
BUDGET=${BUDGET:-262}; r=0
while [ $(( BUDGET - $(el) )) -gt ${ROUND_S:-25} ]; do
  r=$((r + 1))
  BB=""; for x in "${L[@]}"; do if [ $((r % 2)) = 1 ]; then BB="$BB --bin $x"; else BB="--bin $x $BB"; fi; done
  timeout $(( BUDGET - $(el) - 2 )) python3 $R/scripts/ab-bench --rounds 1 $BB \
    --case 'sparse_decode --no-baseline --iters 30' --case 'sparse_decode --no-baseline --iters 30 --graph 20' \
    --out $OUT/r.txt >/dev/null 2>>$OUT/ab_err.log && { echo "== round $r ($(el) s)"; cat $OUT/r.txt; } >> $OUT/ab_all.txt
done
echo "rounds: $r"; rm -f $OUT/r.txt
tail -c 11000 $OUT/ab_all.txt
tar czf $OUT/logs.tgz -C $OUT $(cd $OUT && ls *.log) 2>/dev/null; rm -f $OUT/*.log
