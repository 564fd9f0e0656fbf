#!/usr/bin/env bash
# On the lent H100: build mamba-ssm (and optionally causal-conv1d) from the sdist for sm_90
# only (~160 s instead of ~30 min for every arch), or install a wheel built earlier.
#   bash benchmarks/gpu/build_mamba_ssm.sh SDIST_DIR [WHEEL_OUT_DIR]
set -euo pipefail
src=${1:?sdist folder}; out=${2:-}
if ls "$src"/mamba_ssm-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --no-index "$src"/mamba_ssm-*.whl
  exit 0
fi
work=$(mktemp -d); tar -xzf "$src"/mamba_ssm-*.tar.gz -C "$work"; cd "$work"/mamba_ssm-*
python3 - <<'PY'
import re
s = open("setup.py").read()
anchor = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
assert anchor in s, "setup.py layout changed"
s = s.replace(anchor, '    cc_flag = [f for f in cc_flag if not f.startswith("arch=") and f != "-gencode"] + ["-gencode", "arch=compute_90,code=sm_90"]\n' + anchor, 1)
open("setup.py", "w").write(s)
PY
export MAMBA_FORCE_BUILD=TRUE MAX_JOBS=16
python3 -m pip wheel -q --no-deps --no-build-isolation -w dist .
python3 -m pip install -q --no-deps dist/*.whl
[[ -n "$out" ]] && cp dist/*.whl "$out"/ || true
