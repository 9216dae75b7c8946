"""User-given settings: `--set KEY=VALUE` items read into a dict (:func:`parse_settings`, shared
by the `train` and `generate` commands), and type checks of settings (those items, the admin's
JSON) by the dataclass's declared field types, before any value check: a wrong type is then
reported by name instead of crashing a comparison (`"high" < 1`) or being stored and failing
later on a worker."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Callable, Collection, Iterable
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
                problems.append(
                    f"{f.name} must be an object mapping names to numbers{or_null}, got {value!r}"
                )
    return problems


class SettingsError(ValueError):
    """``--set`` items that cannot be read; the message names every bad item."""


def parse_setting_value(raw: str) -> Any:
    """A ``--set`` value: a JSON literal when it is one (``8``, ``0.5``, ``true``, ``null``,
    ``["to_q"]``, ``{"value": 30}``, ``"8"``), otherwise the text as given, so plain words need
    no quotes (``mixed_precision=bf16``). A number too long for Python's JSON reader stays text,
    and the setting's own check then refuses it by name."""
    try:
        return json.loads(raw)
    except ValueError:  # not JSON, or a number over 4,300 digits
        return raw


def parse_settings(
    items: Iterable[str],
    *,
    known: Collection[str] | None = None,
    option: str = "--set",
    noun: str = "setting",
) -> dict[str, Any]:
    """``KEY=VALUE`` items (the ``--set`` option of ``train`` and ``generate``) as a dict.

    The key is stripped of surrounding spaces, the value is read by
    :func:`parse_setting_value`; ``=`` inside the value is kept (``name=a=b``). Refused, all
    problems in one SettingsError: an item without ``=`` or with an empty key, a key given more
    than once, and, when ``known`` is given, a key not in it (with the nearest known names).
    Types and ranges are the settings' own checks (TrainConfig, ScoringConfig, ...).
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    repeated: list[str] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{option} takes KEY=VALUE, got {item!r}")
        elif key in values:
            if key not in repeated:
                repeated.append(key)
                problems.append(f"{noun} {key} is given more than once")
        else:
            values[key] = parse_setting_value(raw)
    unknown = sorted(set(values) - set(known)) if known is not None else []
    if unknown:
        names = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known or ()), n=1, cutoff=0.7)
            names.append(key + (f" (did you mean {close[0]}?)" if close else ""))
        problems.append(f"unknown {noun}(s): {', '.join(names)}")
    if problems:
        raise SettingsError("; ".join(problems))
    return values


def field_names(cls: type, *, excluding: Collection[str] = ()) -> frozenset[str]:
    """The settings dataclass ``cls`` takes, by name: the ``known`` of :func:`parse_settings`."""
    return frozenset(f.name for f in dataclasses.fields(cls)) - frozenset(excluding)
