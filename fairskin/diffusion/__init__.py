"""Stable Diffusion fine-tuning: base models, textual inversion, LoRA, artifacts."""
