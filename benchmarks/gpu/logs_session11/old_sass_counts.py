"""sm_90 SASS counts of the scan backward before session 11 (commit ae1ddfd), for benchmarks/results/sass_scan_bwd_session11.txt.

    mkdir -p /tmp/oldpkg/oldmodels && git archive ae1ddfd models | tar x -C /tmp/oldpkg && mv /tmp/oldpkg/models/* /tmp/oldpkg/oldmodels/
    PYTHONPATH=<a Triton 3.6.0 site> python benchmarks/gpu/logs_session11/old_sass_counts.py
"""
import importlib.util, sys
sys.path.insert(0, "/tmp/oldpkg")
spec = importlib.util.spec_from_file_location("sc", str(__import__("pathlib").Path(__file__).resolve().parents[1] / "sass_counts.py")); sc = importlib.util.module_from_spec(spec); spec.loader.exec_module(sc)
import oldmodels.scan_triton as OLD
for dtype, vec, reg in [("bf16", 4, 168), ("bf16", 4, 128), ("fp32", 0, 128)]:
    k = sc.compile_kernel(OLD, "bwd", (32, 1, 1), {"SPREAD": True, "VEC": vec}, dtype, reg)
    c, sass = sc.counts(k)
    lc = max(sc.loop_counts(sass), key=lambda l: l[2]["instructions"])[2]
    print(f"## triton 3.6.0, ae1ddfd (before session 11), {dtype}, VEC={vec}, maxnreg {reg}")
    print("  loop: " + " ".join(f"{a}={b}" for a, b in lc.items()))
