#!/usr/bin/env bash
# Issue 3 on the lent H100: mamba-ssm built for sm_90, then scan timings, DVMSR inference
# per backend, Set5 with chunked vs cuda, and the CUDA-marked tests. Carry .devdata.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s)
bash benchmarks/gpu/build_mamba_ssm.sh .devdata/sdist "$OUT" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "mamba-ssm ready after $(( $(date +%s) - t0 )) s"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,power.draw --format=csv
python3 benchmarks/bench_scan.py --device cuda --L 65536 --D 120 --N 16 --B 1 --reference-max-L 65536 --time-cap-s 90 --out "$OUT/bench_scan_h100.json" 2>&1 | tail -25
python3 benchmarks/bench_dvmsr_inference.py --device cuda --sizes 64,256 --backends chunked,cuda --out "$OUT/dvmsr_inference_h100.json" 2>&1 | tail -8
python3 benchmarks/eval_backends.py --checkpoint .devdata/checkpoints/DVMSR.pth --data-root .devdata/benchmarks --sets Set5 --backends chunked,cuda --device cuda --out "$OUT/eval_backends_h100.json" 2>&1 | tail -6
python3 -m pytest -q -m cuda tests/test_scan.py tests/test_energy.py -p no:cacheprovider 2>&1 | tail -6
echo "total $(( $(date +%s) - t0 )) s"
