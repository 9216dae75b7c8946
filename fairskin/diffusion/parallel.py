"""Data-parallel training: what one process of N trains on, and how the N agree.

A run on N processes trains on the same global batch as a run on one: every rank draws the
same global batch from the same seeded sampler and takes the positions ``rank, rank + N, ...``
of it. Everything random about a sample (its timestep, noise, label and image-prompt dropout,
VAE posterior draw) is drawn from a generator seeded by (run seed, step, micro-batch, position
in the global batch), so it does not depend on which rank holds the sample, on N, or on
whether the run was resumed. Torch's global generator (LoRA dropout draws from it) is reseeded
from (seed, step, micro-batch, rank) before each micro-batch, so a resumed rank draws what the
uninterrupted one did.

After the last micro-batch of a step the ranks average their gradients and their loss in one
all-reduce. Why not ``DistributedDataParallel``: a textual-inversion run's trainable tensor is
the whole token embedding table (49,408 x 768 on SD v1.5, 152 MB of gradient per step) of
which only the new tokens' rows learn; reducing those rows alone sends a few KB. The loop also
has one place where gradients are complete (before clipping), so overlapping communication
with the backward pass, DDP's other gain, buys little for the LoRA's few MB. The diversity loss
compares samples across the whole global batch: each rank gathers every rank's embeddings with
``torch.distributed.nn.functional.all_gather`` (differentiable: its backward sums each rank's
gradient for the rows it owns) and computes the same loss; averaging then gives exactly the
one-process gradient.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch


def _mix(*parts: int) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def sample_generator(seed: int, step: int, micro: int, position: int) -> torch.Generator:
    """The CPU generator for one sample of the global batch (drawn on the CPU, so the same
    numbers on any device)."""
    return torch.Generator().manual_seed(_mix(seed, step, micro, position))


def reseed_global(seed: int, step: int, micro: int, rank: int) -> None:
    """Torch's global generators for one micro-batch of one rank (LoRA dropout uses them)."""
    torch.manual_seed(_mix(seed, step, micro, rank, 1))


def visible_devices() -> int:
    """How many ranks this machine can hold: its CUDA devices, else (gloo on the CPU) its
    cores, each rank taking at least one."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes (rank 0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes (checkpoints, logs, the validation grid, artifacts) and reports."""
        return self.rank == 0

    def positions(self, batch_size: int) -> list[int]:
        """The positions of the global batch this rank trains on."""
        if batch_size % self.world:
            raise ValueError(f"a batch of {batch_size} does not split over {self.world} ranks")
        return list(range(self.rank, batch_size, self.world))

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in global-batch order (rank r's k-th row at position r + k*N),
        with gradients flowing back to the rank that owns each row."""
        if self.world == 1:
            return rows
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(rows.contiguous())
        return torch.stack(parts, dim=1).reshape(-1, *rows.shape[1:])

    def average(self, learned: Any, step_loss: float) -> float:
        """Average the trainable gradients and the step's loss over the ranks, in one
        all-reduce; returns the global step loss. Of the token table only the new tokens'
        rows are sent (the rest of its gradient is zeroed by the loop anyway)."""
        if self.world == 1:
            return step_loss
        import torch.distributed as dist

        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []  # (gradient view, what is sent)
        for p in learned.parameters:
            if p.grad is None:  # outside the graph: so on every rank (the same modules run)
                continue
            if learned.trains_tokens and p is learned.embedding_table:
                pieces.append((p.grad, p.grad[learned.new_rows]))
            else:
                pieces.append((p.grad, p.grad))
        device = pieces[0][0].device if pieces else torch.device("cpu")
        flat = torch.cat(
            [sent.reshape(-1).float() for _, sent in pieces]
            + [torch.tensor([step_loss], device=device)]
        )
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for grad, sent in pieces:
            n = sent.numel()
            values = flat[offset : offset + n].view_as(sent).to(grad.dtype)
            if sent is grad:
                grad.copy_(values)
            else:
                grad[learned.new_rows] = values
            offset += n
        return float(flat[offset])


ONE_PROCESS = Ranks()
