#!/usr/bin/env bash
# Session 12's inference runs on the H200 (mamba-ssm installed for the reference), one after another, no other
# GPU work: the shipped code at LR 64² and 256² in one run, then the LayerNorm crossover at LR 96²–192²
# (9,216–36,864 rows) with ATEN_INFERENCE_MAX_ROWS forced to 2**62 (PyTorch's LN) and 0 (Triton's), twice each,
# alternating. Results in $R (default /tmp/out/r).
set -uo pipefail
R=${R:-/tmp/out/r}; mkdir -p "$R"
python3 benchmarks/bench_dvmsr_inference.py --device cuda --sizes 64,256 --backends triton,reference --cuda-graphs \
  --rounds 20 --out "$R/dvmsr_inference_h200_session12.json" > "$R/inference_shipped.log" 2>&1
for turn in 1 2; do
  for rows in 4611686018427387904 0; do
    name=$([ "$rows" = 0 ] && echo triton || echo aten)
    python3 benchmarks/bench_dvmsr_inference.py --device cuda --sizes 96,128,160,192 --backends triton,reference \
      --rounds 10 --ln-aten-max-rows "$rows" --out "$R/dvmsr_inference_h200_ln_${name}_${turn}.json" \
      > "$R/inference_ln_${name}_${turn}.log" 2>&1
  done
done
echo DONE > "$R/DONE"
