"""Fixed micro-batches: which candidates share a device pass, whatever the shard.

A candidate's pixels are not a function of its seed alone. Matrix products and convolutions
give a row results that differ in the last float bit with the number of rows computed together
(measured on CPU with the tiny model: the same seed in a pass of 1, 2, 3 or 8 rows changed up to
3 of 24 candidates by one level in one uint8 value; its position in the pass and the other rows'
seeds changed nothing), and with the device, dtype, library versions and CPU threads. Rounding
to uint8 then turns a few of those bits into a different PNG and sha256.

So the device pass is fixed by the plan, not by the shard: with a micro-batch size ``size``
(chosen when the batch is created), candidate ``i`` of a stratum belongs to group
``i // size`` at position ``i % size``, and every pass computes a whole group with all its
members' seeds, including members that the shard does not want or that are already stored.
A candidate's pixels and scores then depend on the batch's settings, its micro-batch size and
the machine (:func:`pixel_environment`), never on shard size, shard boundaries or what a
resumed shard had already stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairskin.generation.plan import Stratum

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MicroBatch:
    stratum: Stratum
    number: int  # the group: candidates number * size ... (number + 1) * size - 1
    size: int
    wanted: tuple[int, ...]  # candidate indices of this group asked for, ascending

    @property
    def indices(self) -> range:
        """Every member's candidate index, in position order (what one pass computes)."""
        return range(self.number * self.size, (self.number + 1) * self.size)

    @property
    def positions(self) -> list[int]:
        """The positions of the wanted members within the pass."""
        return [i - self.number * self.size for i in self.wanted]


def micro_batch_of(index: int, size: int) -> tuple[int, int]:
    """(group number, position) of a stratum's ``index``-th candidate."""
    if size <= 0:
        raise ValueError("the micro-batch size must be positive")
    if index < 0:
        raise ValueError("candidate indices start at 0")
    return divmod(index, size)


def micro_batches(candidates: Iterable[tuple[str, int, int]], size: int) -> list[MicroBatch]:
    """The groups covering ``candidates`` ((diagnosis, FST, index) triples), each once, in the
    order their first wanted candidate appears."""
    groups: dict[tuple[str, int, int], set[int]] = {}
    for dx, fst, index in candidates:
        number, _ = micro_batch_of(index, size)
        groups.setdefault((dx, int(fst), number), set()).add(index)
    return [
        MicroBatch(Stratum(dx, fst), number, size, tuple(sorted(wanted)))
        for (dx, fst, number), wanted in groups.items()
    ]


def pixel_environment(device: str | torch.device, dtype: object) -> dict[str, object]:
    """What besides the seed, the settings and the micro-batch size a pass's pixels depend on:
    the device (its model on a GPU), the dtype, torch and diffusers versions, and on CPU the
    number of torch threads (measured: 1 vs 2 threads changed 3 of 24 tiny-model candidates)."""
    import diffusers
    import torch

    device = torch.device(device)
    environment: dict[str, object] = {
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
        environment["cuda"] = torch.version.cuda
    else:
        environment["torch_threads"] = torch.get_num_threads()
    return environment
