"""The one base class of refusals: a request the user can correct, refused with a message."""

from __future__ import annotations


class ApplicationError(Exception):
    """A refusal a user can act on; nothing was changed.

    Its ``str()`` is the message shown: on a page as an error message, in the API as
    ``{"detail": message}`` with ``status`` as the HTTP status.
    """

    status: int = 400
