"""Skin colours per Fitzpatrick type for the procedural demo images.

Each type has a mean CIELAB colour of constitutive skin and a between-person standard deviation;
``sample_skin_lab`` draws one person's skin colour from them.

Provenance, stated plainly so nobody mistakes these for a verified reference table:

* The per-type means are estimates written for this demo, shaped by what colorimetry studies of
  people of known type or ancestry report, as far as could be checked where this was written:
  - Sommers et al., Ethn Dis 2019;29:505-12 (466 women, spectrophotometer L*a*b*): self-reported
    FST correlates with L* at r = -0.77, and L* and b* (not a*) carry the FST signal. Hence the
    steep fall of L* from type I to VI, and a* that barely moves.
  - Yun et al., Skin Res Technol 2010 (148 Korean adults, mostly FST III-IV, mean of five body
    sites): L* 64.15 +/- 4.86, a* 8.96 +/- 2.65, b* 18.34 +/- 2.39. Our type III sits next to
    it (L* 62, a* 9, b* 17.5); its spreads, which mix two types, bound our per-type ones.
  - Xiao et al., Skin Res Technol (Manchester calibrated skin colour database; Caucasian,
    Chinese, Kurdish, Thai): the largest differences between groups are in yellowness b*,
    lowest for Caucasian skin. Hence b* rising from type I towards the intermediate types.
  The per-type tables of the studies that grade FST I-VI directly (e.g. Pershing et al.,
  J Invest Dermatol 2008) could not be consulted here: check the table against one before
  quoting these numbers as measurements.
* They were NOT derived from the ITA thresholds used to estimate FST (``ita.py``). Their ITAs,
  listed beside them, do not fall in the middle of the matching Kinyanjui band (type IV's mean
  sits in band V, type V's in band VI): that mismatch is what ``demo.ita_recovery_report``
  measures, as real data shows it too (ITA within one type of the label on about half of
  Fitzpatrick17k).

Replace the table when a verified per-type source is available; nothing else depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SkinToneStats:
    """Mean and between-person standard deviation of CIELAB skin colour for one FST."""

    mean_lab: tuple[float, float, float]
    sd_lab: tuple[float, float, float]


#                    mean (L*, a*, b*)       sd (L*, a*, b*)        ITA of the mean
FST_SKIN_TONES: dict[int, SkinToneStats] = {
    1: SkinToneStats((68.0, 7.0, 13.0), (2.5, 2.0, 2.0)),  # +54.2
    2: SkinToneStats((65.5, 8.0, 15.0), (2.5, 2.0, 2.0)),  # +45.9
    3: SkinToneStats((62.0, 9.0, 17.5), (3.0, 2.0, 2.0)),  # +34.4
    4: SkinToneStats((56.0, 10.0, 19.0), (3.5, 2.0, 2.0)),  # +17.5
    5: SkinToneStats((47.0, 11.0, 18.0), (4.0, 2.0, 2.5)),  # -9.5
    6: SkinToneStats((38.0, 9.5, 14.0), (4.0, 2.0, 2.5)),  # -40.6
}

# Plausible skin never leaves these bounds; clipping stops a 3-sigma draw from producing grey or
# green "skin" while leaving the bulk of the distribution untouched.
_LAB_LOW = np.array([25.0, 2.0, 6.0])
_LAB_HIGH = np.array([75.0, 18.0, 26.0])


def sample_skin_lab(fst: int, rng: np.random.Generator) -> np.ndarray:
    """One person's skin colour (L*, a*, b*) for Fitzpatrick type ``fst``."""
    if fst not in FST_SKIN_TONES:
        raise ValueError(f"Fitzpatrick skin type must be 1-6, got {fst!r}")
    stats = FST_SKIN_TONES[fst]
    lab = rng.normal(stats.mean_lab, stats.sd_lab)
    return np.clip(lab, _LAB_LOW, _LAB_HIGH)
