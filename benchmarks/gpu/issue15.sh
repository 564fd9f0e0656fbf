#!/usr/bin/env bash
# Issue 15 on the lent H200, one call: the scan kernels at the training shapes (tiles, earlier
# versions), a profile of the student step, then mamba_ssm's scan and the training steps vs the
# mamba_ssm.Mamba reference network, all in one run. mamba-ssm builds from its sdist (.devsd/)
# on the CPUs while the GPU times srstudy's kernels; its wheel comes back in 15 MB parts; a later
# call carries them as .devwheels/ instead. Extra scan modules to compare: .devvar/*.py.
#   STAGES="tests tiles profile mamba step refprofile" TILES="fwd=32,2,1;bwd=32,1,1" TESTS_K=dvmsr \
#     bash benchmarks/gpu/issue15.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/r; mkdir -p "$R" /tmp/whlout
STAGES=${STAGES:-"tests tiles profile mamba step refprofile"}
TILES=${TILES:-}   # e.g. "fwd=32,1,4;bwd=32,1,4" for the step benchmark
t0=$(date +%s); el() { echo "[t=$(( $(date +%s) - t0 ))s] $*"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv > "$R/smi.txt" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$R/pip.log" 2>&1 || tail -5 "$R/pip.log"
if has mamba; then
  if ls .devwheels/mamba_ssm_whl.part_* > /dev/null 2>&1; then
    w=$(cat .devwheels/mamba_ssm_wheel_name.txt); cat .devwheels/mamba_ssm_whl.part_* > "/tmp/$w"
    (python3 -m pip install -q --no-deps "/tmp/$w" > "$R/build.log" 2>&1; echo $? > /tmp/build.rc) &
  else
    (bash benchmarks/gpu/build_mamba_ssm.sh .devsd /tmp/whlout > "$R/build.log" 2>&1; echo $? > /tmp/build.rc) &
  fi
fi
extras=(); for f in .devvar/*.py; do [[ -e "$f" ]] && extras+=(--extra "$(basename "$f" .py)=$f"); done
if has tests; then
  el "GPU tests"
  python3 -m pytest -q -m cuda -p no:cacheprovider -n 16 ${TESTS_K:+-k "$TESTS_K"} tests/test_scan_triton.py \
    > "$R/tests.log" 2>&1
  tail -4 "$R/tests.log"
fi
if has tiles; then
  el "scan tiles at the training shapes"
  python3 benchmarks/bench_scan_tiles.py ${extras[@]+"${extras[@]}"} --out "$R/scan_tiles.json" > "$R/scan_tiles.log" 2>&1
  grep -E "^(shape|D[0-9]|conv)" "$R/scan_tiles.log" | grep -v "{" ; grep -E "Error|error" "$R/scan_tiles.log" | head -5
  if [[ -z "$TILES" ]]; then  # the fastest tile pair (forward + backward, D 64 fp32) for the steps below
    TILES=$(python3 -c "
import json, re
r = json.load(open('$R/scan_tiles.json'))['scan']
t = {k: v['fwdbwd_ms'] for k, v in r.items() if k.startswith('D64/float32/triton[') and 'fwdbwd_ms' in v}
f, b = json.loads(re.search(r'\\[.*\\]', min(t, key=t.get)).group(0).replace('(', '[').replace(')', ']'))
print('fwd=' + ','.join(map(str, f)) + ';bwd=' + ','.join(map(str, b)))" 2>/dev/null)
    echo "tiles for the steps: ${TILES:-defaults}"
  fi
fi
if has profile; then
  el "profile of the student step (triton)"
  python3 benchmarks/profile_step.py --impls triton --precisions fp32,bf16 --rows 40 ${TILES:+--scan-tiles "$TILES"} \
    --out "$R/profile_triton.txt" 2>&1 | grep "===="
fi
if has mamba; then
  el "waiting for mamba-ssm"; wait; echo "mamba-ssm install rc=$(cat /tmp/build.rc 2>/dev/null)"; tail -3 "$R/build.log"
  if ls /tmp/whlout/mamba_ssm-*.whl > /dev/null 2>&1; then
    (cd /tmp/whlout && w=$(ls mamba_ssm-*.whl) && echo "$w" > "$OUT/mamba_ssm_wheel_name.txt" \
       && split -b 15M "$w" "$OUT/mamba_ssm_whl.part_")
  fi
  el "mamba_ssm scan at the training shapes"
  python3 benchmarks/bench_scan_tiles.py --only-mamba --no-conv --out "$R/scan_mamba.json" > "$R/scan_mamba.log" 2>&1
  grep -E "^(shape|D[0-9])" "$R/scan_mamba.log" | grep -v "{"
fi
if has step; then
  el "training steps vs the reference"
  python3 benchmarks/bench_train_step.py --backends triton,cuda --precisions fp32,bf16 --repeats 10 --warmup 3 \
    ${TILES:+--scan-tiles "$TILES"} --out "$R/train_step_h200.json" > "$R/train_step.log" 2>&1
  grep -E "^(triton|cuda|reference)/" "$R/train_step.log"
  grep -E "ratio\"|Error" "$R/train_step.log" | head -30
fi
if has infer; then
  el "DVMSR inference, batch 1"
  python3 benchmarks/bench_dvmsr_inference.py --device cuda --sizes 64,256 --backends chunked,triton,cuda,reference \
    --out "$R/dvmsr_inference_h200.json" 2>&1 | tail -12
fi
if has refprofile; then
  el "profile of the reference step"
  python3 benchmarks/profile_step.py --impls reference --precisions fp32,bf16 --rows 40 --out "$R/profile_reference.txt" 2>&1 | grep "===="
fi
el "done"
tar czf "$OUT/results.tgz" -C "$OUT" r
