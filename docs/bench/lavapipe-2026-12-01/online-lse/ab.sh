#!/bin/bash
# A/B of the one-pass (online) logsumexp and the in-place log-prob backward (143c81c) against the commit before it
# (54b2e76): bench's per-kernel profile of the 2L C64 GPT step at GPT-2's vocabulary and at the llm-study's, alternating
# old and new twice, each binary with its own tuner cache. OLD and NEW are the two builds' examples/bench.
set -u
export WGPU_BACKEND=vulkan
for vocab in 50257 491; do
  for round in 1 2; do
    for b in old new; do
      bin=$OLD; [ $b = new ] && bin=$NEW
      echo "== vocab $vocab round $round $b"
      DPO3D_TUNE_CACHE=/tmp/ab_tc_$b.json $bin --no-matmul --no-generation --profile --quick --vocab $vocab \
        --out /tmp/ab_$b.json 2>&1 | grep -E "logprobs|gemm_srxn|gemm_sgnt|sum of dispatches|^ +2 +64"
    done
  done
done
