#!/bin/bash
# A/B of this stop's vec4 changes for CPU adapters (the GEMMs' vec4 stores, 49a3c03; the row kernels' vec4 views and
# the invocation-per-4-columns channel sums, a131f1d) against c3111b7: bench's per-kernel profile of the three GPT steps
# (V = 256), old and new alternating twice, each binary with its own tuner cache (empty at the first round).
# OLD and NEW are the two builds' examples/bench; the outputs are ab-{old,new}-{1,2}.txt.
set -u
export WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp
rm -f /tmp/ab_tc_old.json /tmp/ab_tc_new.json
for round in 1 2; do
  for b in old new; do
    bin=$OLD; [ $b = new ] && bin=$NEW
    DPO3D_TUNE_CACHE=/tmp/ab_tc_$b.json $bin --no-matmul --no-generation --profile --out /tmp/ab_$b.json \
      > ab-$b-$round.txt 2>&1
  done
done
# GEMM time (sum of the gemm_* dispatches, each timed alone) and whole step per GPT config:
for f in ab-*-*.txt; do
  echo "$f: $(awk '/gemm_/{s+=$2} /sum of/{printf "gemm %.1f ms, ", s/1000; s=0} /^ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9.]+ +[0-9]+/{printf "step %s ms | ", $7}' $f)"
done
