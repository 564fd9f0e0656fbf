"""Static instruction counts of the scan kernels, compiled for sm_90 on a machine without a GPU.

    python benchmarks/gpu/sass_counts.py [--module path/to/scan_module.py] [--tile 32,1,1] [--dump DIR]
    python benchmarks/gpu/sass_counts.py --which bwd --set SPREAD=1   # the spread backward (v3)
    python benchmarks/gpu/sass_counts.py --module <a variant with SEQ_CONFIG, e.g. scan_triton_seq.py at f4b47df> --which bwd --tile 32,8,1

Compiles a scan module's `_fwd_kernel` and `_bwd_kernel` (default: models/scan_triton.py) with
`triton.compile` for `GPUTarget("cuda", 90, 32)` at the training shape (B 128, L 4096, D 64, N 16,
fp32 inputs, softplus, with D, z and Δ bias; pointers and 16-multiples specialised as a launch
would), disassembles the cubin with Triton's bundled `cuobjdump` and prints, per kernel, the
registers, spill bytes, shared memory and the SASS counts of shuffles (SHFL), special-function
ops (MUFU), barriers (BAR), global loads / stores / atomics and all instructions. The counts are
of the static code: the chunk loop's body runs once per chunk, so they compare two versions of
a kernel per chunk (the proxy for speed used in NOTES_issue15.md before a GPU measures it).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

SHAPE = dict(Bt=128, Dm=64, L=4096, N=16)
GROUPS = {"STL": r"\bSTL\b", "LDL": r"\bLDL\b", "SHFL": r"\bSHFL\b", "MUFU": r"\bMUFU\b", "BAR": r"\bBAR\b", "LDG": r"\bLDG\b", "STG": r"\bSTG\b",
          "ATOM": r"\b(RED|REDG|ATOM|ATOMG)\b", "LDS": r"\bLDS\b", "STS": r"\bSTS\b", "FFMA/FMUL/FADD": r"\bF(FMA|MUL|ADD)\b"}


def load(path: str):
    """The scan module at `path` (the package's own when it is models/scan_triton.py, whose imports are
    relative; else imported under its own name)."""
    if Path(path).resolve() == Path(__file__).resolve().parents[2] / "models" / "scan_triton.py":
        return importlib.import_module("srstudy.models.scan_triton")
    spec = importlib.util.spec_from_file_location(f"sass_{Path(path).stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _launch_values(mod, which: str, tile: tuple[int, ...]) -> dict:
    """The non-pointer arguments of kernel `which` at the training shape with `tile`."""
    Bt, Dm, L, N = SHAPE["Bt"], SHAPE["Dm"], SHAPE["L"], SHAPE["N"]
    T, G, warps, *tok = tile
    n_chunks, n_groups = L // T, Dm // G
    config = getattr(mod, "CONFIG", None) or mod.SEQ_CONFIG  # variants/scan_triton_seq.py: SEQ_CONFIG
    vals = dict(Dm=Dm, L=L, N=N, n_chunks=n_chunks, n_groups=n_groups, su_b=Dm * L, su_d=L, sB_b=N * L,
                sB_n=L, hc_chunks=L // config["fwd"][0], hc_every=T // config["fwd"][0],
                HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, N_P2=N, BLOCK=T, G=G,
                TOK=(N if tok and tok[0] else 1))
    # CONFIG["bwd_spread"] (variants/scan_triton_v3.py): per-token rows in the state tiles' layout
    vals["SPREAD"] = bool(config.get("bwd_spread")) and vals["TOK"] == 1
    # variants/scan_triton_seq.py: a backward of T-token segments (the states the forward stored)
    vals.update(SEG=T, n_segs=L // T)
    vals["STAGES"] = 1  # the backward's chunk loop not software-pipelined (--set STAGES=2: pipelined)
    vals["VEC"] = 0  # the backward's token offsets as they are (--set VEC=4: runs of 4, CONFIG["bwd_vec"])
    vals["STATES"] = True  # the forward stores the chunk-entry states (training)
    vals.update(sl_b=Dm * L, sl_k=L, R=0, A_LOG=False)  # Δ given as it is (R > 0: Δ = W·Δ_low, inference)
    vals["FLIP"] = 0  # the reverse recurrence as Triton's reverse scan (--set FLIP=2: between lane flips, CONFIG["bwd_flip"])
    return vals, warps


ACTIVATIONS = ("u_ptr", "dt_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr", "dy_ptr", "du_ptr", "ddt_ptr", "dz_ptr")


def compile_kernel(mod, which: str, tile: tuple[int, ...], overrides: dict | None = None, dtype: str = "fp32",
                   maxnreg: int | None = None):
    """triton.compile of `mod._{which}_kernel` for sm_90 (`overrides`: constexpr values to change;
    `dtype`: of the activations u, Δ, B, C, z, y and their gradients, e.g. "bf16"; `maxnreg`: the
    registers-a-thread cap, as the launch option of that name)."""
    fn = getattr(mod, f"_{which}_kernel")
    vals, warps = _launch_values(mod, which, tile)
    vals.update(overrides or {})
    sig, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        param = fn.params[i]
        if param.is_constexpr:
            sig[name], consts[name] = "constexpr", vals[name]
        elif name.endswith("_ptr"):
            sig[name], attrs[(i,)] = f"*{dtype if name in ACTIVATIONS else 'fp32'}", [["tt.divisibility", 16]]
        elif vals[name] == 1:  # a launch specialises integer 1 to a constant
            sig[name], consts[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if vals[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    options = {"num_warps": warps} | ({"maxnreg": maxnreg} if maxnreg else {})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def counts(kernel) -> dict:
    """Registers, spills, shared memory and SASS instruction counts of a compiled kernel."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        sass = subprocess.run([str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
        res = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True,
                             check=True).stdout
    ops = [ln for ln in sass.splitlines() if re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+\S", ln)]
    out = {k: sum(1 for ln in ops if re.search(p, ln)) for k, p in GROUPS.items()}
    out["instructions"] = len(ops)
    out["dynamic_shared"] = kernel.metadata.shared  # bytes a program: the pipelined loads' buffers
    m = re.search(r"REG:(\d+).*?STACK:(\d+).*?SHARED:(\d+).*?LOCAL:(\d+)", res)
    out.update(dict(zip(("registers", "stack", "shared", "local"), map(int, m.groups()))) if m else {})
    out["spill_st"] = sum(1 for ln in ops if re.search(r"\bSTL\b", ln))
    out["spill_ld"] = sum(1 for ln in ops if re.search(r"\bLDL\b", ln))
    return out, sass


def loop_counts(sass: str) -> list[tuple[int, int, dict]]:
    """SASS counts of each loop body: the code from a backward branch's target to the branch
    (nested loops: the outer body includes the inner ones once)."""
    ops = [(int(m.group(1), 16), m.group(2)) for m in
           (re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*)", ln) for ln in sass.splitlines()) if m]
    spans = sorted({(int(b.group(1), 16), a) for a, txt in ops
                    if (b := re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", txt)) and int(b.group(1), 16) < a})
    out = []
    for lo, hi in spans:
        body = [t for a, t in ops if lo <= a <= hi]
        out.append((lo, hi, {"instructions": len(body), **{k: sum(1 for t in body if re.search(p, t))
                                                          for k, p in GROUPS.items()}}))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", default=str(Path(__file__).resolve().parents[2] / "models" / "scan_triton.py"))
    ap.add_argument("--tile", default=None, help="T,G,warps[,tok] for both kernels (default: the module's CONFIG)")
    ap.add_argument("--which", default="fwd,bwd")
    ap.add_argument("--dump", default=None, help="folder for the SASS and TTGIR of each kernel")
    ap.add_argument("--loops", action="store_true", help="also the counts of each loop body")
    ap.add_argument("--dtype", default="fp32", help="the activations' dtype (fp32, bf16, fp16)")
    ap.add_argument("--set", action="append", default=[], help="NAME=int: a constexpr of the kernel, e.g. SPREAD=0")
    ap.add_argument("--maxnreg", type=int, default=None, help="cap the registers a thread (launch option)")
    args = ap.parse_args()
    mod = load(args.module)
    for which in args.which.split(","):
        tile = tuple(int(v) for v in args.tile.split(",")) if args.tile else mod.CONFIG[which]  # (--tile for seq)
        k = compile_kernel(mod, which, tile, {a: int(b) for a, b in (kv.split("=") for kv in args.set)}, args.dtype,
                           args.maxnreg)
        c, sass = counts(k)
        print(f"{Path(args.module).name} {which} {tile} {args.dtype}: " + " ".join(f"{a}={b}" for a, b in c.items()), flush=True)
        if args.loops:
            for lo, hi, lc in loop_counts(sass):
                print(f"  loop {lo:#x}-{hi:#x}: " + " ".join(f"{a}={b}" for a, b in lc.items()))
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            stem = f"{Path(args.module).stem}_{which}"
            Path(args.dump, stem + ".sass").write_text(sass)
            Path(args.dump, stem + ".ttgir").write_text(k.asm["ttgir"])
            Path(args.dump, stem + ".ptx").write_text(k.asm["ptx"])


if __name__ == "__main__":
    main()
