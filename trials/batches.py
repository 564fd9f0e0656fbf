"""Training batches: a pure function of (seed, iteration), from fresh crops or a teacher bank.

Patch i of the stream is `dataset[perm_epoch[i mod n]]` with the epoch's permutation and crops
drawn from (seed, epoch), so a run restarted from a checkpoint sees exactly the batches it
would have seen — no data-loader state to save. A teacher bank (`teacher_bank`) is a fixed
set of K such patches with the teacher's SR of each precomputed: its batches walk the bank
the same way and carry those outputs along (`Batch.teacher_sr`).

Batches are built on the host as uint8, channels-last; `to_device` converts them on the
training device.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from srstudy.data import PatchDataset


class Batch(NamedTuple):
    """One iteration's batch. `teacher_sr` is present only for a batch from a teacher bank."""

    lr: torch.Tensor  # uint8 (B, p, p, 3)
    hr: torch.Tensor  # uint8 (B, p·s, p·s, 3)
    teacher_sr: torch.Tensor | None = None  # float16 (B, 3, p·s, p·s): the teacher's output, precomputed

    def pin_memory(self) -> Batch:
        """The same batch in page-locked host memory, so the copy to a CUDA device can overlap compute."""
        return Batch(*(None if t is None else t.pin_memory() for t in self))


def batch_indices(n: int, batch_size: int, iteration: int, seed: int) -> list[tuple[int, int]]:
    """(epoch, index) pairs of the batch for `iteration` in a seeded, epoch-wise shuffled stream."""
    out = []
    start = iteration * batch_size
    perm_cache: dict[int, np.ndarray] = {}
    for pos in range(start, start + batch_size):
        epoch, k = divmod(pos, n)
        if epoch not in perm_cache:
            perm_cache[epoch] = np.random.default_rng((seed, 7919, epoch)).permutation(n)
        out.append((epoch, int(perm_cache[epoch][k])))
    return out


def make_batch(dataset: PatchDataset, batch_size: int, iteration: int, seed: int) -> Batch:
    """The (lr, hr) batch of `iteration` as uint8 (B, p, p, 3) and (B, p·s, p·s, 3) tensors."""
    lrs, hrs = [], []
    for epoch, idx in batch_indices(len(dataset), batch_size, iteration, seed):
        dataset.set_epoch(epoch)
        lr, hr = dataset.patch(idx)
        lrs.append(lr)
        hrs.append(hr)
    return Batch(torch.from_numpy(np.stack(lrs)), torch.from_numpy(np.stack(hrs)))


def bank_item(dataset: PatchDataset, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Bank item j: the dataset's patch (epoch j // n, index j % n), uint8 LR and HR views."""
    epoch, index = divmod(j, len(dataset))
    dataset.set_epoch(epoch)
    return dataset.patch(index)


def make_bank_batch(dataset: PatchDataset, targets: np.ndarray, batch_size: int, iteration: int,
                    seed: int) -> Batch:
    """Iteration's batch from a teacher bank whose precomputed outputs are `targets` (K, 3, H, W):
    uint8 LR, uint8 HR (B, H, W, 3) and float16 teacher SR (B, 3, H, W)."""
    js = [j for _, j in batch_indices(len(targets), batch_size, iteration, seed)]
    items = [bank_item(dataset, j) for j in js]
    lr = torch.from_numpy(np.stack([a for a, _ in items]))
    hr = torch.from_numpy(np.stack([b for _, b in items]))
    return Batch(lr, hr, torch.from_numpy(np.ascontiguousarray(targets[js])))


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float32 (B, 3, H, W) in [0, 1] on `device`."""
    return batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255).contiguous()
