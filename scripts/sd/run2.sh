#!/bin/bash
# Device run 2 (helper sd, round 7): tests + same-run A/B of old / A (prologue) / B (A + softmax),
# the phase profile of B. Snapshots: .snap-sd (B), .snap-sd-a (A), .snap-sd-old (db5d82e).
set -o pipefail
R=$(pwd); T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
bld() { (cd $R/$1 && cmake -S . -B $2 -DCMAKE_BUILD_TYPE=Release $3 >/dev/null && timeout 220 cmake --build $2 -j${5:-4} --target $4 >$OUT/build_$(basename $2).log 2>&1; echo "build $2 rc=$?") ; }
bld .snap-sd /tmp/bb2 "" "dsv4_cli dsv4_cuda_tests" 7 &
bld .snap-sd-a /tmp/ba2 "-DDSV4_BUILD_TESTS=OFF" dsv4_cli 3 &
bld .snap-sd-old /tmp/bo2 "-DDSV4_BUILD_TESTS=OFF" dsv4_cli 3 &
bld .snap-sd /tmp/bp2 "-DDSV4_BUILD_TESTS=OFF -DCMAKE_CUDA_FLAGS=-DDSV4_SD_PROFILE" dsv4_cli 3 &
wait; echo "builds $(el) s"
BINS="--bin old=/tmp/bo2/bin/dsv4"
L=$OUT/log.txt
timeout 120 /tmp/bb2/tests/dsv4_cuda_tests --gtest_filter='SparseDecode*' >$OUT/tests.log 2>&1; TB=$?
timeout 60 /tmp/bb2/bin/dsv4 verify sparse_decode >>$OUT/tests.log 2>&1; VB=$?
timeout 60 /tmp/ba2/bin/dsv4 verify sparse_decode >>$OUT/tests.log 2>&1; VA=$?
echo "tests B rc=$TB verify B rc=$VB verify A rc=$VA ($(el) s)"
grep -E "^\[  (PASSED|FAILED)|FAIL|PASS" $OUT/tests.log | head -30
[ $VA = 0 ] && BINS="$BINS --bin A=/tmp/ba2/bin/dsv4"
[ $TB = 0 ] && [ $VB = 0 ] && BINS="$BINS --bin B=/tmp/bb2/bin/dsv4"
for c in "--sq 1" "--sq 2"; do
  timeout 40 /tmp/bp2/bin/dsv4 bench sparse_decode --no-baseline --batch 128 --heads 128 $c --extra 1024 --iters 10 --warmup 2 2>&1 | grep -E "sd-prof|fused" >>$OUT/prof.txt
done
echo "prof $(el) s"
timeout 170 python3 $R/.snap-sd/scripts/ab-bench --rounds 2 $BINS --case 'sparse_decode --no-baseline --iters 30' --out $OUT/ab.txt >$OUT/ab_run.log 2>&1; echo "ab rc=$? ($(el) s)"
cat $OUT/ab.txt
cat $OUT/prof.txt | grep -E "wg0|S wait|softmax|wait full|loop total|prologue|fused|producers|wg1"
