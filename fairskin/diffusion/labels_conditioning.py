"""Class-label conditioning: diagnosis and skin-type labels added to the UNet's time embedding.

Scheme ("summed"): one learned vector per diagnosis (7) and one per Fitzpatrick type (6), both
of the time-embedding width; a label is their sum. The null label of each part is a fixed zero
row, so the full null label adds nothing: the UNet is then exactly the UNet without labels
(what plain ``StableDiffusionPipeline`` computes), and classifier-free guidance on the labels
contrasts a label against that model. Both tables start at zero, so step 0 equals the base.

Why summed rather than one row per cell (7 x 6 + 1): the plan asks for cells that have no
training image (for example DF x VI); a summed label still has a vector for them, made of
what the diagnosis and the skin type each learned from other cells. A combined table cannot.

diffusers' ``UNet2DConditionModel`` takes one integer per sample as ``class_labels`` and hands
it to ``unet.class_embedding``. The two parts are packed into one index,
``index = dx_slot * 7 + fst_slot`` (dx_slot 0..6 in `DX_CLASSES` order, 7 for no diagnosis;
fst_slot 0..5 for types I..VI, 6 for no skin type), 8 x 7 = 56 indices, 55 the full null.
`LabelEmbedding` is the trainable module; `LabelEmbedding.table` expands it to a plain
(56, width) matrix, which is what the saved file carries for tools without FairSkin:
``unet.class_embedding = torch.nn.Embedding.from_pretrained(table)`` reproduces it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairskin.labels import FST_TYPES, SEVEN_CLASSES

SCHEME = "summed-dx-fst"
FORMAT_VERSION = "1"
FILENAME = "labels.safetensors"
DX_CLASSES: tuple[str, ...] = tuple(d.value for d in SEVEN_CLASSES)
NULL_DX = len(DX_CLASSES)  # 7
NULL_FST = len(FST_TYPES)  # 6
FST_SLOTS = NULL_FST + 1  # 7
NUM_INDICES = (NULL_DX + 1) * FST_SLOTS  # 56
NULL_INDEX = NULL_DX * FST_SLOTS + NULL_FST  # 55


class LabelError(ValueError):
    """A label, a label file or a UNet that label conditioning cannot use."""


def label_index(diagnosis: str | None, fst: int | None) -> int:
    """The packed class-label index of a diagnosis and skin type; None leaves that part null."""
    if diagnosis is None:
        dx_slot = NULL_DX
    elif diagnosis in DX_CLASSES:
        dx_slot = DX_CLASSES.index(diagnosis)
    else:
        raise LabelError(
            f"diagnosis {diagnosis!r} has no label; expected one of {', '.join(DX_CLASSES)}"
        )
    if fst is None:
        fst_slot = NULL_FST
    elif isinstance(fst, int) and not isinstance(fst, bool) and fst in FST_TYPES:
        fst_slot = fst - 1
    else:
        raise LabelError(f"skin type {fst!r} has no label; expected a whole number 1 to 6")
    return dx_slot * FST_SLOTS + fst_slot


def label_indices(
    labels: Sequence[tuple[str | None, int | None]], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(diagnosis, fst) pairs as a long tensor of packed indices."""
    return torch.tensor([label_index(dx, fst) for dx, fst in labels], device=device)


