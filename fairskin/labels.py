"""Diagnosis classes, Fitzpatrick skin types and the generation prompt template."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Diagnosis(enum.StrEnum):
    """The seven HAM10000 classes, plus OTHER for every label that maps to none of them."""

    MEL = "MEL"
    NV = "NV"
    BCC = "BCC"
    AK = "AK"
    BKL = "BKL"
    DF = "DF"
    VASC = "VASC"
    OTHER = "OTHER"

    @property
    def long_name(self) -> str:
        return _DIAGNOSIS_NAMES[self]


_DIAGNOSIS_NAMES = {
    Diagnosis.MEL: "melanoma",
    Diagnosis.NV: "melanocytic nevus",
    Diagnosis.BCC: "basal cell carcinoma",
    Diagnosis.AK: "actinic keratosis",
    Diagnosis.BKL: "benign keratosis",
    Diagnosis.DF: "dermatofibroma",
    Diagnosis.VASC: "vascular lesion",
    Diagnosis.OTHER: "other skin condition",
}

SEVEN_CLASSES: tuple[Diagnosis, ...] = tuple(d for d in Diagnosis if d is not Diagnosis.OTHER)

FST_TYPES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

# (value, long name) pairs, as form and model choices take them.
DIAGNOSIS_CHOICES: list[tuple[str, str]] = [(d.value, d.long_name) for d in Diagnosis]
_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}


def fst_roman(fst: int) -> str:
    """Roman numeral for a Fitzpatrick type (1 -> 'I')."""
    if fst not in _ROMAN:
        raise ValueError(f"Fitzpatrick skin type must be 1-6, got {fst!r}")
    return _ROMAN[fst]


@dataclass(frozen=True)
class FstRange:
    """A Fitzpatrick type or an inclusive range of types (DDI gives only groups like I-II)."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low not in _ROMAN or self.high not in _ROMAN or self.low > self.high:
            raise ValueError(f"invalid Fitzpatrick range {self.low}-{self.high}")

    @property
    def is_exact(self) -> bool:
        return self.low == self.high

    def __str__(self) -> str:
        if self.is_exact:
            return fst_roman(self.low)
        return f"{fst_roman(self.low)}–{fst_roman(self.high)}"


# The planning document's prompt; `fairskin.diffusion.tokens.prompt_for` fills it in.
PROMPT_TEMPLATE = (
    "A dermoscopic image of {diagnosis} on Fitzpatrick skin type {fst}, "
    "high quality medical photograph"
)
