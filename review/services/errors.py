"""The refusals the review services raise."""

from __future__ import annotations

from fairskin.errors import ApplicationError


class StudyError(ApplicationError, ValueError):
    """The request cannot be carried out; nothing was changed."""


class RatingRefused(ApplicationError, PermissionError):
    """A rating that may not be written; the reason is audited."""

    status = 403
