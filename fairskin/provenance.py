"""Identity records: which object an artifact folder (a run's checkpoints, a batch's reference)
was written for, so nothing is ever resumed from or scored against another object's files.

A record is a small JSON object (`identity.json`) written next to the files it vouches for.
Whoever reads the files first compares the record with what it expects (`check_identity`);
any difference, or a missing record, is refused with a message naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from fairskin.errors import ApplicationError

IDENTITY_FILE = "identity.json"


class IdentityMismatch(ApplicationError, ValueError):
    """Files in a folder belong to another object (or say nothing about whom they belong to)."""


def new_identity(prefix: str, pk: int) -> str:
    """A folder name unique to one object: its kind and id, and a random token, so a re-used
    id (a database reset that kept the artifacts) never lands in an earlier object's folder."""
    return f"{prefix}-{pk}-{secrets.token_hex(6)}"


def settings_hash(settings: dict[str, Any]) -> str:
    """A stable hash of a settings dictionary (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_identity(folder: Path, record: dict[str, Any]) -> None:
    """Written whole or not at all (a temporary file renamed), so a reader never sees half."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{IDENTITY_FILE}.{os.getpid()}.partial"
    partial.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(partial, folder / IDENTITY_FILE)


def read_identity(folder: Path) -> dict[str, Any] | None:
    path = folder / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def check_identity(
    folder: Path, expected: dict[str, Any], *, what: str, accept_unrecorded: bool = False
) -> None:
    """Refuse `folder` unless its identity record equals `expected`.

    ``accept_unrecorded``: a folder without any record is accepted (folders written before
    records existed, reached through the path stored on their own row)."""
    check_record(
        read_identity(folder),
        expected,
        what=f"{what} at {folder}",
        accept_unrecorded=accept_unrecorded,
    )


def check_record(
    found: dict[str, Any] | None,
    expected: dict[str, Any],
    *,
    what: str,
    accept_unrecorded: bool = False,
) -> None:
    """Refuse unless the record ``found`` (None: there is none) equals ``expected``."""
    expected = {k: v for k, v in expected.items() if k != "accept_unrecorded"}
    if found is None:
        if accept_unrecorded:
            return
        raise IdentityMismatch(
            f"{what} has no identity record, so it cannot be shown to belong to "
            f"{expected.get('identity', 'this object')}; it was not used"
        )
    differs = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
    if differs:
        detail = "; ".join(
            f"{k}: recorded {found.get(k)!r}, expected {expected.get(k)!r}" for k in differs
        )
        raise IdentityMismatch(f"{what} belongs to something else ({detail}); it was not used")
