#!/bin/bash
# Device run 2 (helper sd2, round 8): variants by DSV4_SD_KV; tests for the new ones, 6-round A/B,
# and the clock64 phase profile of Pro B=1 for kV 0 / 2 / 8 (profile build).
set -o pipefail
R=$(pwd); T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
(cmake -S . -B /tmp/b82 -DCMAKE_BUILD_TYPE=Release >/dev/null && timeout 200 cmake --build /tmp/b82 -j11 --target dsv4_cli dsv4_cuda_tests >$OUT/build.log 2>&1; echo "build rc=$? ($(el) s)") &
(cmake -S . -B /tmp/bp82 -DCMAKE_BUILD_TYPE=Release -DDSV4_BUILD_TESTS=OFF -DCMAKE_CUDA_FLAGS=-DDSV4_SD_PROFILE >/dev/null && timeout 200 cmake --build /tmp/bp82 -j5 --target dsv4_cli >$OUT/buildp.log 2>&1; echo "buildp rc=$? ($(el) s)") &
wait
B=/tmp/b82/bin/dsv4; T=/tmp/b82/tests/dsv4_cuda_tests
BINS="--bin v0=$B"
for v in 1 2 8 9 12; do
  printf '#!/bin/sh\nDSV4_SD_KV=%s exec %s "$@"\n' $v $B >/tmp/w$v; chmod +x /tmp/w$v
  if [ $v -ge 8 ]; then
    DSV4_SD_KV=$v timeout 60 $T --gtest_filter='SparseDecode*' >$OUT/t$v.log 2>&1; a=$?
    DSV4_SD_KV=$v timeout 40 $B verify sparse_decode >>$OUT/t$v.log 2>&1; b=$?
    echo "v$v tests rc=$a verify rc=$b ($(el) s): $(grep -cE '^\[       OK' $OUT/t$v.log) OK"
  else a=0; b=0; fi
  [ $a = 0 ] && [ $b = 0 ] && BINS="$BINS --bin v$v=/tmp/w$v"
done
timeout 100 python3 $R/scripts/ab-bench --rounds 6 $BINS --case 'sparse_decode --no-baseline --iters 30' --out $OUT/ab.txt >$OUT/ab_run.log 2>&1; echo "ab rc=$? ($(el) s)"
cat $OUT/ab.txt
P=/tmp/bp82/bin/dsv4
for v in 0 2 8 0 2 8; do
  echo "=== prof B=1 kV=$v"; DSV4_SD_KV=$v timeout 20 $P bench sparse_decode --no-baseline --batch 1 --heads 128 --sq 1 --extra 1024 --iters 30 2>&1 | grep -E "sd-prof|fused" | grep -vE "DSV4_SD_VAR" | awk '{$1=$1};1' | tr '\n' ';' | sed 's/sd-prof: //g'; echo
done > $OUT/prof.txt 2>&1
cat $OUT/prof.txt | cut -c1-1500
tar czf $OUT/logs.tgz -C $OUT $(cd $OUT && ls *.log) 2>/dev/null; rm -f $OUT/*.log
