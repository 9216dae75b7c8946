"""The refusals the review services raise."""

from __future__ import annotations

from fairskin.errors import ApplicationError


class StudyError(ApplicationError, ValueError):
    """A study that cannot be created as asked, or a study action (cancel or resume its
    preparation, close it) its state does not allow; nothing was changed."""


class ReleaseRefused(ApplicationError, ValueError):
    """A batch that may not be approved or rejected (its study is not closed, its gate did not
    pass, it was already released or rejected), or a release export that may not be cancelled
    or resumed in its state; nothing was changed."""


class InvalidRating(ApplicationError, ValueError):
    """A submitted rating that is not one: a score outside 1-7, or seconds that are not a
    number. Nothing was written (not audited: the request never named a writable rating)."""


class RatingRefused(ApplicationError, PermissionError):
    """A rating that may not be written; the reason is audited."""

    status = 403
