from collections import Counter

import cv2
import numpy as np
import pytest

from fairskin.imaging.colour import image_to_lab
from fairskin.imaging.demo import demo_items, draw_lesion, ita_recovery_report
from fairskin.imaging.lesions import PAINTERS
from fairskin.labels import FST_TYPES, SEVEN_CLASSES, Diagnosis

SIZE = 192


def lab_of(dx, fst, seed, size=SIZE, **kwargs):
    return image_to_lab(np.asarray(draw_lesion(dx, fst, seed=seed, size=size, **kwargs)))


def lesion_and_skin(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lesion pixels, skin colour): pixels far (Delta E > 6) from the median border colour."""
    border = np.concatenate([lab[:12].reshape(-1, 3), lab[-12:].reshape(-1, 3)])
    skin = np.median(border, axis=0)
    lesion = np.linalg.norm(lab - skin, axis=-1) > 6.0
    return lesion, skin


def with_and_without_lesion(monkeypatch, dx, fst, seed) -> tuple[np.ndarray, np.ndarray]:
    """Lab of the demo image, and of the same image with the lesion painter switched off.

    Skin, lighting and grain come from random streams the painter does not touch, so the two
    differ exactly where the lesion was painted.
    """
    with_lesion = lab_of(dx, fst, seed)
    with monkeypatch.context() as patch:
        patch.setitem(PAINTERS, Diagnosis(dx), lambda canvas, scene: None)
        without = lab_of(dx, fst, seed)
    return with_lesion, without


def test_same_seed_gives_identical_pixels_and_another_seed_does_not():
    first = draw_lesion(Diagnosis.MEL, 3, seed=11, size=SIZE)
    again = draw_lesion("MEL", 3, seed=11, size=SIZE)
    other = draw_lesion(Diagnosis.MEL, 3, seed=12, size=SIZE)
    assert first.mode == "RGB" and first.size == (SIZE, SIZE)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_a_second_view_is_reproducible_and_differs_from_the_first():
    view0 = draw_lesion(Diagnosis.NV, 2, seed=4, size=SIZE)
    view1 = draw_lesion(Diagnosis.NV, 2, seed=4, size=SIZE, view=1)
    assert view1.tobytes() == draw_lesion(Diagnosis.NV, 2, seed=4, size=SIZE, view=1).tobytes()
    assert view1.tobytes() != view0.tobytes()


def test_hair_changes_only_a_minority_of_pixels_and_darkens_them():
    plain = lab_of(Diagnosis.BKL, 2, 7)
    hairy = lab_of(Diagnosis.BKL, 2, 7, hair=True)
    changed = np.abs(hairy - plain).max(axis=-1) > 0.5
    assert 0.003 < changed.mean() < 0.15
    assert np.all(hairy[changed][:, 0] <= plain[changed][:, 0] + 0.5)


def test_darker_skin_types_have_darker_skin():
    medians = []
    for fst in FST_TYPES:
        border_l = [
            lesion_and_skin(lab_of(dx, fst, seed))[1][0]
            for seed in range(3)
            for dx in (Diagnosis.NV, Diagnosis.AK)
        ]
        medians.append(np.mean(border_l))
    assert all(lighter > darker for lighter, darker in zip(medians, medians[1:], strict=False))
    assert medians[0] - medians[-1] > 20


@pytest.mark.parametrize("fst", FST_TYPES)
def test_naevus_is_darker_than_the_skin_on_every_type(monkeypatch, fst):
    lab, skin = with_and_without_lesion(monkeypatch, Diagnosis.NV, fst, 5)
    lesion = np.linalg.norm(lab - skin, axis=-1) > 3.0
    assert lesion.mean() > 0.02
    assert np.median(lab[lesion][:, 0] - skin[lesion][:, 0]) < -8


def class_statistics(monkeypatch, dx: Diagnosis) -> dict[str, float]:
    areas, redness, spread = [], [], []
    for seed in range(4):
        lab, skin = with_and_without_lesion(monkeypatch, dx, 2, seed)
        lesion = np.linalg.norm(lab - skin, axis=-1) > 3.0
        # The soft rim blends into the skin: judge colour variety on the lesion's core only.
        core = cv2.erode(lesion.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        areas.append(lesion.mean())
        redness.append(np.median(lab[lesion][:, 1] - skin[lesion][:, 1]))
        spread.append(np.std(lab[core][:, 0]))
    return {"area": np.mean(areas), "redness": np.mean(redness), "spread": np.mean(spread)}


def test_classes_have_their_distinct_looks(monkeypatch):
    stats = {dx: class_statistics(monkeypatch, dx) for dx in SEVEN_CLASSES}
    # Size: dermatofibroma smallest, melanoma larger than a naevus.
    assert stats[Diagnosis.DF]["area"] < stats[Diagnosis.NV]["area"] < stats[Diagnosis.MEL]["area"]
    # Colour: vascular lesions, BCC and AK are red; a naevus is not.
    for red in (Diagnosis.VASC, Diagnosis.BCC, Diagnosis.AK):
        assert stats[red]["redness"] > stats[Diagnosis.NV]["redness"] + 5
    assert stats[Diagnosis.VASC]["redness"] > 15
    # Variegation: melanoma is multi-coloured, a naevus is even.
    assert stats[Diagnosis.MEL]["spread"] > 1.5 * stats[Diagnosis.NV]["spread"]


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="OTHER"):
        draw_lesion(Diagnosis.OTHER, 2, seed=0)
    with pytest.raises(ValueError, match="1-6"):
        draw_lesion(Diagnosis.NV, 7, seed=0)
    with pytest.raises(ValueError):
        draw_lesion(Diagnosis.NV, 2, seed=-1)
    with pytest.raises(ValueError):
        draw_lesion(Diagnosis.NV, 2, seed=0, size=16)
    with pytest.raises(ValueError):
        next(demo_items(3, 0, hair_fraction=1.5))


def test_demo_items_are_balanced_and_grouped():
    items = list(demo_items(12, seed=3, size=64))
    assert len(items) == 84
    cells = Counter((item.diagnosis, item.fst) for item in items)
    assert set(cells.values()) == {2}
    assert len(cells) == 42
    assert len({item.file_name for item in items}) == 84
    groups = Counter(item.group_id for item in items)
    assert set(groups.values()) == {2}  # each lesion photographed twice
    for item in items:
        assert item.image.size == (64, 64)
        assert item.group_id in item.file_name


def test_uneven_per_class_counts_stay_within_one_of_balanced():
    items = list(demo_items(8, seed=1, size=64))
    per_class = Counter(item.diagnosis for item in items)
    assert set(per_class.values()) == {8}
    cells = Counter((item.diagnosis, item.fst) for item in items)
    per_fst = Counter(item.fst for item in items)
    assert set(cells.values()) <= {1, 2}
    assert max(per_fst.values()) - min(per_fst.values()) <= 1


def test_demo_items_are_reproducible():
    first = [item.image.tobytes() for item in demo_items(6, seed=9, size=64)]
    again = [item.image.tobytes() for item in demo_items(6, seed=9, size=64)]
    other = [item.image.tobytes() for item in demo_items(6, seed=10, size=64)]
    assert first == again
    assert first != other


def test_ita_recovers_the_drawn_skin_type_within_one_type():
    # Measured at 512 px with 5 images per cell: ~50 % exact, ~96 % within one type. The floor
    # here is deliberately modest; it catches a broken ITA or skin-tone table, not noise.
    report = ita_recovery_report(2, seed=0, size=256)
    assert report.n_images == 84
    assert sum(map(sum, report.confusion)) == 84
    assert report.within_one_rate >= 0.8
    assert report.exact_rate > 1 / 3  # well above the one-in-six of guessing
