"""A Progress that keeps every call, so tests can assert which phases engine code reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from fairskin.progress import SilentProgress


@dataclass
class Phase:
    name: str
    total: int
    start: int  # the count the phase started at (a resumed run starts past zero)
    updates: list[tuple[int, int, str]] = field(default_factory=list)  # (done, total, message)

    @property
    def last_done(self) -> int:
        return self.updates[-1][0] if self.updates else self.start


class RecordingProgress(SilentProgress):
    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[Phase] = []
        self.messages: list[str] = []

    def phase(self, name: str, total: int = 0, done: int = 0) -> None:
        super().phase(name, total, done)
        self.recorded.append(Phase(name, total, done))

    def update(self, done: int, total: int, message: str = "") -> None:
        super().update(done, total, message)
        assert self.recorded, f"update({done}, {total}, {message!r}) before any phase"
        self.recorded[-1].updates.append((done, total, message))
        self.messages.append(message)

    def named(self, name: str) -> list[Phase]:
        return [p for p in self.recorded if p.name == name]
