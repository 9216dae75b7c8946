"""Import textual-inversion embeddings and LoRAs trained elsewhere into FairSkin's run format.

One file is imported at a time into a new run directory (``dest``), written with the same
functions as a FairSkin run (see ``artifacts``), so imported and trained runs load alike.
Recognised layouts:

- ``diffusers-embedding``: ``{token: (dim,) | (1, dim)}``, diffusers' textual inversion script;
- ``a1111-embedding``: ``{"string_to_param": {"*": (1, dim)}, "name": ...}`` (.pt/.bin), or
  ``{"emb_params": (1, dim)}`` (.safetensors), the AUTOMATIC1111 web UI;
- ``token-dictionary``: several ``{token: tensor}`` entries in one file (the merged dictionary the
  skin-diff project saves), split into one file per token, which plain diffusers needs;
- ``diffusers-lora``: peft keys (``unet.<module>.lora_A.weight``), with diffusers' adapter
  metadata or, for peft's ``adapter_model.*``, the ``adapter_config.json`` beside it;
- ``kohya-lora``: ``lora_unet_<module>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``.

Pickled files are read with ``torch.load(weights_only=True)`` only: an embedding downloaded from
the internet must not be able to run code on the training server.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from fairskin.diffusion.artifacts import save_lora, save_token_embeddings, token_vector

DIFFUSERS_EMBEDDING = "diffusers-embedding"
A1111_EMBEDDING = "a1111-embedding"
MERGED_DICTIONARY = "token-dictionary"
DIFFUSERS_LORA = "diffusers-lora"
KOHYA_LORA = "kohya-lora"
SUFFIXES = (".safetensors", ".bin", ".pt")

_ADAPTER = "imported"
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_PEFT_FILE_STEM = "adapter_model"  # peft's save_pretrained writes adapter_config.json beside it


class ExternalArtifactError(ValueError):
    """An external artifact that cannot be imported; the message names the file and why."""


@dataclass(frozen=True)
class ExternalImport:
    layout: str
    tokens: list[str] = field(default_factory=list)
    has_lora: bool = False
    files: list[Path] = field(default_factory=list)  # what was written under ``dest``


def import_external(
    source: Path, *, dest: Path, expected_dim: int, base_path: str | None = None
) -> ExternalImport:
    """Convert ``source`` into a FairSkin run directory at ``dest``.

    ``expected_dim`` is the base text encoder's hidden size (768 for SD v1.5). A LoRA is loaded
    into the UNet of ``base_path`` (a diffusers folder or hub id), which checks that it fits and
    lets diffusers do the kohya conversion; embeddings need no base model, but when one is given
    their tokens are checked against its vocabulary. ``dest`` must be absent or empty; on any
    error nothing is written there.
    """
    source, dest = Path(source), Path(dest)
    payload, header = _read(source)
    layout = _detect(source, payload)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExternalArtifactError(f"{dest} already exists and is not an empty folder")

    is_lora = layout in (DIFFUSERS_LORA, KOHYA_LORA)
    embeddings: dict[str, torch.Tensor] = {}
    if not is_lora:
        embeddings = _embeddings(source, payload, layout, expected_dim)
        if base_path is not None:
            _check_tokens_are_new(source, list(embeddings), base_path)

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Built beside dest and renamed at the end, so a failure leaves no partial run behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".import", dir=dest.parent))
    try:
        if is_lora:
            written = [
                _import_lora(
                    source, payload, header, layout=layout, base_path=base_path, staging=staging
                )
            ]
        else:
            try:
                written = save_token_embeddings(staging, embeddings)
            except ValueError as error:
                raise ExternalArtifactError(f"{source}: {error}") from error
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExternalImport(
        layout=layout,
        tokens=list(embeddings),
        has_lora=is_lora,
        files=[dest / path.relative_to(staging) for path in written],
    )


def _read(source: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's top-level dictionary and, for safetensors, its header metadata."""
    if not source.is_file():
        raise ExternalArtifactError(f"{source} is not a file")
    suffix = source.suffix.lower()
    if suffix not in SUFFIXES:
        raise ExternalArtifactError(
            f"{source}: unsupported file type {suffix or '(none)'}; expected one of "
            f"{', '.join(SUFFIXES)}"
        )
    if suffix == ".safetensors":
        try:
            with safe_open(str(source), framework="pt", device="cpu") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}, (
                    handle.metadata() or {}
                )
        except (SafetensorError, OSError) as error:
            raise ExternalArtifactError(
                f"{source} is not a readable safetensors file: {error}"
            ) from error
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the refused callable in its message; anything else is a damaged file.
        blocked = re.search(r"unsupported GLOBAL (\S+)", str(error))
        if blocked is None:
            raise ExternalArtifactError(f"{source} is not a readable PyTorch file") from error
        raise ExternalArtifactError(
            f"{source} holds a Python object ({blocked.group(1)}), not only tensors and plain "
            "containers; it is refused rather than unpickled (only weights-only .bin/.pt files "
            "are accepted)"
        ) from error
    except Exception as error:  # torch raises many types; any of them means "not a checkpoint"
        raise ExternalArtifactError(f"{source} is not a readable PyTorch file: {error}") from error
    if isinstance(payload, torch.Tensor):
        raise ExternalArtifactError(
            f"{source} holds a bare tensor with no token name; save it as {{token: tensor}}"
        )
    if not isinstance(payload, Mapping) or not all(isinstance(k, str) for k in payload):
        raise ExternalArtifactError(
            f"{source} holds a {type(payload).__name__}, not a dictionary of named tensors"
        )
    return dict(payload), {}


