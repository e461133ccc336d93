#!/bin/bash
# Device run (helper sd2, round 8): one build, kernel variants by DSV4_SD_KV (kV bits of
# sparse_decode_wg_kernel), tests per variant, interleaved A/B of the variants.
set -o pipefail
R=$(pwd); T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
VARS=${VARS:-"1 2 3 7"}
cmake -S . -B /tmp/b81 -DCMAKE_BUILD_TYPE=Release >/dev/null && timeout 200 cmake --build /tmp/b81 -j16 --target dsv4_cli dsv4_cuda_tests >$OUT/build.log 2>&1
echo "build rc=$? ($(el) s)"; grep -E "error|C751[02]|spill" $OUT/build.log | grep -v " 0 bytes spill" | head
B=/tmp/b81/bin/dsv4; T=/tmp/b81/tests/dsv4_cuda_tests
BINS="--bin v0=$B"
for v in $VARS; do
  printf '#!/bin/sh\nDSV4_SD_KV=%s exec %s "$@"\n' $v $B >/tmp/w$v; chmod +x /tmp/w$v
  DSV4_SD_KV=$v timeout 60 $T --gtest_filter='SparseDecode*' >$OUT/t$v.log 2>&1; a=$?
  DSV4_SD_KV=$v timeout 40 $B verify sparse_decode >>$OUT/t$v.log 2>&1; b=$?
  echo "v$v tests rc=$a verify rc=$b ($(el) s): $(grep -cE '^\[       OK' $OUT/t$v.log) OK, $(grep -c FAIL $OUT/t$v.log) FAIL lines"
  [ $a = 0 ] && [ $b = 0 ] && BINS="$BINS --bin v$v=/tmp/w$v"
done
timeout 60 $T --gtest_filter='SparseDecode*' >$OUT/t0.log 2>&1; echo "v0 tests rc=$? ($(el) s)"
timeout ${ABT:-150} python3 $R/scripts/ab-bench --rounds 2 $BINS --case 'sparse_decode --no-baseline --iters 30' --out $OUT/ab.txt >$OUT/ab_run.log 2>&1; echo "ab rc=$? ($(el) s)"
cat $OUT/ab.txt
left=$(( ${BUDGET:-265} - $(el) ))
if [ $left -gt 70 ]; then
  timeout $(( left - 5 )) python3 $R/scripts/ab-bench --rounds 1 $BINS --case 'sparse_decode --no-baseline --iters 30' --out $OUT/ab3.txt >$OUT/ab_run3.log 2>&1; echo "ab3 rc=$? ($(el) s)"
  cat $OUT/ab3.txt
fi
tar czf $OUT/logs.tgz -C $OUT build.log $(cd $OUT && ls t*.log ab_run*.log) 2>/dev/null; rm -f $OUT/build.log $OUT/t*.log $OUT/ab_run*.log
