"""A run's artifacts, in the formats plain diffusers loads with no FairSkin code.

A run directory holds::

    embeddings/<name>.safetensors      one learned token per file: {token: float32 (dim,)}
    pytorch_lora_weights.safetensors   the UNet LoRA, with its LoraConfig as adapter metadata

so that anyone can restore a run with ``pipe.load_textual_inversion([...token files])`` and
``pipe.load_lora_weights(run_dir)``. One token per file because diffusers reads a single-key
state dict as "token -> embedding" and refuses a file with several keys. The adapter metadata
matters: without it diffusers assumes ``lora_alpha == r`` and the LoRA is applied at the wrong
scale (peft scales the update by alpha / r).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from fairskin.provenance import read_identity

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

EMBEDDINGS_DIR = "embeddings"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA weight name
MANIFEST_FILE = "manifest.json"  # what `training.train` writes about a finished run

# A token becomes a file name, so it is limited to characters that are safe in every file
# system and cannot climb out of the folder; the optional <...> is the usual token style.
_TOKEN = re.compile(r"<([A-Za-z0-9_-]+)>|([A-Za-z0-9_-]+)")

# The LoraConfig fields that change what the adapter computes. The metadata is limited to these
# because diffusers rebuilds the config with LoraConfig(**metadata): a field that only a newer
# peft knows (peft's full to_dict() has dozens) would make older installations refuse the file.
_LORA_METADATA_FIELDS = (
    "r",
    "lora_alpha",
    "target_modules",
    "rank_pattern",
    "alpha_pattern",
    "use_rslora",
    "use_dora",
    "lora_bias",
)


def token_file_name(token: str) -> str:
    """The file a token's embedding is stored in: ``"<dx-mel>"`` -> ``"dx-mel.safetensors"``."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(
            f"token {token!r} cannot be stored: use letters, digits, '_' and '-', "
            "optionally inside <...>"
        )
    return f"{match.group(1) or match.group(2)}.safetensors"


