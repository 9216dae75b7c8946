"""Learned tokens and the prompts that use them.

Compositional tokens (the default) are one per diagnosis (`<dx-mel>`) and one per skin type
(`<fst-6>`), combined in one prompt, so a cell never seen together in training (DF x FST VI)
can still be asked for. Per-cell tokens (`<mel-fst6>`) exist only for cells with enough images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fairskin.labels import PROMPT_TEMPLATE, Diagnosis, fst_roman

# A single real word each token starts from: it must be one CLIP token, so the closest
# one-token word stands in where the medical term splits (keratosis, dermatofibroma).
DIAGNOSIS_INIT = {
    Diagnosis.MEL: "melanoma",
    Diagnosis.NV: "mole",
    Diagnosis.BCC: "carcinoma",
    Diagnosis.AK: "scar",
    Diagnosis.BKL: "wart",
    Diagnosis.DF: "bump",
    Diagnosis.VASC: "blood",
    Diagnosis.OTHER: "spot",
}
FST_INIT = {1: "pale", 2: "fair", 3: "beige", 4: "olive", 5: "brown", 6: "dark"}


def dx_token(diagnosis: Diagnosis | str) -> str:
    return f"<dx-{Diagnosis(diagnosis).value.lower()}>"


def fst_token(fst: int) -> str:
    fst_roman(fst)  # validates
    return f"<fst-{fst}>"


def cell_token(diagnosis: Diagnosis | str, fst: int) -> str:
    fst_roman(fst)
    return f"<{Diagnosis(diagnosis).value.lower()}-fst{fst}>"


def plan_tokens(
    cells: Iterable[tuple[str, int]], *, mode: str, per_cell_min_images: int
) -> dict[str, str]:
    """Token -> initialiser word for the (diagnosis, fst) cells of the training images."""
    counts = Counter((Diagnosis(dx), fst) for dx, fst in cells)
    tokens: dict[str, str] = {}
    for dx, fst in sorted(counts, key=lambda c: (c[0].value, c[1])):
        tokens[dx_token(dx)] = DIAGNOSIS_INIT[dx]
        tokens[fst_token(fst)] = FST_INIT[fst]
        if mode == "per_cell" and counts[(dx, fst)] >= per_cell_min_images:
            tokens[cell_token(dx, fst)] = DIAGNOSIS_INIT[dx]
    return tokens


def prompt_for(
    diagnosis: Diagnosis | str,
    fst: int,
    *,
    available: Iterable[str] = (),
    template: str = PROMPT_TEMPLATE,
) -> str:
    """The prompt for a stratum with the learned tokens: the per-cell token when the run has
    one, else the diagnosis and skin-type tokens; plain words for what has no token."""
    have = set(available)
    dx = Diagnosis(diagnosis)
    if cell_token(dx, fst) in have:
        return template.format(diagnosis=cell_token(dx, fst), fst=fst_roman(fst))
    diagnosis_text = dx_token(dx) if dx_token(dx) in have else dx.long_name
    fst_text = fst_token(fst) if fst_token(fst) in have else fst_roman(fst)
    return template.format(diagnosis=diagnosis_text, fst=fst_text)
