"""Job kinds and their handlers. Each app registers its handlers in its AppConfig.ready()."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.models import Job
    from jobs.runner import JobProgress

Handler = Callable[["Job", "JobProgress"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    queue: str
    label: str


_KINDS: dict[str, JobKind] = {}


def register(name: str, *, queue: str, label: str) -> Callable[[Handler], Handler]:
    """Register ``handler(job, progress) -> result dict`` under ``name``."""

    def decorate(handler: Handler) -> Handler:
        if name in _KINDS and _KINDS[name].handler is not handler:
            raise ValueError(f"job kind {name!r} is already registered")
        _KINDS[name] = JobKind(name=name, handler=handler, queue=queue, label=label)
        return handler

    return decorate


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise LookupError(f"unknown job kind {name!r}") from None


def all_kinds() -> list[JobKind]:
    return sorted(_KINDS.values(), key=lambda k: k.name)
