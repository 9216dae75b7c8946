"""How long-running engine work reports progress and learns it should stop.

The engine never sees a database or a broker: the caller passes an object with this shape.
The web app's job runner implements it over the job table; scripts and tests use
``ConsoleProgress`` or ``SilentProgress``.
"""

from __future__ import annotations

import sys
from typing import Protocol


class JobCancelled(Exception):
    """Raised inside engine code when the job it serves was cancelled; unwinds the work."""


class Progress(Protocol):
    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        """Start a named part of the work (its count starts at ``done`` of ``total``), so a
        long step is never shown as the last count of the step before. May raise
        JobCancelled."""

    def update(self, done: int, total: int, message: str = "") -> None:
        """Record that ``done`` of ``total`` units are complete. May raise JobCancelled."""

    def log(self, message: str) -> None:
        """Append one line to the job's log."""

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was asked to stop."""


class TextSink(Protocol):
    """Where ``ConsoleProgress`` writes: a text stream (``sys.stderr``) or a management
    command's ``self.stdout``/``self.stderr`` (Django's OutputWrapper, which is not a TextIO)."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> None: ...


class SilentProgress:
    """Progress that goes nowhere and is never cancelled (library use, tests)."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.lines: list[str] = []
        self.phases: list[str] = []

    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        self.phases.append(name)
        self.done, self.total = done, total

    def update(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total = done, total

    def log(self, message: str) -> None:
        self.lines.append(message)

    def check_cancelled(self) -> None:
        return None


class ConsoleProgress(SilentProgress):
    """A one-line progress bar on a terminal, for command-line use."""

    def __init__(self, stream: TextSink = sys.stderr, width: int = 30) -> None:
        super().__init__()
        self.stream = stream
        self.width = width

    def update(self, done: int, total: int, message: str = "") -> None:
        super().update(done, total, message)
        filled = int(self.width * done / total) if total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} {message}"[:120].ljust(80))
        if total and done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def log(self, message: str) -> None:
        super().log(message)
        self.stream.write(f"\n{message}\n")
        self.stream.flush()

    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        super().phase(name, total, done)
        self.stream.write(f"\n{name}\n")
        self.stream.flush()
