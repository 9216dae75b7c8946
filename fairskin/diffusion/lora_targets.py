"""Which modules of the UNet a LoRA adapts: presets and module-name patterns.

A run's ``lora_targets`` is a list whose entries are

* a preset: ``cross_attention`` (the text-conditioning attention, ``attn2``: what the planning
  document adapts, and the default), ``self_attention`` (``attn1``) or ``all_attention``
  (both: 3.19 M parameters on SD v1.5 at the default rank 16, against 1.59 M for
  cross-attention only; docs/validation/lora-targets.md);
* a module name, matched as a suffix of the UNet's module names at a dot boundary (peft's rule
  for a list of names): ``to_q`` matches every attention's query projection,
  ``attn2.to_q`` only the cross-attentions', ``up_blocks.3.attentions.2.transformer_blocks.0.
  attn2.to_q`` exactly one. A name must end in a layer LoRA can adapt (`LORA_LAYERS`).

Presets are expanded into names when a config is built, so a run records the modules it
adapted. The names' form is checked with no model (`lora_target_problems`); when training
starts, each must match a module of the loaded UNet (`unmatched_lora_targets`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# The Linear (and 1x1 convolution) layers of the SD UNet's transformer blocks.
LORA_LAYERS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
)
ATTENTION_LAYERS = ("to_q", "to_k", "to_v", "to_out.0")
PRESETS: dict[str, tuple[str, ...]] = {
    "cross_attention": tuple(f"attn2.{name}" for name in ATTENTION_LAYERS),
    "self_attention": tuple(f"attn1.{name}" for name in ATTENTION_LAYERS),
    "all_attention": ATTENTION_LAYERS,
}
DEFAULT_LORA_TARGETS = PRESETS["cross_attention"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def expand_lora_targets(targets: Iterable[str]) -> tuple[str, ...]:
    """Presets replaced by their module names; order kept, repeats dropped."""
    out: list[str] = []
    for entry in targets:
        for name in PRESETS.get(entry, (entry,)):
            if name not in out:
                out.append(name)
    return tuple(out)


def lora_target_problems(targets: Sequence[str]) -> list[str]:
    """What is wrong with the entries' form (no model needed); empty when nothing is."""
    if not targets:
        return [f"no LoRA target given; {_HELP}"]
    bad = [t for t in targets if t not in PRESETS and not _is_layer_name(t)]
    if bad:
        return [f"unknown LoRA target(s) {', '.join(repr(t) for t in bad)}; {_HELP}"]
    return []


def _is_layer_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None and any(
        name == layer or name.endswith("." + layer) for layer in LORA_LAYERS
    )


_HELP = (
    f"give a preset ({', '.join(PRESETS)}) or module names ending in one of "
    f"{', '.join(LORA_LAYERS)}, matched as suffixes (e.g. attn2.to_q)"
)


def matches(module_name: str, target: str) -> bool:
    """Whether a LoRA target names the module (peft's suffix rule)."""
    return module_name == target or module_name.endswith("." + target)


def unmatched_lora_targets(module_names: Iterable[str], targets: Iterable[str]) -> list[str]:
    """The targets that name no module of ``module_names``."""
    names = list(module_names)
    return [t for t in expand_lora_targets(targets) if not any(matches(n, t) for n in names)]
