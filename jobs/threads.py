"""The CPU thread count torch uses inside a worker running engine jobs."""

from __future__ import annotations

from django.conf import settings


def set_torch_threads() -> None:
    """Apply FAIRSKIN_TORCH_THREADS to torch; 0 (the default) leaves torch's own choice."""
    if settings.FAIRSKIN_TORCH_THREADS:
        # Imported here: web processes never need torch.
        import torch

        torch.set_num_threads(settings.FAIRSKIN_TORCH_THREADS)
