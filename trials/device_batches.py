"""Training batches cut on the GPU from images held there: the host only draws the crops.

On the host a batch is 128 crops of LR 64² and HR 256² patches, flipped, stacked and pinned:
~27 MB of uint8 copied three times per iteration by a Python thread. On an H200 that thread
made a batch every ~68–71 ms while the bf16 student step takes ~61 ms, so the loop waited for
its batches (`benchmarks/results/profile_trial_loop_h200.json`: `batch_wait` 17.6 ms an
iteration on the host; `recipe_trial_bf16_h200.json`: 67.7 ms an iteration). Here every
training image is copied to the device once, and a batch is one gather there:

    host:   crop(index) for the batch's patches → (image, top, left, hflip, vflip, transpose)
    device: out[b, y, x] = image_b[top_b + r, left_b + c]   (LR; HR with top·s, left·s)
            r, c = (x, y) if transpose else (y, x), each mirrored by vflip / hflip

The crops are `PatchDataset.crop`'s, so the batches are the host's, bit for bit (tested), and a
run may switch between the two (`TrialConfig.batch_crops`) without changing its result.
"""
from __future__ import annotations

import numpy as np
import torch

from srstudy.data import PatchDataset

from .batches import Batch, batch_indices


class Crops:
    """One batch as the host draws it: its crops (B, 6) int64 and, from a teacher bank, the
    teacher's outputs; what the prefetch thread hands over (pinned on CUDA)."""

    __slots__ = ("crops", "teacher_sr")

    def __init__(self, crops: torch.Tensor, teacher_sr: torch.Tensor | None = None) -> None:
        self.crops, self.teacher_sr = crops, teacher_sr

    def pin_memory(self) -> "Crops":
        """The same crops in page-locked memory (copied to the GPU without blocking)."""
        return Crops(self.crops.pin_memory(), None if self.teacher_sr is None else self.teacher_sr.pin_memory())


def image_bytes(dataset: PatchDataset) -> int:
    """Bytes the dataset's LR and HR images take on a device."""
    return sum(a.nbytes for a in dataset.lr) + sum(a.nbytes for a in dataset.hr)


def choose_batch_crops(setting: str, dataset: PatchDataset, device: torch.device) -> tuple[str, str]:
    """Where batches are cut, `host` or `device`, for `TrialConfig.batch_crops` = setting, and why.

    `auto`: on CUDA the device when the training images take at most 1/8 of its free memory (the
    rest is the step's), else the host; elsewhere the host (a CPU trial's device *is* the host).
    `host` / `device`: as asked (`device` works on a CPU too: the tests compare both there)."""
    if setting != "auto":
        return setting, f"batch_crops={setting}"
    if device.type != "cuda":
        return "host", f"auto: {device.type} trial"
    need, free = image_bytes(dataset), torch.cuda.mem_get_info(device)[0]
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    if need <= free / 8:
        return "device", f"auto: the training images ({mib(need)}) held on {device}"
    return "host", (f"auto: the training images ({mib(need)}) would take over 1/8 of {device}'s free memory "
                    f"({mib(free)}); set batch_crops=device to hold them there anyway")


class _Images:
    """Images of different sizes in one flat (pixels, 3) uint8 tensor, with each one's first pixel and width."""

    def __init__(self, images: list[np.ndarray], device: torch.device) -> None:
        sizes = [a.shape[0] * a.shape[1] for a in images]
        self.pixels = torch.from_numpy(np.concatenate([a.reshape(-1, 3) for a in images])).to(device)
        self.start = torch.tensor(np.cumsum([0] + sizes[:-1]), dtype=torch.int64, device=device)
        self.width = torch.tensor([a.shape[1] for a in images], dtype=torch.int64, device=device)

    def cut(self, crops: torch.Tensor, side: int, scale: int) -> torch.Tensor:
        """(B, side, side, 3) patches; `crops` (B, 6) on the device, corners in LR pixels × `scale`."""
        k, top, left, hflip, vflip, transpose = (c.view(-1, 1, 1) for c in crops.unbind(1))
        y = torch.arange(side, device=crops.device).view(1, side, 1)
        x = y.view(1, 1, side)
        rows = torch.where(transpose.bool(), x, y)  # the output axis read along the crop's rows
        cols = torch.where(transpose.bool(), y, x)
        rows = torch.where(vflip.bool(), side - 1 - rows, rows)
        cols = torch.where(hflip.bool(), side - 1 - cols, cols)
        index = self.start[k] + (top * scale + rows) * self.width[k] + left * scale + cols  # (B, side, side)
        return self.pixels[index]


class DeviceBatches:
    """The dataset's images on `device`, and the batch of any iteration cut there."""

    def __init__(self, dataset: PatchDataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, torch.device(device)
        self._lr = _Images(dataset.lr, self.device)
        self._hr = _Images(dataset.hr, self.device)

    def crops(self, batch_size: int, iteration: int, seed: int, *, bank_targets: np.ndarray | None = None) -> Crops:
        """The crops of `iteration`'s batch (host work only), as `batches.make_batch` /
        `make_bank_batch` would cut them; with a bank, its teacher outputs for them too."""
        n = len(self.dataset) if bank_targets is None else len(bank_targets)
        picks = batch_indices(n, batch_size, iteration, seed)
        rows = []
        for epoch, index in picks:
            if bank_targets is not None:  # bank item j: the dataset's patch (j // n, j % n)
                epoch, index = divmod(index, len(self.dataset))
            self.dataset.set_epoch(epoch)
            rows.append(self.dataset.crop(index))
        teacher_sr = None
        if bank_targets is not None:
            teacher_sr = torch.from_numpy(np.ascontiguousarray(bank_targets[[j for _, j in picks]]))
        return Crops(torch.tensor(rows, dtype=torch.int64), teacher_sr)

    def gather(self, crops: Crops) -> Batch:
        """The batch on the device: uint8 (B, p, p, 3) LR and (B, p·s, p·s, 3) HR (and the teacher's outputs)."""
        c = crops.crops.to(self.device, non_blocking=True)
        p, s = self.dataset.lr_patch, self.dataset.scale
        teacher_sr = None if crops.teacher_sr is None else crops.teacher_sr.to(self.device, non_blocking=True)
        return Batch(self._lr.cut(c, p, 1), self._hr.cut(c, p * s, s), teacher_sr)
