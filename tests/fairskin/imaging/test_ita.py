import math

import cv2
import numpy as np
import pytest
from PIL import Image

from fairskin.imaging.colour import lab_to_image, srgb_to_lab
from fairskin.imaging.ita import ITA_METHOD, fst_from_ita, ita_from_lab, ita_value

SIZE = 200


def uniform_lab_image(lab: tuple[float, float, float], size: int = SIZE) -> np.ndarray:
    return lab_to_image(np.full((size, size, 3), lab, dtype=np.float32))


def to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb)


@pytest.mark.parametrize(
    ("lab", "expected_ita"),
    [
        # By hand: atan(20/12) = 59.04 deg; atan(5/18) = 15.52 deg; atan(-15/14) = -46.97 deg.
        ((70.0, 8.0, 12.0), 59.04),
        ((55.0, 10.0, 18.0), 15.52),
        ((35.0, 9.0, 14.0), -46.97),
    ],
)
def test_ita_of_uniform_skin_matches_hand_computed_value(lab, expected_ita):
    # Storing the colour in 8 bits moves b* by up to ~0.5, which on dark skin (where ITA changes
    # ~2 degrees per unit of b*) is worth up to one and a half degrees.
    assert ita_value(to_image(uniform_lab_image(lab))) == pytest.approx(expected_ita, abs=1.5)


def test_ita_of_uniform_skin_is_exact_for_the_stored_8_bit_colour():
    rgb = uniform_lab_image((35.0, 9.0, 14.0))
    lightness, _, b = srgb_to_lab(rgb[0, 0] / 255.0)
    expected = math.degrees(math.atan2(lightness - 50.0, b))
    assert ita_value(to_image(rgb)) == pytest.approx(expected, abs=1e-6)


def test_ita_from_lab_is_the_angle_from_the_b_axis():
    assert ita_from_lab(60.0, 10.0) == pytest.approx(45.0)
    assert ita_from_lab(50.0, 15.0) == pytest.approx(0.0)
    assert ita_from_lab(40.0, 10.0) == pytest.approx(-45.0)


def skin_with_dark_lesion_and_hair() -> tuple[np.ndarray, float]:
    skin_lab = (65.0, 9.0, 15.0)
    rgb = uniform_lab_image(skin_lab)
    cv2.circle(rgb, (SIZE // 2, SIZE // 2), 55, (70, 40, 30), -1)
    for x in (20, 70, 150):
        cv2.line(rgb, (x, 0), (x + 30, SIZE - 1), (20, 15, 12), 2)
    return rgb, math.degrees(math.atan2(65.0 - 50.0, 15.0))


def test_lesion_and_hair_do_not_bias_the_skin_estimate():
    rgb, skin_ita = skin_with_dark_lesion_and_hair()
    assert ita_value(to_image(rgb)) == pytest.approx(skin_ita, abs=1.0)


def test_naive_whole_image_ita_would_be_wrong_so_the_masking_matters():
    rgb, skin_ita = skin_with_dark_lesion_and_hair()
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    naive = math.degrees(math.atan2(lab[..., 0].mean() - 50.0, lab[..., 2].mean()))
    assert abs(naive - skin_ita) > 5.0


def test_lesion_spilling_past_the_centre_is_left_out():
    skin_lab = (60.0, 10.0, 17.0)
    rgb = uniform_lab_image(skin_lab)
    cv2.circle(rgb, (SIZE // 2, SIZE // 2), int(SIZE * 0.45), (60, 35, 25), -1)
    expected = math.degrees(math.atan2(10.0, 17.0))
    assert ita_value(to_image(rgb)) == pytest.approx(expected, abs=1.0)


def test_lesion_filling_more_than_half_the_frame_is_left_out():
    # 55 % of the pixels are lesion: only ignoring the centre keeps skin the majority.
    rgb = uniform_lab_image((66.0, 8.0, 14.0))
    cv2.circle(rgb, (SIZE // 2, SIZE // 2), int(SIZE * 0.42), (90, 55, 40), -1)
    expected = math.degrees(math.atan2(16.0, 14.0))
    assert ita_value(to_image(rgb)) == pytest.approx(expected, abs=1.0)


def test_overhang_does_not_drag_the_median_on_textured_skin():
    # With uneven skin, a lesion covering ~40 % of the periphery would pull a plain median
    # towards it by a fraction of the skin's spread; the Otsu step removes it first.
    rng = np.random.default_rng(5)
    lab = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    lab[:] = (60.0, 10.0, 17.0)
    lab[..., 0] += rng.normal(0.0, 3.0, (SIZE, SIZE)).astype(np.float32)
    rgb = lab_to_image(lab)
    cv2.circle(rgb, (SIZE // 2, SIZE // 2), int(SIZE * 0.45), (60, 35, 25), -1)
    reference = ita_value(to_image(lab_to_image(lab)))  # the same skin without the lesion
    assert ita_value(to_image(rgb)) == pytest.approx(reference, abs=0.5)


def test_lesion_lighter_than_dark_skin_is_left_out():
    # On dark skin a pink lesion is lighter than the skin: keeping "the lighter class" would
    # measure the lesion. Here it spills into the periphery on purpose.
    rgb = uniform_lab_image((36.0, 9.0, 13.0))
    cv2.circle(rgb, (SIZE // 2, SIZE // 2), int(SIZE * 0.45), (200, 140, 150), -1)
    expected = math.degrees(math.atan2(-14.0, 13.0))
    assert ita_value(to_image(rgb)) == pytest.approx(expected, abs=1.0)


def test_large_photo_gives_the_same_value_as_a_small_one():
    small = ita_value(to_image(uniform_lab_image((62.0, 9.0, 17.0), 100)))
    large_rgb = lab_to_image(np.full((900, 1600, 3), (62.0, 9.0, 17.0), dtype=np.float32))
    assert ita_value(to_image(large_rgb)) == pytest.approx(small, abs=0.2)


def test_blank_white_image_has_no_skin():
    with pytest.raises(ValueError, match="no usable skin pixels"):
        ita_value(Image.new("RGB", (64, 64), (255, 255, 255)))


@pytest.mark.parametrize(
    ("ita", "fst"),
    [
        (90.0, 1),
        (55.01, 1),
        (55.0, 2),
        (41.01, 2),
        (41.0, 3),
        (28.01, 3),
        (28.0, 4),
        (19.01, 4),
        (19.0, 5),
        (10.01, 5),
        (10.0, 6),
        (-60.0, 6),
    ],
)
def test_fst_from_ita_thresholds_and_boundaries(ita, fst):
    assert fst_from_ita(ita) == fst


def test_fst_from_ita_rejects_nan():
    with pytest.raises(ValueError):
        fst_from_ita(float("nan"))


def test_method_name_is_stable():
    # Stored next to every ITA-derived FST in the catalog: changing it orphans those rows.
    assert ITA_METHOD == "ita-kinyanjui2020"