def _detect(source: Path, payload: Mapping[str, Any]) -> str:
    keys = list(payload)
    if not keys:
        raise ExternalArtifactError(f"{source} is empty")
    if "string_to_param" in payload or "emb_params" in payload:
        return A1111_EMBEDDING
    if "clip_l" in payload or "clip_g" in payload:
        raise ExternalArtifactError(
            f"{source} is an SDXL embedding (clip_l/clip_g); FairSkin fine-tunes SD v1.5"
        )
    # LoRA weights have dotted parameter names (".lora_down.weight"); tokens never contain a
    # dot, so a token such as <lora-style> stays an embedding.
    parameters = [key for key in keys if "." in key]
    if any(key.startswith(_KOHYA_PREFIXES) for key in parameters):
        return KOHYA_LORA
    if any("lora" in key for key in parameters):  # diffusers' own test for a LoRA checkpoint
        return DIFFUSERS_LORA
    for key, value in payload.items():
        if not isinstance(value, torch.Tensor):
            raise ExternalArtifactError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if "." in key or value.dim() not in (1, 2):
            raise ExternalArtifactError(
                f"{source}: unknown layout: entry {key!r} (shape {tuple(value.shape)}) is "
                "neither a token embedding, an A1111 embedding nor a LoRA weight"
            )
    return DIFFUSERS_EMBEDDING if len(keys) == 1 else MERGED_DICTIONARY


def _embeddings(
    source: Path, payload: Mapping[str, Any], layout: str, expected_dim: int
) -> dict[str, torch.Tensor]:
    if layout == A1111_EMBEDDING:
        name = payload.get("name")
        token = name if isinstance(name, str) and name else source.stem
        if "emb_params" in payload:
            raw = {token: payload["emb_params"]}
        else:
            params = payload["string_to_param"]
            if not isinstance(params, Mapping) or list(params) != ["*"]:
                raise ExternalArtifactError(
                    f"{source}: A1111 'string_to_param' should hold one '*' entry"
                )
            raw = {token: params["*"]}
    else:
        raw = dict(payload)

    vectors = {}
    for token, tensor in raw.items():
        if isinstance(tensor, torch.Tensor) and tensor.dim() == 2 and tensor.shape[0] > 1:
            raise ExternalArtifactError(
                f"{source}: {token!r} is a multi-vector embedding ({tensor.shape[0]} vectors); "
                "FairSkin runs use one vector per token, so only single-vector embeddings can "
                "be imported"
            )
        try:
            vector = token_vector(token, tensor)
        except ValueError as error:
            raise ExternalArtifactError(f"{source}: {error}") from error
        if vector.shape[0] != expected_dim:
            raise ExternalArtifactError(
                f"{source}: embedding for {token!r} has {vector.shape[0]} dimensions; the base "
                f"model's text encoder uses {expected_dim}"
            )
        vectors[token] = vector
    return vectors


def _check_tokens_are_new(source: Path, tokens: list[str], base_path: str) -> None:
    from transformers import CLIPTokenizer

    # diffusers refuses to add a token the tokenizer already has; say so now, not at generation.
    vocab = CLIPTokenizer.from_pretrained(base_path, subfolder="tokenizer").get_vocab()
    taken = [token for token in tokens if token in vocab]
    if taken:
        raise ExternalArtifactError(
            f"{source}: {', '.join(map(repr, taken))} already in the base model's vocabulary; "
            "rename the token (e.g. <name>) before importing"
        )


