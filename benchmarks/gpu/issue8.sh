#!/usr/bin/env bash
# Issue 8 on the lent H100: the Triton scan vs mamba_ssm's CUDA scan vs chunked (scan at
# L=65,536, DVMSR inference, training steps vs the mamba_ssm.Mamba reference network), then
# the CUDA test of the Triton kernels against mamba_ssm. Carry .devwheels (the mamba-ssm
# wheel built by build_mamba_ssm.sh, split in parts). Each step writes its JSON to $OUT at once.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s)
w=$(cat .devwheels/mamba_ssm_wheel_name.txt)
cat .devwheels/mamba_ssm_whl.part_* > "/tmp/$w"
python3 -m pip install -q --no-deps "/tmp/$w" > "$OUT/pip.log" 2>&1 &
python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/pip.log" 2>&1
wait
echo "installed after $(( $(date +%s) - t0 )) s"
python3 benchmarks/bench_scan.py --device cuda --L 65536 --D 120 --N 16 --B 1 --reference-max-L 0 \
  --out "$OUT/bench_scan_triton_h100.json" 2>&1 | grep -E "^\[bench_scan\] [a-z]+:|ratio|Error"
echo "t=$(( $(date +%s) - t0 )) s"
python3 benchmarks/bench_dvmsr_inference.py --device cuda --sizes 64,256 --backends chunked,triton,cuda \
  --out "$OUT/dvmsr_inference_triton_h100.json" 2>&1 | tail -12
echo "t=$(( $(date +%s) - t0 )) s"
python3 benchmarks/bench_train_step.py --backends triton,cuda --precisions fp32 --repeats 8 --warmup 2 \
  --out "$OUT/train_step_fp32_h100.json" 2>&1 | tail -30
echo "t=$(( $(date +%s) - t0 )) s"
python3 -m pytest -q -m cuda -k mamba_ssm tests/test_scan_triton.py -p no:cacheprovider -s 2>&1 | tail -8
echo "t=$(( $(date +%s) - t0 )) s"
python3 benchmarks/bench_train_step.py --backends triton,cuda --precisions bf16 --repeats 8 --warmup 2 \
  --out "$OUT/train_step_bf16_h100.json" 2>&1 | tail -30
echo "total $(( $(date +%s) - t0 )) s"
