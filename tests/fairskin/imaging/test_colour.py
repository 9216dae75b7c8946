import numpy as np
import pytest

from fairskin.imaging.colour import lab_to_srgb, srgb_to_lab


@pytest.mark.parametrize(
    ("rgb", "expected_lab"),
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        # Published CIELAB (D65) of the sRGB primaries (Lindbloom's calculator).
        ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
        ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
        ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ],
)
def test_srgb_to_lab_matches_reference_values(rgb, expected_lab):
    np.testing.assert_allclose(srgb_to_lab(rgb), expected_lab, atol=0.01)


def test_lab_round_trip_recovers_srgb_to_a_fraction_of_an_8_bit_step():
    rgb = np.random.default_rng(3).random((500, 3))
    np.testing.assert_allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=0.1 / 255)


def test_lab_to_srgb_clips_out_of_gamut_colours():
    rgb = lab_to_srgb([[50.0, 120.0, 0.0], [100.0, 0.0, 0.0]])
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    np.testing.assert_allclose(rgb[1], 1.0, atol=1e-4)


def test_wrong_channel_count_is_rejected():
    with pytest.raises(ValueError, match="last axis"):
        srgb_to_lab(np.zeros((4, 4)))