def _import_lora(
    source: Path,
    payload: Mapping[str, Any],
    header: Mapping[str, str],
    *,
    layout: str,
    base_path: str | None,
    staging: Path,
) -> Path:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft.utils import get_peft_model_state_dict

    if base_path is None:
        raise ExternalArtifactError(
            f"{source}: importing a LoRA needs the base model it was trained for (base_path)"
        )

    weights: dict[str, torch.Tensor] = {}
    for key, value in payload.items():
        if not isinstance(value, torch.Tensor):
            raise ExternalArtifactError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        if not torch.isfinite(value).all():
            raise ExternalArtifactError(f"{source}: {key} contains NaN or infinite values")
        weights[key] = value
    text_encoder_keys = [k for k in weights if k.startswith(("lora_te", "text_encoder"))]
    if text_encoder_keys:
        raise ExternalArtifactError(
            f"{source} also adapts the text encoder ({len(text_encoder_keys)} weights such as "
            f"{text_encoder_keys[0]}); FairSkin LoRAs adapt the UNet only"
        )

    metadata = None
    if layout == DIFFUSERS_LORA:
        weights = {_unet_key(key): value for key, value in weights.items()}
        metadata = _lora_metadata(source, header)
    expected = sum(1 for key in weights if not key.endswith(".alpha"))

    try:
        unet = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet")
    except (OSError, ValueError) as error:
        raise ExternalArtifactError(
            f"cannot open the base model's UNet at {base_path}: {error}"
        ) from error
    try:
        # diffusers' own loader: it converts kohya names and alphas to peft's and, given
        # metadata, rebuilds the original LoraConfig (rank and alpha, hence the scale).
        state, network_alphas = StableDiffusionPipeline.lora_state_dict(dict(weights))
        StableDiffusionPipeline.load_lora_into_unet(
            state, network_alphas, unet=unet, adapter_name=_ADAPTER, metadata=metadata
        )
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise ExternalArtifactError(
            f"{source} does not fit the base model's UNet: {error}"
        ) from error
    # diffusers only warns about weights that match no module; a LoRA for another model would
    # otherwise import half-empty.
    loaded = len(get_peft_model_state_dict(unet, adapter_name=_ADAPTER))
    if loaded != expected:
        raise ExternalArtifactError(
            f"{source}: only {loaded} of its {expected} LoRA weights match modules of the base "
            "model's UNet; is it a LoRA for another model?"
        )
    unet.eval()
    return save_lora(staging, unet, adapter_name=_ADAPTER)


def _unet_key(key: str) -> str:
    # The same weight is named "unet.<module>" by diffusers, "base_model.model.<module>" by
    # peft's save_pretrained, and bare "<module>" by some training scripts.
    for prefix in ("unet.", "base_model.model."):
        if key.startswith(prefix):
            return "unet." + key.removeprefix(prefix)
    return "unet." + key


def _lora_metadata(source: Path, header: Mapping[str, str]) -> dict[str, Any] | None:
    """The LoraConfig a diffusers or peft LoRA was saved with, keyed as diffusers expects.

    With neither, diffusers' convention applies (alpha = rank, scale 1), as in plain diffusers.
    """
    from peft import LoraConfig

    config_file = source.with_name("adapter_config.json")
    if "lora_adapter_metadata" in header:
        try:
            metadata = json.loads(header["lora_adapter_metadata"])
        except json.JSONDecodeError as error:
            raise ExternalArtifactError(
                f"{source}: its lora_adapter_metadata is not valid JSON"
            ) from error
        if not isinstance(metadata, dict):
            raise ExternalArtifactError(f"{source}: its lora_adapter_metadata is not a mapping")
        config = {k.removeprefix("unet."): v for k, v in metadata.items() if k.startswith("unet.")}
    elif source.stem == _PEFT_FILE_STEM and config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ExternalArtifactError(f"{config_file} is not readable JSON") from error
        if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
            raise ExternalArtifactError(f"{config_file} does not describe a LoRA adapter")
    else:
        return None
    # diffusers rebuilds LoraConfig(**metadata); a field from a newer peft would make it fail.
    known = {f.name for f in fields(LoraConfig)}
    return {f"unet.{k}": v for k, v in config.items() if k in known} or None
