"""Generation settings that web processes need without importing torch."""

SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}
DEFAULT_NEGATIVE_PROMPT = "blurry, low quality, text, watermark, duplicated"
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 7.5
