#!/usr/bin/env bash
# Issue 7 on the lent H100: ONNX export of DVMSR and the Pareto-best student, onnxruntime
# (CPU-only build there) vs PyTorch on the CPU and on the GPU (chunked scan; mamba_ssm's
# kernel too when MAMBA=1 and .devdata/sdist holds its sdist: +3-4 min), and the
# `srstudy bench` loop with NVML energy per image for PyTorch CUDA. No Ray/MLflow needed.
#
# Carry .devdata (checkpoints/DVMSR.pth, benchmarks/Set5, optionally sdist/ and
# student.pth: the GPU study's Pareto-best student, e.g.
#   srstudy export --best --workdir <gpu study> --out /tmp/x   # prints the knee's run id
#   cp <gpu study>/trials/<trial id>/artifacts/student.pth .devdata/student.pth
# without it a litesr_student with random weights stands in: same graph, same latency).
# Results: $OUT/export_h100.json (commit as benchmarks/results/export_h100.json).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s)
BACKENDS=chunked
if [[ "${MAMBA:-0}" == 1 && -d .devdata/sdist ]]; then
  bash benchmarks/gpu/build_mamba_ssm.sh .devdata/sdist "$OUT" > "$OUT/build.log" 2>&1 \
    && BACKENDS=chunked,cuda || tail -20 "$OUT/build.log"
  echo "mamba-ssm step done after $(( $(date +%s) - t0 )) s (backends: $BACKENDS)"
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,power.draw --format=csv
python3 -c "import onnx, onnxruntime as o; print('onnx', onnx.__version__, 'onnxruntime', o.__version__, o.get_available_providers())"
if [[ -f .devdata/student.pth ]]; then STUDENT=(--student .devdata/student.pth); else STUDENT=(--student-preset litesr_student); fi
python3 benchmarks/bench_export.py --checkpoint .devdata/checkpoints/DVMSR.pth "${STUDENT[@]}" \
    --image .devdata/benchmarks/Set5/LR_bicubic/X4/img_001x4.png --devices cpu,cuda --backends "$BACKENDS" \
    --sizes 64,256 --repeats 10 --warmup 3 --bench-samples 200 --bench-size 64 \
    --out "$OUT/export_h100.json" 2>&1 | tee "$OUT/bench_export.log"
echo "total $(( $(date +%s) - t0 )) s"
