"""The generation app's refusal: a batch that cannot be launched as configured."""

from __future__ import annotations

from fairskin.errors import ApplicationError


class BatchConfigError(ApplicationError, ValueError):
    """The batch cannot be launched as configured; nothing was created or queued."""
