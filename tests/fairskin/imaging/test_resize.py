import numpy as np
import pytest
from PIL import Image

from fairskin.imaging.resize import centre_crop_box, to_square

GREY = (128, 128, 128)


def landscape_with_marker() -> Image.Image:
    """300 x 100: green left third, blue right third, grey centre square with a red dot."""
    image = Image.new("RGB", (300, 100), GREY)
    image.paste((0, 255, 0), (0, 0, 100, 100))
    image.paste((0, 0, 255), (200, 0, 300, 100))
    image.paste((255, 0, 0), (145, 45, 155, 55))
    return image


def test_output_is_square_at_the_requested_size():
    assert to_square(Image.new("RGB", (640, 480))).size == (512, 512)
    assert to_square(Image.new("RGB", (300, 900)), 224).size == (224, 224)
    assert to_square(Image.new("RGB", (40, 30)), 64).size == (64, 64)  # small images upscale


def test_centre_crop_keeps_the_centre_and_nothing_outside_it():
    out = np.asarray(to_square(landscape_with_marker(), 50)).astype(int)
    r, g, b = out[25, 25]
    assert r > 200 and g < 60 and b < 60  # the marker stayed in the middle
    for column in (0, 1, 48, 49):  # edges: grey, with no green or blue from the cut-off sides
        assert np.all(np.abs(out[:, column] - GREY) <= 2)


def test_portrait_crop_is_vertical_and_centred():
    image = Image.new("L", (100, 300), 0)
    image.paste(255, (0, 145, 100, 155))  # a white band across the middle
    out = np.asarray(to_square(image, 100))
    assert out[50, 50] > 200 and out[5, 50] < 10 and out[95, 50] < 10


def test_mode_is_kept():
    assert to_square(Image.new("L", (80, 60)), 32).mode == "L"


def test_odd_surplus_drops_the_extra_pixel_on_the_right():
    assert centre_crop_box(101, 100) == (0, 0, 100, 100)
    assert centre_crop_box(103, 100) == (1, 0, 101, 100)
    assert centre_crop_box(100, 104) == (0, 2, 100, 102)


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        to_square(Image.new("RGB", (10, 10)), 0)
    with pytest.raises(ValueError):
        centre_crop_box(0, 10)