def token_vector(token: str, tensor: Any) -> torch.Tensor:
    """One token's embedding as a contiguous float32 CPU vector of shape (dim,).

    Accepts (dim,) and (1, dim), the two shapes single-vector embeddings are saved in.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"embedding for {token!r} is a {type(tensor).__name__}, not a tensor")
    vector = tensor.detach()
    if vector.dim() == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.dim() != 1 or vector.numel() == 0:
        raise ValueError(
            f"embedding for {token!r} has shape {tuple(tensor.shape)}; expected (dim,) or (1, dim)"
        )
    if not vector.is_floating_point():
        raise ValueError(f"embedding for {token!r} has dtype {vector.dtype}, not floating point")
    if not torch.isfinite(vector).all():
        raise ValueError(f"embedding for {token!r} contains NaN or infinite values")
    # clone(): a row of the text encoder's table is a view that would drag the whole table along.
    return vector.to(device="cpu", dtype=torch.float32).clone().contiguous()


def save_token_embeddings(run_dir: Path, embeddings: Mapping[str, torch.Tensor]) -> list[Path]:
    """Write ``run_dir/embeddings/<name>.safetensors``, one ``{token: (dim,)}`` file per token.

    The folder is replaced as a whole, so it always holds exactly the given tokens (a re-saved
    run never keeps a stale token), and it appears only once every file is written.
    """
    if not embeddings:
        raise ValueError("no token embeddings to save")
    vectors = {token: token_vector(token, tensor) for token, tensor in embeddings.items()}
    dims = {vector.shape[0] for vector in vectors.values()}
    if len(dims) > 1:
        raise ValueError(f"token embeddings have different sizes: {sorted(dims)}")
    file_names: dict[str, str] = {}
    for token in vectors:
        name = token_file_name(token)
        # Lower-cased: on case-insensitive file systems "<A>" and "<a>" would be one file.
        other = file_names.setdefault(name.lower(), token)
        if other != token:
            raise ValueError(f"tokens {other!r} and {token!r} would both be stored as {name}")

    folder = Path(run_dir) / EMBEDDINGS_DIR
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for token, vector in vectors.items():
        save_file({token: vector}, str(staging / token_file_name(token)), metadata={"format": "pt"})
    _replace_folder(staging, folder)
    return [folder / token_file_name(token) for token in vectors]


def _replace_folder(new: Path, folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _token_files(run_dir: Path) -> dict[str, tuple[Path, torch.Tensor]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    found: dict[str, tuple[Path, torch.Tensor]] = {}
    for path in sorted((run_dir / EMBEDDINGS_DIR).glob("*.safetensors")):
        state = load_file(str(path))
        if len(state) != 1:
            raise ValueError(f"{path} holds {len(state)} tensors; a token file holds one")
        ((token, tensor),) = state.items()
        if token_file_name(token) != path.name:
            raise ValueError(
                f"{path} holds token {token!r}, which belongs in {token_file_name(token)}"
            )
        found[token] = (path, token_vector(token, tensor))
    return found


def load_token_embeddings(run_dir: Path) -> dict[str, torch.Tensor]:
    """The tokens a run learned, ``{token: float32 (dim,)}``; empty if it learned none."""
    return {token: vector for token, (_, vector) in _token_files(run_dir).items()}


def lora_metadata(unet: UNet2DConditionModel, adapter_name: str = "default") -> dict[str, Any]:
    """The adapter's LoraConfig, as the metadata diffusers stores next to the weights."""
    configs = getattr(unet, "peft_config", None) or {}
    if adapter_name not in configs:
        raise ValueError(
            f"the UNet has no LoRA adapter named {adapter_name!r} "
            f"(it has: {sorted(configs) or 'none'})"
        )
    values = configs[adapter_name].to_dict()
    metadata = {field: values[field] for field in _LORA_METADATA_FIELDS if field in values}
    if isinstance(metadata.get("target_modules"), set | list | tuple):
        metadata["target_modules"] = sorted(metadata["target_modules"])  # stable file bytes
    return metadata


