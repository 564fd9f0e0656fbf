#!/usr/bin/env bash
# On the lent H100: build mamba-ssm for sm_90 (its wheel comes back split in 15 MB parts,
# to be carried next time), then MambaLiteSR's Table III: teacher at rank 2 vs rank 30.
# Carry .devtrain (T91 ≥256 px + BSD200 + Set5, the mamba-ssm sdist, pydantic wheels).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/sd /tmp/whlout
ITERS=${ITERS:-400}
t0=$(date +%s)
cp .devtrain/mamba_ssm-*.tar.gz /tmp/sd/
bash benchmarks/gpu/build_mamba_ssm.sh /tmp/sd /tmp/whlout > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
(cd /tmp/whlout && w=$(ls mamba_ssm-*.whl) && echo "$w" > "$OUT/mamba_ssm_wheel_name.txt" && split -b 15M "$w" "$OUT/mamba_ssm_whl.part_")
echo "mamba-ssm ready after $(( $(date +%s) - t0 )) s"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devtrain/whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
python3 benchmarks/rank_energy.py --data-root .devtrain/data --ranks 2,30 --set teacher.iterations=$ITERS \
    --out "$OUT/rank_energy_h100.json" 2>&1 | grep -v "^$" | tail -20
echo "total $(( $(date +%s) - t0 )) s"
