"""Job kinds, their handler functions and their lifecycle hooks. Each app registers its kinds in its
AppConfig.ready().

A kind whose job belongs to a domain object (a batch, a study, a run, a release) names that
owner: the owner's page is where a user cancels and resumes, and the jobs page and admin
delegate to the owner's services, so the owner always moves with its jobs. ``on_failed`` runs
in the same transaction that marks the job failed (by its worker, or by the sweep giving up),
so the owner can never read as working while its job has failed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fairskin.progress import Progress

if TYPE_CHECKING:
    from jobs.models import Job


class LeaseHolder(Protocol):
    def hold(self) -> AbstractContextManager[None]:
        """A transaction that commits only while this attempt still holds its job."""


class JobContext(Progress, Protocol):
    """What a handler gets besides its job: the engine's progress protocol, and the lease
    that fences its domain writes (jobs.lease.JobLease)."""

    # Read-only: a handler uses the lease it was given and never replaces it. (A plain
    # attribute here would be settable, so an implementation would have to declare exactly
    # LeaseHolder, not the JobLease it holds.)
    @property
    def lease(self) -> LeaseHolder: ...


Handler = Callable[["Job", JobContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Owner:
    """The domain object a job works for, and how a user controls it."""

    label: str
    url: str
    cancel: Callable[[Any], object]  # called with the requesting user
    resume: Callable[[Any], object]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    queue: str
    label: str
    owner: Callable[[Job], Owner | None] | None = None
    on_failed: Callable[[Job, str], None] | None = None


_KINDS: dict[str, JobKind] = {}


def register(
    name: str,
    *,
    queue: str,
    label: str,
    owner: Callable[[Job], Owner | None] | None = None,
    on_failed: Callable[[Job, str], None] | None = None,
) -> Callable[[Handler], Handler]:
    """Register ``handler(job, progress) -> result dict`` under ``name``."""

    def decorate(handler: Handler) -> Handler:
        if name in _KINDS and _KINDS[name].handler is not handler:
            raise ValueError(f"job kind {name!r} is already registered")
        _KINDS[name] = JobKind(
            name=name, handler=handler, queue=queue, label=label, owner=owner, on_failed=on_failed
        )
        return handler

    return decorate


def get_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise LookupError(f"unknown job kind {name!r}") from None


def registered_kinds() -> dict[str, JobKind]:
    """Every registered kind by name (a copy)."""
    return dict(_KINDS)


def job_owner(job: Job) -> Owner | None:
    kind = _KINDS.get(job.kind)
    return kind.owner(job) if kind is not None and kind.owner is not None else None
