"""Object keys: relative, '/'-separated, no '..', no empty parts; checked by both stores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_PREFIX = ".tmp"


def validate_key(key: str) -> str:
    """`key` unchanged if it is a safe object key; ValueError naming what is wrong otherwise.

    The same rule in both stores, so a key that works locally works in a bucket and can never
    reach outside the local store's folder.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"object key {key!r} is empty")
    if "\\" in key:
        raise ValueError(f"object key {key!r} contains a backslash; use '/' between parts")
    if key.startswith("/"):
        raise ValueError(f"object key {key!r} is absolute; keys are relative, e.g. 'runs/12'")
    parts = key.split("/")
    if any(part == "" for part in parts):
        raise ValueError(f"object key {key!r} has an empty part ('//' or a trailing '/')")
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"object key {key!r} contains '.' or '..'")
    if "\x00" in key:
        raise ValueError(f"object key {key!r} contains a NUL character")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key, optionally ending with '/'."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def temp_path_beside(path: Path) -> Path:
    """A fresh, unused temporary file name in `path`'s folder (so os.replace is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}-{path.name}-", dir=path.parent)
    os.close(fd)
    return Path(name)
