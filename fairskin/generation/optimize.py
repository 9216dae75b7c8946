"""The optimized generation path (issue 21), opt-in: `BatchGenerator(..., optimized=True)`.

Applied once, when the generator is loaded, to a pipeline whose LoRA and tokens are in place:

- the LoRA fused into the UNet's (and text encoder's) weights, then its layers removed, so the
  128 adapted linear layers run as plain ones (`fuse_lora` + `unload_lora_weights`);
- fused QKV projections in the UNet and VAE attention (`fuse_qkv_projections`), which also
  sets diffusers' fused SDPA processor;
- channels-last memory for the UNet and VAE convolutions;
- attention through `torch.nn.functional.scaled_dot_product_attention` everywhere (checked:
  a processor that is not an SDPA one is refused);
- on CUDA only, `torch.compile` of the UNet. The compiled UNet belongs to the generator, which
  a worker loads once, so the warm-up (one compile per batch shape) is paid once per process,
  and inductor's on-disk cache shortens it in later processes.

The compute dtype is chosen by the device (`compute_dtype`). The pixels differ from the eager
path's by float rounding only: at the same dtype the test suite holds them to 1 level of 255
with the same filter verdicts (tests/generation/test_optimized_generation.py). A batch that
uses this path records it in its pixel environment (`BatchGenerator.environment`).
"""

from __future__ import annotations

from typing import Any

import torch

# torch.compile's modes; "reduce-overhead" adds CUDA graphs (the shapes are fixed per device
# batch), the max-autotune ones a longer compile.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a CUDA GPU that supports it, else fp16 there; fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _sdpa_processors(model: Any) -> list[str]:
    """Names of the attention processor classes `model` uses; raises if one is not SDPA."""
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    names = set()
    for name, processor in model.attn_processors.items():
        if not isinstance(processor, (AttnProcessor2_0, FusedAttnProcessor2_0)):
            raise ValueError(
                f"{name}: attention processor {type(processor).__name__} is not an SDPA one; "
                "the optimized path needs diffusers' AttnProcessor2_0"
            )
        names.add(type(processor).__name__)
    return sorted(names)


def _has_lora(model: Any) -> bool:
    return bool(getattr(model, "peft_config", None))


def optimize_pipeline(
    pipe: Any, *, compile_unet: bool | None = None, compile_mode: str = "default"
) -> dict[str, Any]:
    """Apply the optimized path to ``pipe`` in place; returns what was applied.

    ``compile_unet`` defaults to True on CUDA; on CPU it is refused (inductor's CPU code is
    not what this path is measured for, and its compile takes minutes on small machines)."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(
            f"unknown compile mode {compile_mode!r}; choose one of {', '.join(COMPILE_MODES)}"
        )
    device = pipe.unet.device
    if compile_unet is None:
        compile_unet = device.type == "cuda"
    if compile_unet and device.type != "cuda":
        raise ValueError("torch.compile of the UNet is only used on CUDA devices")

    fused_lora = [name for name in ("unet", "text_encoder") if _has_lora(getattr(pipe, name))]
    if fused_lora:
        pipe.fuse_lora(components=fused_lora)
        pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
    pipe.unet.fuse_qkv_projections()
    pipe.vae.fuse_qkv_projections()
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    applied: dict[str, Any] = {
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "lora_fused_into": fused_lora,
        "fused_qkv": True,
        "channels_last": True,
        "attention": sorted(set(_sdpa_processors(pipe.unet)) | set(_sdpa_processors(pipe.vae))),
        "compiled_unet": False,
    }
    if compile_unet:
        # In place (nn.Module.compile), so the pipeline keeps its UNet object and config.
        pipe.unet.compile(mode=compile_mode, dynamic=False)
        applied["compiled_unet"] = compile_mode
    return applied
