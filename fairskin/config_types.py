"""Type checks of user-given settings (`--set KEY=VALUE`, the admin's JSON) by the dataclass's
declared field types, before any value check: a wrong type is then reported by name instead of
crashing a comparison (`"high" < 1`) or being stored and failing later on a worker."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400): no setting takes one
        return False


_SCALARS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (is_whole, "a whole number"),
    "float": (is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    # No NUL byte: the settings are stored in the database, whose text cannot hold one.
    "str": (lambda v: isinstance(v, str) and "\x00" not in v, "text without NUL bytes"),
}


def type_problems(cls: type, values: dict[str, Any]) -> list[str]:
    """One message per value whose type does not match its field in dataclass `cls`."""
    problems = []
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        optional = declared.endswith(" | None")
        base = declared.removesuffix(" | None")
        if value is None and optional:
            continue
        or_null = " or null" if optional else ""
        if base in _SCALARS:
            check, what = _SCALARS[base]
            if not check(value):
                problems.append(f"{f.name} must be {what}{or_null}, got {value!r}")
        elif base.startswith(("tuple[str", "list[str")):
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                problems.append(f"{f.name} must be a list of names{or_null}, got {value!r}")
        elif base.startswith("dict["):
            if not isinstance(value, dict) or not all(is_number(v) for v in value.values()):
                problems.append(f"{f.name} must be an object mapping names to numbers{or_null}, "
                                f"got {value!r}")
    return problems
