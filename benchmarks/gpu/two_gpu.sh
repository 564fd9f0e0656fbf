#!/usr/bin/env bash
# A sitting on two GPUs (nvidia-h200-x2), in the background: first two lists of sitting.sh stages
# at once, GPU0_STAGES on GPU 0 and GPU1_STAGES on GPU 1 (each alone on its GPU: timings stay
# clean), then, when both are done, THEN_STAGES on both GPUs (e.g. a study at max_concurrent=8).
# Every other variable is sitting.sh's (STUDY_CONFIG, W, STUDY_SET, REPORT_NAME, END_AT, ...);
# the three runs share /tmp/out/r (timeline.txt says which GPU ran what).
#   GPU0_STAGES="loopprof inference" GPU1_STAGES=recipe RECIPE_PRECISION=bf16 THEN_STAGES="study report" \
#     setsid nohup bash benchmarks/gpu/two_gpu.sh > /tmp/two_gpu.log 2>&1 < /dev/null &
set -uo pipefail
O=${O:-/tmp/out}; mkdir -p "$O/r"
run() {  # run GPU LIST: sitting.sh's stages LIST on GPU (without its results tarball: the last run makes it)
  CUDA_VISIBLE_DEVICES=$1 STAGES="$2" O="$O" bash benchmarks/gpu/sitting.sh > "$O/r/gpu$1.log" 2>&1
}
rm -f "$O/DONE"
[[ -n ${GPU0_STAGES:-} ]] && { run 0 "$GPU0_STAGES" & }
[[ -n ${GPU1_STAGES:-} ]] && { run 1 "$GPU1_STAGES" & }
wait
rm -f "$O/DONE"
[[ -n ${THEN_STAGES:-} ]] && STAGES="$THEN_STAGES" O="$O" bash benchmarks/gpu/sitting.sh > "$O/r/both.log" 2>&1
tar czf "$O/results.tgz" -C "$O" r
touch "$O/DONE"
