"""Calibration of `srstudy.trials.memory`: estimated vs measured memory of one training step.

Two measurements per network (DVMSR, random weights, random LR/HR batch, the chunked scan on
this CPU):

* `saved`: bytes of the tensors autograd saves in one training forward (unique storages,
  counted with `torch.autograd.graph.saved_tensors_hooks`) — exact, what the analytic
  coefficients of `trials/memory.py` are read from;
* `fused_saved`: the saved bytes with a stand-in for the fused (`cuda`, `triton`) scans;
* `forward`: the same for one no-grad forward (a live teacher's), for `K_INFER`;
* `peak`: growth of the process's peak resident memory (VmHWM, reset before) over one full step
  (forward, L1 loss, backward, Adam) at that batch, after two warm-up steps on one 8×8 patch, in a
  fresh subprocess each (measured before the counting pass, so nothing of that size is cached
  by the allocator yet) — what the trial's pre-flight check must not underestimate.

    python benchmarks/bench_activation_memory.py --out benchmarks/results/activation_memory_cpu.json

Prints and writes, per config, the estimate of `trials.memory.training_estimate`, the two
measurements and their ratios.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

# (embed_dim, n_groups, blocks_per_group, d_state, batch, LR patch)
CONFIGS = [
    (8, 1, 1, 16, 8, 32),
    (16, 2, 1, 16, 4, 24),   # the default study's student
    (24, 2, 2, 16, 4, 24),   # the default study's teacher
    (16, 2, 1, 16, 16, 32),
    (16, 2, 1, 8, 8, 32),
    (32, 2, 2, 16, 8, 32),
    (32, 4, 2, 16, 8, 32),   # MambaLiteSR's student at batch 8, LR 32²
    (60, 2, 2, 16, 4, 48),
    (32, 2, 2, 16, 2, 64),
]


def _status_kb(field: str) -> int:
    """A `/proc/self/status` figure in kB (VmRSS: resident now, VmHWM: its peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _growth_of_peak_rss(fn) -> int:
    """Bytes by which the process's peak resident memory rose above its current RSS while
    `fn()` ran: the kernel's peak mark (VmHWM) is reset to the current RSS first (writing 5
    to /proc/self/clear_refs), so neither import nor the parent's peak (`ru_maxrss` is
    inherited across exec) hides a small step."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - rss0) * 1024


def _step_in_this_process(C: int, G: int, K: int, N: int, B: int, P: int) -> dict:
    import torch
    import torch.nn.functional as F

    from srstudy.models.dvmsr import DVMSR, DVMSRConfig

    torch.manual_seed(0)
    model = DVMSR(DVMSRConfig(embed_dim=C, n_groups=G, blocks_per_group=K, rank=2, d_state=N, scale=4))
    model.set_scan_backend("chunked")
    opt = torch.optim.Adam(model.parameters())

    def step(b: int, hook=None, p: int = P) -> None:
        lr, hr = torch.rand(b, 3, p, p), torch.rand(b, 3, 4 * p, 4 * p)
        if hook is None:
            out = model(lr)
        else:
            with torch.autograd.graph.saved_tensors_hooks(hook, lambda t: t):
                out = model(lr)
        loss = F.l1_loss(out, hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(1, p=8), step(1, p=8)  # optimiser state, thread pools; small, so the allocator caches little
    growth = _growth_of_peak_rss(lambda: step(B))  # first at batch B: nothing of its size cached yet
    storages: dict[int, int] = {}

    def count(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    step(B, hook=count)  # the saved tensors of one forward at batch B
    return {"saved_bytes": sum(storages.values()), "peak_growth_bytes": growth}


def fused_saved_bytes(C: int, G: int, K: int, N: int, B: int, P: int) -> int:
    """Saved-tensor bytes of one training forward with a stand-in for the fused scans: an
    autograd Function that saves exactly what the Triton kernel saves (its inputs and the
    state entering each 128-token chunk) — the `fused` coefficients, without a GPU."""
    import torch

    from srstudy.models import scan
    from srstudy.models.dvmsr import DVMSR, DVMSRConfig

    class FusedStandIn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, delta, A, Bm, Cm, D, z, delta_bias):
            hc = u.new_empty(u.shape[0], u.shape[1], -(-u.shape[2] // 128), A.shape[1])
            ctx.save_for_backward(u, delta, A, Bm, Cm, D, z, delta_bias, hc)
            return torch.empty_like(u)

        @staticmethod
        def backward(ctx, dy):  # never run: only the forward's saved tensors are counted
            raise NotImplementedError

    def fused(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **_):
        return FusedStandIn.apply(u, delta, A, B, C, D, z, delta_bias)

    scan.register_backend("fused_standin", fused)
    model = DVMSR(DVMSRConfig(embed_dim=C, n_groups=G, blocks_per_group=K, rank=2, d_state=N, scale=4))
    model.set_scan_backend("fused_standin")
    from srstudy.trials.memory import measured_saved_bytes

    return measured_saved_bytes(model, torch.rand(B, 3, P, P))


def _forward_in_this_process(C: int, G: int, K: int, N: int, B: int, P: int) -> dict:
    """Peak-RSS growth of one no-grad forward (a live teacher's), after a small warm-up."""
    import torch

    from srstudy.models.dvmsr import DVMSR, DVMSRConfig

    model = DVMSR(DVMSRConfig(embed_dim=C, n_groups=G, blocks_per_group=K, rank=2, d_state=N, scale=4)).eval()
    model.set_scan_backend("chunked")
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))
        lr = torch.rand(B, 3, P, P)
        growth = _growth_of_peak_rss(lambda: model(lr))
    return {"forward_peak_growth_bytes": growth}


