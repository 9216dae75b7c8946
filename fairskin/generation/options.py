"""The noise schedulers a batch can sample with, by name, and their diffusers classes; web
processes read the names without importing torch. Every other default and bound of a batch is in
fairskin.generation.spec."""

SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}
