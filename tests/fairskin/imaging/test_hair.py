import cv2
import numpy as np
import pytest
from PIL import Image

from fairskin.imaging.colour import lab_to_image
from fairskin.imaging.demo import draw_lesion
from fairskin.imaging.hair import HairRemovalParams, hair_mask, remove_hair
from fairskin.labels import SEVEN_CLASSES

SIZE = 256
HAIR_RGB = (25, 18, 15)


def skin(seed: int = 0) -> np.ndarray:
    """Light-brown skin with pixel noise, as 8-bit RGB."""
    lab = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    lab[:] = (62.0, 10.0, 16.0)
    lab[..., 0] += np.random.default_rng(seed).normal(0.0, 1.0, (SIZE, SIZE)).astype(np.float32)
    return lab_to_image(lab)


def skin_with_hairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, hair pixels, pixels at least 4 px from any hair)."""
    rgb = skin()
    drawn = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for (x0, y0, x1, y1), width in [
        ((0, 20, 255, 90), 2),
        ((30, 255, 200, 0), 3),
        ((120, 0, 140, 255), 2),
        ((0, 200, 255, 180), 1),
        ((210, 0, 255, 255), 3),
    ]:
        cv2.line(drawn, (x0, y0), (x1, y1), 255, width)
    rgb[drawn > 0] = HAIR_RGB
    near = cv2.dilate(drawn, np.ones((9, 9), np.uint8)) > 0
    return rgb, drawn > 0, ~near


def test_mask_finds_drawn_hairs_and_little_else():
    rgb, hairs, far_from_hair = skin_with_hairs()
    mask = hair_mask(Image.fromarray(rgb))
    assert mask[hairs].mean() > 0.95
    assert mask[far_from_hair].mean() < 0.01


def test_removal_replaces_hair_with_skin_colour():
    rgb, hairs, far_from_hair = skin_with_hairs()
    skin_colour = rgb[far_from_hair].mean(axis=0)
    cleaned = np.asarray(remove_hair(Image.fromarray(rgb))).astype(float)
    before = np.linalg.norm(rgb[hairs].astype(float) - skin_colour, axis=1).mean()
    after = np.linalg.norm(cleaned[hairs] - skin_colour, axis=1).mean()
    assert before > 100
    assert after < 0.1 * before
    # Skin away from the hair is left exactly as it was.
    assert np.array_equal(cleaned[far_from_hair], rgb[far_from_hair])


def test_a_dark_lesion_is_not_taken_for_hair():
    rgb = skin()
    centre = (SIZE // 2, SIZE // 2)
    cv2.circle(rgb, centre, 50, (70, 40, 30), -1, lineType=cv2.LINE_AA)
    body = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(body, centre, 45, 255, -1)  # all but the rim, where a thin edge may be picked
    mask = hair_mask(Image.fromarray(rgb))
    assert not mask[body > 0].any()
    assert mask.mean() < 0.002


def test_small_round_dots_are_dropped_by_the_elongation_filter():
    rgb = skin()
    dots = np.zeros((SIZE, SIZE), np.uint8)
    for x in range(30, 230, 40):
        for y in range(30, 230, 40):
            cv2.circle(dots, (x, y), 4, 255, -1)
    rgb[dots > 0] = HAIR_RGB
    assert hair_mask(Image.fromarray(rgb))[dots > 0].mean() < 0.01
    unfiltered = HairRemovalParams(min_elongation=0.0)
    assert hair_mask(Image.fromarray(rgb), unfiltered)[dots > 0].mean() > 0.9


def test_hairless_skin_is_returned_unchanged():
    rgb = skin()
    assert not hair_mask(Image.fromarray(rgb)).any()
    assert np.array_equal(np.asarray(remove_hair(Image.fromarray(rgb))), rgb)


def test_demo_hair_is_found_on_every_skin_type():
    # draw_lesion paints hair from its own random stream, so the pixels that differ between
    # the hairy and the hairless image are exactly the hair.
    for fst in range(1, 7):
        dx = SEVEN_CLASSES[fst % 7]
        plain = np.asarray(draw_lesion(dx, fst, seed=fst, size=SIZE)).astype(int)
        hairy_image = draw_lesion(dx, fst, seed=fst, size=SIZE, hair=True)
        hairs = np.abs(np.asarray(hairy_image).astype(int) - plain).max(axis=-1) >= 20
        assert hairs.mean() > 0.005
        assert hair_mask(hairy_image)[hairs].mean() > 0.9


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError):
        HairRemovalParams(line_length=2)
    with pytest.raises(ValueError):
        HairRemovalParams(inpaint_radius=0)
