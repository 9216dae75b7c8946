"""FairSkin's API from Python: ``FairSkin(url, token).runs.create(...)``."""

from fairskin_client.client import FairSkin, Job
from fairskin_client.errors import (
    AuthenticationError,
    Conflict,
    FairSkinError,
    JobFailed,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    ValidationError,
)

__all__ = [
    "AuthenticationError",
    "Conflict",
    "FairSkin",
    "FairSkinError",
    "Job",
    "JobFailed",
    "NotFound",
    "PermissionDenied",
    "ServiceUnavailable",
    "ValidationError",
]
