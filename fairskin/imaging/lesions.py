"""One painter per diagnosis class for the procedural demo images.

Each painter draws a lesion in place onto a CIELAB skin canvas. The looks follow the textbook
clinical/dermoscopic description of each class, simplified:

- MEL: large, asymmetric, irregular border, several colours (light to dark brown, black
  blotches, blue-grey veil, red areas) and short streaks at the edge.
- NV: small, round or oval, smooth border, one even brown with a faint pigment network.
- BCC: pearly pink papule with a brighter rolled rim, shiny highlights, branching red vessels
  (telangiectasia), sometimes a dark central crust; blue-grey nests on pigmented ones.
- AK: ill-defined rough red patch with white-yellow scale.
- BKL: sharply demarcated, waxy, light-to-mid brown "stuck-on" plaque with brain-like fissures,
  white milia-like dots and dark comedo-like openings.
- DF: small firm lesion: brown centre, a lighter ring, a faint brown halo.
- VASC: red-to-purple lobules with lighter septa between them.

Lesion colours are defined relative to the skin they sit on, so a naevus is darker than the skin
on every type and erythema shows less on dark skin, as it does clinically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from fairskin.imaging.painting import (
    FloatImage,
    Lab,
    blend,
    blob_outline,
    draw_curve,
    fill_outline,
    quadratic_curve,
    smooth_noise,
    smoothstep,
    soften,
)
from fairskin.labels import Diagnosis


@dataclass(frozen=True)
class Scene:
    """What a painter needs: canvas size, random source, the skin colour, the lesion centre."""

    size: int
    rng: np.random.Generator
    skin: npt.NDArray[np.float32]  # (L*, a*, b*)
    centre: npt.NDArray[np.float64]  # (x, y) pixels

    def px(self, fraction: float) -> float:
        """A length given as a fraction of the image side, in pixels."""
        return fraction * self.size


# --- colours relative to the skin -----------------------------------------------------------


def _lab(lightness: float, a: float, b: float) -> Lab:
    return np.array([lightness, a, b], dtype=np.float32)


def pigment(skin: Lab, depth: float) -> Lab:
    """Melanin brown: depth 0 is the skin itself, ~0.3 light brown, ~0.6 dark brown, 1 black."""
    lightness = skin[0] - (skin[0] - 12.0) * depth
    bump = np.sin(np.pi * min(depth, 1.0))  # browns are more saturated than skin or black
    a = (1 - depth) * skin[1] + depth * 3.0 + 8.0 * bump
    b = (1 - depth) * skin[2] + depth * 3.0 + 10.0 * bump
    return _lab(lightness, a, b)


def blue_grey(skin: Lab) -> Lab:
    """Dermal melanin seen through the skin (regression, veil, BCC nests)."""
    return _lab(skin[0] * 0.7, 1.0, -3.0)


def _redness_visibility(skin: Lab) -> float:
    # Melanin masks haemoglobin: the same erythema raises a* less on darker skin.
    return float(np.clip((skin[0] - 25.0) / 45.0, 0.35, 1.0))


def erythema(skin: Lab, strength: float) -> Lab:
    shift = 16.0 * strength * _redness_visibility(skin)
    return _lab(skin[0] - 5.0 * strength, skin[1] + shift, skin[2] + 1.0)


def whitish(skin: Lab, amount: float) -> Lab:
    """Scale, milia, scar: towards a yellowish white."""
    return _lab(
        skin[0] + (90.0 - skin[0]) * amount,
        skin[1] * (1 - 0.6 * amount),
        skin[2] * (1 - 0.3 * amount) + 3.0 * amount,
    )


def vessel_red(skin: Lab, purple: float) -> Lab:
    """Blood: bright red (purple=0) to violaceous (purple=1), darker on darker skin."""
    lightness = min(skin[0], 62.0) * (0.72 - 0.18 * purple)
    return _lab(lightness, 42.0 - 10.0 * purple, 22.0 - 32.0 * purple)


# --- shared shapes --------------------------------------------------------------------------


def _lesion_alpha(
    scene: Scene,
    radius: float,
    *,
    irregularity: float,
    harmonics: int,
    aspect: float,
    edge_sigma: float,
    lopsidedness: float = 0.0,
) -> FloatImage:
    outline = blob_outline(
        scene.rng,
        scene.centre,
        radius,
        irregularity=irregularity,
        harmonics=harmonics,
        aspect=aspect,
        lopsidedness=lopsidedness,
    )
    return soften(fill_outline(scene.size, outline), edge_sigma)


def _patches(scene: Scene, cells: int, coverage: float) -> FloatImage:
    """Random soft-edged patches covering about ``coverage`` of the image."""
    noise = smooth_noise(scene.rng, scene.size, cells)
    cut = float(np.quantile(noise[::8, ::8], 1.0 - coverage))
    return smoothstep(noise, cut - 0.4, cut + 0.4)


def _mottle(canvas: Lab, scene: Scene, alpha: FloatImage, amplitude: float, cells: int) -> None:
    """Uneven lightness inside a lesion: flat fills look drawn, not photographed."""
    canvas[..., 0] += amplitude * alpha * smooth_noise(scene.rng, scene.size, cells)


def _ridges(scene: Scene, cells: int, width: float) -> FloatImage:
    """Connected thin lines along the zero set of a random field (network, fissures)."""
    noise = smooth_noise(scene.rng, scene.size, cells)
    return 1.0 - smoothstep(np.abs(noise), 0.0, width)


def _dots(
    scene: Scene,
    count: int,
    spread: float,
    radius_px: tuple[float, float],
    blur: float = 0.8,
) -> FloatImage:
    mask = np.zeros((scene.size, scene.size), dtype=np.uint8)
    for _ in range(count):
        offset = scene.rng.normal(0.0, spread, 2)
        radius = scene.rng.uniform(*radius_px)
        outline = blob_outline(
            scene.rng, scene.centre + offset, radius, irregularity=0.1, harmonics=3, points=24
        )
        mask |= fill_outline(scene.size, outline)
    return soften(mask, blur)


def _radial_distance(scene: Scene) -> FloatImage:
    axis = np.arange(scene.size, dtype=np.float32)
    dx = axis[None, :] - np.float32(scene.centre[0])
    dy = axis[:, None] - np.float32(scene.centre[1])
    return cast("FloatImage", np.sqrt(dx * dx + dy * dy))


# --- painters -------------------------------------------------------------------------------


def paint_mel(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.17, 0.26))
    body = _lesion_alpha(
        scene,
        radius,
        irregularity=0.22,
        harmonics=8,
        aspect=rng.uniform(0.65, 0.95),
        edge_sigma=scene.px(0.006),
        lopsidedness=0.18,
    )
    blend(canvas, body, pigment(skin, rng.uniform(0.4, 0.55)))
    palette = [
        (pigment(skin, rng.uniform(0.2, 0.3)), 0.30),
        (pigment(skin, rng.uniform(0.7, 0.85)), 0.25),
        (blue_grey(skin), 0.18 if rng.random() < 0.7 else 0.0),
        (erythema(pigment(skin, 0.3), 1.2), 0.15 if rng.random() < 0.5 else 0.0),
    ]
    for colour, coverage in palette:
        if coverage > 0:
            blend(canvas, body * _patches(scene, int(rng.integers(6, 11)), coverage) * 0.8, colour)
    _mottle(canvas, scene, body, 3.0, 40)
    # Eccentric black blotches and streaks at the edge: the asymmetry melanoma is known for.
    blotches = _dots(scene, int(rng.integers(2, 6)), radius * 0.5, (radius * 0.08, radius * 0.2))
    blend(canvas, blotches * body, pigment(skin, 0.92))
    streaks = np.zeros((scene.size, scene.size), dtype=np.uint8)
    for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))):
        direction = np.array([np.cos(angle), np.sin(angle)])
        start = scene.centre + direction * radius * rng.uniform(0.55, 0.8)
        end = start + direction * radius * rng.uniform(0.3, 0.5)
        width = max(1, round(scene.px(0.005)))
        draw_curve(streaks, quadratic_curve(start, end, rng.uniform(-0.3, 0.3)), width)
    blend(canvas, soften(streaks, scene.px(0.002)) * 0.8, pigment(skin, 0.7))


def paint_nv(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.11, 0.19))
    body = _lesion_alpha(
        scene,
        radius,
        irregularity=0.035,
        harmonics=3,
        aspect=rng.uniform(0.8, 1.0),
        edge_sigma=scene.px(0.008),
    )
    depth = rng.uniform(0.35, 0.55)
    blend(canvas, body, pigment(skin, depth))
    # Slightly darker centre, and a faint regular network that fades towards the edge.
    centre_weight = np.clip(1.0 - _radial_distance(scene) / radius, 0.0, 1.0)
    blend(canvas, body * centre_weight * 0.5, pigment(skin, depth + 0.12))
    network = _ridges(scene, int(rng.integers(28, 40)), 0.25)
    blend(canvas, network * body * body * 0.35, pigment(skin, depth + 0.2))
    _mottle(canvas, scene, body, 1.5, 30)


def paint_bcc(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.1, 0.17))
    body = _lesion_alpha(
        scene,
        radius,
        irregularity=0.08,
        harmonics=4,
        aspect=rng.uniform(0.75, 1.0),
        edge_sigma=scene.px(0.01),
    )
    pearly = erythema(skin, 1.0)
    pearly[0] = min(skin[0] + 4.0, 80.0)
    blend(canvas, body * 0.9, pearly)
    rim = np.clip(4.0 * body * (1.0 - body), 0.0, 1.0)  # the rolled, raised border
    # numpy's stubs widen float32 * float to float64; at run time it stays float32.
    blend(canvas, cast("FloatImage", rim * 0.6), whitish(pearly, 0.25))
    # Darker skin: BCC is usually pigmented, shown as blue-grey ovoid nests.
    if rng.random() < (0.25 if skin[0] > 55 else 0.7):
        nests = _dots(scene, int(rng.integers(3, 8)), radius * 0.4, (radius * 0.07, radius * 0.16))
        blend(canvas, nests * body * 0.85, blue_grey(skin))
    vessels = np.zeros((scene.size, scene.size), dtype=np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        start = scene.centre + rng.normal(0.0, radius * 0.35, 2)
        end = start + rng.normal(0.0, radius * 0.6, 2)
        trunk = quadratic_curve(start, end, rng.uniform(-0.4, 0.4))
        draw_curve(vessels, trunk, int(rng.integers(1, 3)))
        branch_from = trunk[int(rng.integers(6, 18))]
        branch = quadratic_curve(branch_from, branch_from + rng.normal(0, radius * 0.3, 2), 0.3)
        draw_curve(vessels, branch, 1)
    blend(canvas, soften(vessels, 0.6) * body * 0.9, vessel_red(skin, 0.1))
    if rng.random() < 0.4:
        crust = _dots(scene, 1, radius * 0.1, (radius * 0.15, radius * 0.3))
        blend(canvas, crust * 0.9, _lab(skin[0] * 0.45, 18.0, 12.0))
    highlights = _dots(
        scene, int(rng.integers(2, 5)), radius * 0.4, (radius * 0.03, radius * 0.08), 2.0
    )
    blend(canvas, highlights * 0.6, whitish(skin, 0.6))


def paint_ak(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.15, 0.24))
    body = _lesion_alpha(
        scene,
        radius,
        irregularity=0.2,
        harmonics=6,
        aspect=rng.uniform(0.55, 0.9),
        edge_sigma=scene.px(0.03),
    )
    blend(canvas, body * 0.95, erythema(skin, rng.uniform(0.9, 1.3)))
    roughness = smooth_noise(rng, scene.size, int(rng.integers(90, 130)))
    canvas[..., 0] += 2.5 * body * roughness
    scale = smoothstep(smooth_noise(rng, scene.size, int(rng.integers(60, 90))), 0.9, 1.6)
    blend(canvas, scale * body * 0.85, whitish(skin, 0.55))


def paint_bkl(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.14, 0.23))
    body = _lesion_alpha(
        scene,
        radius,
        irregularity=0.1,
        harmonics=5,
        aspect=rng.uniform(0.6, 0.95),
        edge_sigma=scene.px(0.002),
    )
    depth = rng.uniform(0.22, 0.42)
    waxy = pigment(skin, depth)
    waxy[2] += 4.0
    blend(canvas, body, waxy)
    blend(canvas, body * _patches(scene, 8, 0.4) * 0.5, pigment(skin, depth + 0.1))
    fissures = _ridges(scene, int(rng.integers(14, 22)), 0.18)
    blend(canvas, fissures * body * 0.6, pigment(skin, depth + 0.3))
    _mottle(canvas, scene, body, 3.0, 60)
    dot_size = (scene.px(0.002), scene.px(0.005))
    milia = _dots(scene, int(rng.integers(3, 9)), radius * 0.45, dot_size)
    blend(canvas, milia * body * 0.8, whitish(skin, 0.6))
    comedos = _dots(scene, int(rng.integers(3, 9)), radius * 0.45, dot_size)
    blend(canvas, comedos * body * 0.9, pigment(skin, 0.75))


def paint_df(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.08, 0.13))
    aspect = rng.uniform(0.8, 1.0)
    halo = _lesion_alpha(
        scene, radius, irregularity=0.06, harmonics=3, aspect=aspect, edge_sigma=scene.px(0.015)
    )
    blend(canvas, halo * 0.6, pigment(skin, 0.22))
    ring = _lesion_alpha(
        scene, radius * 0.75, irregularity=0.05, harmonics=3, aspect=aspect, edge_sigma=2.0
    )
    blend(canvas, ring * 0.85, whitish(skin, 0.18))
    centre = _lesion_alpha(
        scene, radius * 0.45, irregularity=0.08, harmonics=4, aspect=aspect, edge_sigma=2.5
    )
    blend(canvas, centre, pigment(skin, rng.uniform(0.4, 0.55)))
    # Firm and raised: a soft highlight on the upper-left shoulder of the dome.
    highlight_centre = scene.centre - radius * 0.25
    glint_scene = Scene(scene.size, rng, skin, highlight_centre)
    glint = _dots(glint_scene, 1, 1.0, (radius * 0.12, radius * 0.2), 3.0)
    blend(canvas, glint * 0.35, whitish(skin, 0.4))


def paint_vasc(canvas: Lab, scene: Scene) -> None:
    rng, skin = scene.rng, scene.skin
    radius = scene.px(rng.uniform(0.1, 0.17))
    base = _lesion_alpha(
        scene, radius, irregularity=0.12, harmonics=5, aspect=1.0, edge_sigma=scene.px(0.004)
    )
    blend(canvas, base * 0.8, vessel_red(skin, 0.5))
    # Lobules drawn slightly smaller than their spacing leave lighter septa between them.
    for _ in range(int(rng.integers(4, 10))):
        offset = rng.normal(0.0, radius * 0.35, 2)
        lobule_scene = Scene(scene.size, rng, skin, scene.centre + offset)
        lobule = _lesion_alpha(
            lobule_scene,
            radius * rng.uniform(0.25, 0.45),
            irregularity=0.05,
            harmonics=3,
            aspect=rng.uniform(0.8, 1.0),
            edge_sigma=1.5,
        )
        blend(canvas, lobule * base * 0.95, vessel_red(skin, rng.uniform(0.0, 1.0)))


PAINTERS: dict[Diagnosis, Callable[[Lab, Scene], None]] = {
    Diagnosis.MEL: paint_mel,
    Diagnosis.NV: paint_nv,
    Diagnosis.BCC: paint_bcc,
    Diagnosis.AK: paint_ak,
    Diagnosis.BKL: paint_bkl,
    Diagnosis.DF: paint_df,
    Diagnosis.VASC: paint_vasc,
}
