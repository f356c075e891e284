#!/bin/bash
# What a new shape costs a first run: a study-like sequence of jobs on an empty cache (dpo3d's tuner cache and
# Mesa's shader cache both live under XDG_CACHE_HOME), timed job by job. Usage: first-runs.sh DPO3D_BINARY TAG
# (run from an empty scratch directory). Two SFT runs at batch 16 and 12, then `dpo3d generate` over the same 500
# prompts at batch sizes 200, 229 and 250 (as the LLM study's sampling jobs pick them), then batch 200 again.
set -e
B=$(realpath "$1"); TAG=$2
export WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} XDG_CACHE_HOME=$PWD/cache-$TAG
rm -rf cache-$TAG out-$TAG; mkdir -p out-$TAG
[ -f data/eval.jsonl ] || $B task-data --task math --output-dir data --rows 2000 --eval-rows 500 --seed 1 >/dev/null
[ -f tok/tokenizer.json ] || $B tokenizer --data data/sft.jsonl --vocab-size 512 --output-dir tok >/dev/null
t() {
  local name=$1; shift
  local s=$(date +%s.%N)
  "$@" > out-$TAG/$name.log 2>&1 || { echo "$name FAILED"; cat out-$TAG/$name.log; exit 1; }
  printf "%-16s %7.1f s  %s\n" $name $(echo "$(date +%s.%N) - $s" | bc) "$(grep -h "steps in\|completions of" out-$TAG/$name.log | head -1)"
}
SFT="sft --data data/sft.jsonl --tokenizer tok/tokenizer.json --layers 4 --width 128 --heads 4 --max-length 96
     --learning-rate 0.003 --max-steps 30 --logging-steps 10 --seed 1 --overwrite-output-dir"
t sft-cold $B $SFT --per-device-train-batch-size 16 --output-dir out-$TAG/sft
t sft-b12-cold $B $SFT --per-device-train-batch-size 12 --output-dir out-$TAG/sft12
GEN="generate --model out-$TAG/sft --data data/eval.jsonl --num-samples 1 --temperature 1 --max-new-tokens 24 --seed 12"
for bs in 200 229 250; do t gen-b$bs $B $GEN --batch-size $bs --output out-$TAG/gen$bs.jsonl; done
t gen-b200-warm $B $GEN --batch-size 200 --output out-$TAG/gen200w.jsonl
python3 -c "import json;d=json.load(open('cache-$TAG/dpo3d/kernels.json'));print('tuner cache entries:', sum(len(v) for v in d['adapters'].values()))"