def measure(C: int, G: int, K: int, N: int, B: int, P: int, what: str = "_step_in_this_process") -> dict:
    """One measurement of one config, in a fresh subprocess (a clean peak-RSS counter)."""
    code = (f"import json, sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r}); "
            f"from bench_activation_memory import {what} as s; "
            f"print(json.dumps(s({C}, {G}, {K}, {N}, {B}, {P})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--repeats", type=int, default=2, help="peak measurements per config (the largest is kept)")
    args = ap.parse_args()

    from srstudy.config import ArchConfig
    from srstudy.trials.memory import inference_bytes, saved_activation_bytes, training_estimate

    rows = []
    for C, G, K, N, B, P in CONFIGS:
        arch = ArchConfig(embed_dim=C, n_groups=G, blocks_per_group=K, rank=2, d_state=N)
        est = training_estimate(arch, batch_size=B, patch_size=P, scale=4, backend="chunked")
        runs = [measure(C, G, K, N, B, P) for _ in range(args.repeats)]
        peaks = [r["peak_growth_bytes"] for r in runs if r["peak_growth_bytes"] is not None]
        row = {"embed_dim": C, "n_groups": G, "blocks_per_group": K, "d_state": N, "batch": B, "patch": P,
               "saved_mb": runs[0]["saved_bytes"] / 2**20, "estimated_saved_mb": est.saved_bytes / 2**20,
               "peak_growth_mb": max(peaks) / 2**20 if peaks else None,
               "estimated_total_mb": est.total_bytes / 2**20}
        row["fused_saved_mb"] = fused_saved_bytes(C, G, K, N, B, P) / 2**20
        row["estimated_fused_saved_mb"] = saved_activation_bytes(arch, batch_size=B, patch_size=P, scale=4,
                                                                 backend="triton") / 2**20
        fwd = [measure(C, G, K, N, B, P, "_forward_in_this_process")["forward_peak_growth_bytes"]
               for _ in range(args.repeats)]
        fwd = [f for f in fwd if f is not None]
        row["forward_peak_growth_mb"] = max(fwd) / 2**20 if fwd else None
        row["estimated_forward_mb"] = (inference_bytes(arch, batch_size=B, patch_size=P, scale=4, backend="chunked",
                                                       device_type="cpu") - 4 * arch.param_count(4)) / 2**20
        row["saved_ratio_estimate_to_measured"] = row["estimated_saved_mb"] / row["saved_mb"]
        if row["peak_growth_mb"]:
            row["peak_to_saved"] = row["peak_growth_mb"] / row["saved_mb"]
            row["total_ratio_estimate_to_measured"] = row["estimated_total_mb"] / row["peak_growth_mb"]
        if row["forward_peak_growth_mb"]:
            row["forward_ratio_estimate_to_measured"] = row["estimated_forward_mb"] / row["forward_peak_growth_mb"]
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "torch": __import__("torch").__version__, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
