"""The library versions a run or benchmark records (moved out of `training` to keep it short)."""

from __future__ import annotations

import platform

import torch


def library_versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
