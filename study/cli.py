"""The `srstudy` command line (typer): eval now; trial, teacher, launch, pareto, export and
bench join as their issues land."""
from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="srstudy: hyper-parameter studies for efficient Mamba super-resolution (DVMSR / MambaLiteSR).",
)
console = Console(stderr=True)


class Backend(str, Enum):
    auto = "auto"
    chunked = "chunked"
    cuda = "cuda"
    reference = "reference"


class Grey(str, Enum):
    rgb = "rgb"
    raw = "raw"


@app.callback()
def _root() -> None:
    """srstudy: hyper-parameter studies for efficient Mamba super-resolution."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command("eval")
def eval_command(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a .pth: srstudy's, or the official DVMSR (BasicSR) file"),
    model: str = typer.Option("network", "--model", help="'network' (needs --checkpoint) or 'bicubic'"),
    data_root: Path = typer.Option(..., "--data-root", help="folder holding <Set>/HR and <Set>/LR_bicubic/X4, or 'bundled' (no download)"),
    sets: str = typer.Option("Set5,Set14,BSD100", "--sets", help="comma-separated set names under --data-root"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto"),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="selective-scan backend"),
    grey: Grey = typer.Option(Grey.rgb, "--grey", help="grey images (Set14 img_003): 'rgb' (BasicSR) or 'raw' (published bicubic)"),
    tile: Optional[int] = typer.Option(None, "--tile", help="LR tile size for images too large for memory (off: whole image)"),
    as_json: bool = typer.Option(False, "--json", help='print {"Set5": {"psnr": …, "ssim": …, "n": 5}, …} on stdout'),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Mean Y-PSNR / SSIM per benchmark set (crop border = scale, the papers' protocol)."""
    _setup_logging(verbose)
    from .evaluate import bicubic_upscaler, evaluate, model_upscaler, open_sets
    from .inference import resolve_device

    names = [s.strip() for s in sets.split(",") if s.strip()]
    if not names:
        _fail("--sets is empty; e.g. --sets Set5,Set14,BSD100")
    try:
        if model == "bicubic":
            scale = 4
            upscaler = bicubic_upscaler(scale)
        elif model == "network":
            if checkpoint is None:
                _fail("--checkpoint is required unless --model bicubic")
            from srstudy.models.dvmsr import load_checkpoint

            dev = resolve_device(device)
            net = load_checkpoint(checkpoint).to(dev)
            net.set_scan_backend(None if backend is Backend.auto else backend.value)
            scale = net.cfg.scale
            upscaler = model_upscaler(net, scale=scale, device=dev, tile=tile)
        else:
            _fail(f"--model must be 'network' or 'bicubic', got {model!r}")
        benches = open_sets(data_root, names, scale=scale)
        on_image = None
        if not as_json:
            on_image = lambda s, n, p, q: console.print(f"  {s}/{n}: {p:.3f} dB, SSIM {q:.4f}")  # noqa: E731
        results = evaluate(upscaler, benches, grey_convention=grey.value, on_image=on_image)
    except (FileNotFoundError, ValueError, RuntimeError, MemoryError) as e:
        _fail(str(e))
    if as_json:
        print(json.dumps({k: {"psnr": v["psnr"], "ssim": v["ssim"], "n": v["n"]} for k, v in results.items()}))
        return
    table = Table(title=f"{model if model == 'bicubic' else checkpoint} ×{scale}, Y channel, crop {scale}")
    for col in ("set", "images", "PSNR (dB)", "SSIM", "seconds"):
        table.add_column(col)
    for k, v in results.items():
        table.add_row(k, str(v["n"]), f"{v['psnr']:.3f}", f"{v['ssim']:.4f}", f"{v['seconds']:.1f}")
    Console().print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
