"""The shared part of the scripts that score one checkpoint on benchmark sets: their
command-line arguments, and the device, network and sets those arguments name."""
from __future__ import annotations

import argparse
import platform

import torch

from srstudy.measure.evaluate import open_sets
from srstudy.measure.inference import resolve_device
from srstudy.models.dvmsr import load_checkpoint


def checkpoint_eval_parser(doc: str | None, *, sets: str, device: str, out_required: bool) -> argparse.ArgumentParser:
    """--checkpoint, --data-root, --sets, --device and --out; callers add their own options."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root", required=True, help="folder holding <Set>/HR and <Set>/LR_bicubic")
    ap.add_argument("--sets", default=sets)
    ap.add_argument("--device", default=device)
    ap.add_argument("--out", required=out_required, default=None)
    return ap


def open_checkpoint_and_sets(args: argparse.Namespace):
    """(device, network on it, the benchmark sets, the device's name) from parsed arguments."""
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint).to(device)
    sets = open_sets(args.data_root, args.sets.split(","), scale=model.cfg.scale)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return device, model, sets, name