def null_labels(count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.full((count,), NULL_INDEX, dtype=torch.long, device=device)


def drop_labels(
    indices: torch.Tensor,
    rate: float,
    generator: torch.Generator | None = None,
    *,
    draws: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each label replaced by the full null label with probability ``rate``: by the given
    uniform ``draws`` (one per label; training draws them per sample, `parallel`), else seeded
    by ``generator``, else by torch's global generator."""
    if not 0 <= rate < 1:
        raise LabelError(f"label dropout must be in [0, 1), got {rate!r}")
    if draws is not None:
        if draws.shape != indices.shape:
            raise LabelError(f"{draws.numel()} dropout draws for {indices.numel()} labels")
    elif generator is None:
        draws = torch.rand(indices.shape, device=indices.device)
    else:
        draws = torch.rand(indices.shape, generator=generator, device=generator.device)
    return torch.where(draws.to(indices.device) < rate, NULL_INDEX, indices)


def item_label(diagnosis: str, fst: int | None) -> int:
    """A training image's label: an image of none of the seven classes (OTHER) or of no
    recorded skin type gets the null part there, and still teaches the other part."""
    return label_index(diagnosis if diagnosis != "OTHER" else None, fst)


class LabelEmbedding(nn.Module):
    """Packed label index -> diagnosis row + skin-type row (null rows fixed at zero)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.dx = nn.Parameter(torch.zeros(len(DX_CLASSES), width))
        self.fst = nn.Parameter(torch.zeros(len(FST_TYPES), width))

    def forward(self, class_labels: torch.Tensor) -> torch.Tensor:
        labels = class_labels.long()
        if labels.dim() != 1 or labels.numel() == 0:
            raise LabelError("class_labels must be a non-empty 1-d tensor of label indices")
        if int(labels.min()) < 0 or int(labels.max()) >= NUM_INDICES:
            raise LabelError(f"class label index out of range 0..{NUM_INDICES - 1}")
        zero = self.dx.new_zeros(1, self.width)
        dx_rows = torch.cat([self.dx, zero])[labels // FST_SLOTS]
        fst_rows = torch.cat([self.fst, zero])[labels % FST_SLOTS]
        return dx_rows + fst_rows

    def table(self) -> torch.Tensor:
        """Every packed index's vector, (NUM_INDICES, width): the plain-diffusers form."""
        with torch.no_grad():
            table: torch.Tensor = self(torch.arange(NUM_INDICES, device=self.dx.device))
        return table.detach().clone()


def time_embedding_width(unet: Any) -> int:
    return int(unet.time_embedding.linear_2.out_features)


def config_time_embedding_width(unet_config: dict[str, Any]) -> int:
    """The time-embedding width a UNet config gives (diffusers: ``time_embedding_dim``, else
    4 x the first block's channels; 1280 for SD v1.5), read without building the UNet."""
    explicit = unet_config.get("time_embedding_dim")
    if explicit:
        return int(explicit)
    return 4 * int(unet_config["block_out_channels"][0])


def attach_labels(unet: Any, module: LabelEmbedding | None = None) -> LabelEmbedding:
    """Put a label module (a fresh zero one by default) into ``unet.class_embedding``.

    Refused for a UNet that already has a class embedding of its own or concatenates it."""
    if unet.config.get("class_embeddings_concat"):
        raise LabelError("this UNet concatenates class embeddings; labels are added instead")
    current = getattr(unet, "class_embedding", None)
    if current is not None and not isinstance(current, LabelEmbedding):
        raise LabelError("this UNet already has a class embedding of its own")
    width = time_embedding_width(unet)
    module = module if module is not None else LabelEmbedding(width)
    if module.width != width:
        raise LabelError(
            f"label vectors are {module.width} wide but this UNet's time embedding is {width}"
        )
    unet.class_embedding = module.to(unet.device, unet.dtype)
    return module


def attached_labels(unet: Any) -> LabelEmbedding | None:
    module = getattr(unet, "class_embedding", None)
    return module if isinstance(module, LabelEmbedding) else None


def _metadata(module: LabelEmbedding) -> dict[str, str]:
    return {
        "format": "fairskin-labels",
        "format_version": FORMAT_VERSION,
        "scheme": SCHEME,
        "width": str(module.width),
        "diagnoses": json.dumps(list(DX_CLASSES)),
        "fst_types": json.dumps(list(FST_TYPES)),
        "index": "dx_slot * 7 + fst_slot; dx_slot 7 = no diagnosis, fst_slot = fst - 1, 6 = none",
        "null_index": str(NULL_INDEX),
        "usage": "unet.class_embedding = torch.nn.Embedding.from_pretrained(tensors['table']); "
        "unet(sample, t, text, class_labels=index)",
    }


def save_labels(path: Path, module: LabelEmbedding) -> Path:
    """The two learned tables and the expanded ``table``, with the scheme as metadata."""
    from safetensors.torch import save_file

    tensors = {
        "dx": module.dx.detach().float().cpu().contiguous(),
        "fst": module.fst.detach().float().cpu().contiguous(),
        "table": module.table().float().cpu().contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=_metadata(module))
    return path


def load_labels(path: Path) -> LabelEmbedding:
    """A saved label module; a file of another scheme or label set is refused."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise LabelError(f"no label file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise LabelError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    if meta.get("scheme") != SCHEME or meta.get("format") != "fairskin-labels":
        raise LabelError(f"{path.name}: not a FairSkin label file of scheme {SCHEME}")
    if json.loads(meta.get("diagnoses", "[]")) != list(DX_CLASSES) or json.loads(
        meta.get("fst_types", "[]")
    ) != list(FST_TYPES):
        raise LabelError(f"{path.name}: its label set differs from this version's")
    width = int(meta.get("width", "0"))
    if set(tensors) != {"dx", "fst", "table"} or tensors["dx"].shape != (len(DX_CLASSES), width):
        raise LabelError(f"{path.name}: tables missing or of the wrong shape")
    module = LabelEmbedding(width)
    with torch.no_grad():
        module.dx.copy_(tensors["dx"])
        module.fst.copy_(tensors["fst"])
    return module


def batch_labels(
    unet: Any,
    items: Sequence[Any],
    batch: Sequence[int],
    rate: float,
    *,
    draws: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The UNet's extra keyword for a training micro-batch: {} without labels attached, else
    ``class_labels`` from each item's diagnosis and skin type, dropped to null at ``rate``
    (by each sample's uniform draw in ``draws`` when given)."""
    if attached_labels(unet) is None:
        return {}
    indices = torch.tensor([item_label(items[i].diagnosis, items[i].fst) for i in batch])
    return {"class_labels": drop_labels(indices, rate, draws=draws).to(unet.device)}


@contextmanager
def labels_attached(unet: Any, module: LabelEmbedding) -> Iterator[None]:
    """``module`` in the UNet's class embedding for a while, then the UNet as it was: a
    generator keeps a label table aside and lends it to the UNet only for labelled sampling,
    so the plain pipeline (which passes no ``class_labels``) keeps working in between."""
    previous = getattr(unet, "class_embedding", None)
    attach_labels(unet, module)
    try:
        yield
    finally:
        unet.class_embedding = previous


def lineage_label_file(run_dirs: Sequence[Path]) -> Path | None:
    """The label table a model's lineage (oldest first) samples with: the one saved beside the
    LoRA that is loaded, the last run's that has a LoRA (`artifacts.load_run_artifacts`).
    Labels are learned together with that LoRA; another run's would not match it."""
    from fairskin.diffusion.artifacts import lora_run_dir

    folder = lora_run_dir(run_dirs)
    path = folder / FILENAME if folder is not None else None
    return path if path is not None and path.is_file() else None


@contextmanager
def labels_detached(unet: Any) -> Iterator[None]:
    """The UNet without its label module for a while: exactly the null label, and what a
    plain ``StableDiffusionPipeline`` (which passes no ``class_labels``) can call."""
    module = attached_labels(unet)
    if module is None:
        yield
        return
    unet.class_embedding = None
    try:
        yield
    finally:
        unet.class_embedding = module


def prepare_labels(unet: Any, enabled: bool, parent_run: Path | None) -> LabelEmbedding | None:
    """A training run's label module, attached and trainable: zero, or the parent run's
    (a joint run continues the labels its LoRA parent learned, when it has them)."""
    if not enabled:
        return None
    saved = parent_run / FILENAME if parent_run is not None else None
    module = attach_labels(unet, load_labels(saved) if saved and saved.is_file() else None)
    module.requires_grad_(True)
    return module


def save_run_labels(run_dir: Path, unet: Any) -> Path | None:
    """``labels.safetensors`` in the run folder when the UNet has labels attached."""
    module = attached_labels(unet)
    return save_labels(run_dir / FILENAME, module) if module is not None else None
