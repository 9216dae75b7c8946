"""The one check of an untrusted path (an archive member, a metadata file name)."""

from __future__ import annotations

import re

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_path_problem(name: str) -> str | None:
    """Why ``name`` could reach outside the folder it belongs to, or None when it cannot."""
    if not name:
        return "is empty"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "contains control characters"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if "\\" in name:
        return "contains a backslash, which Windows tools treat as a path separator"
    if ".." in name.split("/"):
        return "contains a '..' component that would escape the folder"
    return None
