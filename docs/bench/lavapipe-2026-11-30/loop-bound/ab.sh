#!/bin/bash
# A/B: default (no loop bound) vs DPO3D_SHADER_CHECKS=full, each with its own tuner cache, alternating.
cd /work/main
export WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp
rm -f /tmp/x/tc-new.json /tmp/x/tc-full.json
for i in 1 2 3; do
  for m in new full; do
    if [ $m = full ]; then export DPO3D_SHADER_CHECKS=full; else unset DPO3D_SHADER_CHECKS; fi
    r=$(DPO3D_TUNE_CACHE=/tmp/x/tc-$m.json ./target/release/examples/bench --no-generation --max-n 1024 --out /tmp/x/ab-$m-$i.json 2>&1 | awk '/^subgroup +1024/{g=$4} /ms\/step/{f=1;next} f&&NF>=9{printf "%s ", $7} END{printf " sg1024=%s", g}')
    echo "$m run$i: $r"
  done
done