def save_lora(run_dir: Path, unet: UNet2DConditionModel, *, adapter_name: str = "default") -> Path:
    """Write ``run_dir/pytorch_lora_weights.safetensors`` with diffusers' own saver.

    The weights are peft's state dict of the adapter and the metadata its rank and alpha, so
    ``pipe.load_lora_weights(run_dir)`` rebuilds the same adapter at the same scale.
    """
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    metadata = lora_metadata(unet, adapter_name)
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    if not state:
        raise ValueError(f"LoRA adapter {adapter_name!r} has no weights")
    layers = {}
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"LoRA weight {key} contains NaN or infinite values")
        layers[key] = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()

    run_dir = Path(run_dir)
    staging = run_dir / (LORA_FILE + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    StableDiffusionPipeline.save_lora_weights(
        staging,
        unet_lora_layers=layers,
        weight_name=LORA_FILE,
        safe_serialization=True,
        unet_lora_adapter_metadata=metadata,
    )
    # Moved into place only once complete, so a crash never leaves a truncated LoRA file.
    target = run_dir / LORA_FILE
    (staging / LORA_FILE).replace(target)
    staging.rmdir()
    return target


def lora_run_dir(run_dirs: Sequence[Path]) -> Path | None:
    """The run of a lineage (oldest first) whose LoRA `load_run_artifacts` loads: the last one
    that has a LoRA file. What was trained with that LoRA (labels, an image-prompt adapter)
    is read from the same folder."""
    with_lora = [Path(d) for d in run_dirs if (Path(d) / LORA_FILE).is_file()]
    return with_lora[-1] if with_lora else None


def load_run_artifacts(pipe: StableDiffusionPipeline, run_dirs: Sequence[Path]) -> list[str]:
    """Load the tokens of every run in ``run_dirs`` and the LoRA of the last run that has one.

    ``run_dirs`` is a model's lineage, oldest first (TI -> LoRA -> joint). A token that several
    runs define takes the embedding of the latest of them, the run nearest the model: a joint
    run refines its textual-inversion parent's tokens by design. That holds only where the later
    run records the earlier one as a run it was trained from (its identity record or manifest);
    two runs that define a token differently without that link are unrelated sources, and
    which embedding is meant is ambiguous, so they are refused.

    Returns the runs' tokens, in order, which are now usable in prompts. A token the pipeline
    already has is skipped when its embedding is identical (loading the same runs twice is
    harmless) and refused otherwise. Everything is checked before the pipeline is changed.
    """
    chosen: dict[str, tuple[Path, torch.Tensor]] = {}
    for run_dir in run_dirs:
        for token, (path, vector) in _token_files(run_dir).items():
            earlier = chosen.get(token)
            if earlier is not None and not torch.equal(earlier[1], vector):
                source = earlier[0].parent.parent  # <run>/embeddings/<token file>
                if not _run_names(source) & _recorded_parents(Path(run_dir)):
                    raise ValueError(
                        f"token {token!r} has different embeddings in {earlier[0]} and {path}, "
                        f"and {run_dir} does not record {source} as a run it was trained from, "
                        "so which one is meant is ambiguous: load the runs of one lineage"
                    )
            chosen[token] = (path, vector)  # a later run of the lineage wins

    table = pipe.text_encoder.get_input_embeddings().weight
    vocab = pipe.tokenizer.get_vocab()
    to_load = []
    for token, (path, vector) in chosen.items():
        if vector.shape[0] != table.shape[1]:
            raise ValueError(
                f"{path}: embedding size {vector.shape[0]} does not match the "
                f"text encoder's {table.shape[1]}"
            )
        if token not in vocab:
            to_load.append(path)
        elif not torch.equal(table[vocab[token]].detach().cpu(), vector.to(table.dtype)):
            raise ValueError(
                f"token {token!r} ({path}) is already in the pipeline's tokenizer "
                "with a different embedding"
            )

    lora_dir = lora_run_dir(run_dirs)
    if lora_dir is not None:
        _activate_lora(pipe, lora_dir / LORA_FILE)
    if to_load:
        pipe.load_textual_inversion([str(path) for path in to_load])
    return list(chosen)


def _activate_lora(pipe: StableDiffusionPipeline, lora_file: Path) -> None:
    # Named after the file's content, so loading the same LoRA again reuses its adapter instead
    # of stacking a copy, and a different LoRA can never be mistaken for it.
    digest = hashlib.sha256(lora_file.read_bytes()).hexdigest()[:16]
    adapter_name = f"fairskin_{digest}"
    if adapter_name not in (getattr(pipe.unet, "peft_config", None) or {}):
        pipe.load_lora_weights(
            str(lora_file.parent), weight_name=lora_file.name, adapter_name=adapter_name
        )
    # Only this run's LoRA shapes the images, whatever adapters the pipeline held before.
    pipe.set_adapters(adapter_name)


def _run_names(run_dir: Path) -> set[str]:
    """What a run's descendants call it: its folder's name and its recorded identity."""
    names = {Path(run_dir).name}
    record = read_identity(Path(run_dir))
    if record and record.get("identity"):
        names.add(str(record["identity"]))
    return names


def _recorded_parents(run_dir: Path) -> set[str]:
    """The runs ``run_dir`` was trained from, by identity (its identity record) and by folder
    name (its manifest, written by older engines too); empty when it records none."""
    names: set[str] = set()
    record = read_identity(run_dir)
    if record and isinstance(record.get("parents"), list):
        names |= {str(p) for p in record["parents"]}
    try:
        manifest = json.loads((run_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("parents"), list):
        names |= {Path(str(p)).name for p in manifest["parents"]}
    return names
