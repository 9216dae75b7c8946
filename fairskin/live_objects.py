"""Objects a worker process keeps alive between jobs (a diffusion pipeline, feature
extractors, a scoring reference), so consecutive jobs of one batch pay for loading once."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class LiveObjects:
    """One live object per kind, rebuilt when the key it was built for changes.

    The old object is dropped before the new one is built, so two large models of a kind never
    sit in memory together.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Hashable, Any]] = {}

    def get(self, kind: str, key: Hashable, build: Callable[[], T]) -> T:
        entry = self._entries.get(kind)
        if entry is None or entry[0] != key:
            self._entries.pop(kind, None)
            entry = (key, build())
            self._entries[kind] = entry
        value: T = entry[1]
        return value

    def clear(self) -> None:
        self._entries.clear()
