import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from fairskin.imaging.decode import ImageDecodeError
from fairskin.review.blinding import (
    DEFAULT_QUALITY,
    blinded_derivative,
    inspect_served,
    served_encoding_lines,
    served_length,
)
from fairskin.review.stored_png import png_layout

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def textured(width: int = 96, height: int = 96) -> Image.Image:
    pixels = np.random.default_rng(0).integers(60, 200, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def marked_square() -> Image.Image:
    """Grey, with a red block in the top-left quadrant: shows where the top-left went."""
    pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
    pixels[:32, :32] = (220, 30, 30)
    return Image.fromarray(pixels)


def png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("origin", "synthetic")
    info.add_itxt("generator", "synthetic diffusion batch 12", lang="en", tkey="Generator")
    info.add_text("Comment", "synthetic", zip=True)
    return encode(textured(), "PNG", pnginfo=info)


def jpeg_with_metadata(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x0131] = "synthetic generator 1.0"  # Software
    exif[0x010F] = "SyntheticCam"  # Make
    return encode(
        image,
        "JPEG",
        quality=75,
        subsampling="4:4:4",
        exif=exif.tobytes(),
        icc_profile=SRGB_ICC,
        comment=b"synthetic",
    )


def rgba_png() -> bytes:
    pixels = np.zeros((80, 80, 4), dtype=np.uint8)
    pixels[..., :3] = (30, 90, 160)
    pixels[..., 3] = np.linspace(0, 255, 80, dtype=np.uint8)[None, :]
    return encode(Image.fromarray(pixels), "PNG")


def gray16_png() -> bytes:
    return encode(Image.fromarray(np.full((50, 50), 128 * 257, dtype=np.uint16)), "PNG")


def webp_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0131] = "synthetic generator 1.0"
    return encode(textured(70, 90), "WEBP", quality=80, exif=exif.tobytes())


INPUTS = {
    "png_text_chunks": png_with_text,
    "jpeg_exif_icc_comment": lambda: jpeg_with_metadata(textured()),
    "jpeg_rotated": lambda: jpeg_with_metadata(marked_square(), orientation=6),
    "rgba_png": rgba_png,
    "gray16_png": gray16_png,
    "palette_png": lambda: encode(textured().convert("P"), "PNG"),
    "palette_gif": lambda: encode(textured().convert("P"), "GIF", comment=b"synthetic"),
    "wide_png": lambda: encode(textured(150, 40), "PNG"),
    "webp": webp_with_exif,
    "progressive_jpeg": lambda: encode(textured(), "JPEG", progressive=True, dpi=(300, 300)),
}


@pytest.fixture(scope="module")
def served() -> dict[str, bytes]:
    return {name: blinded_derivative(make()) for name, make in INPUTS.items()}


def test_the_inputs_really_carry_the_metadata_that_must_go():
    # Otherwise the blinding tests below would pass without stripping anything.
    assert b"synthetic" in png_with_text()
    assert b"synthetic" in jpeg_with_metadata(textured())
    jpeg = inspect_served(jpeg_with_metadata(textured()))
    assert jpeg["has_exif"] and jpeg["has_icc"] and jpeg["has_comment"]
    assert jpeg["metadata_markers"] == ["APP0", "APP1", "APP2", "COM"]
    assert jpeg["subsampling"] == "4:4:4"
    assert inspect_served(INPUTS["progressive_jpeg"]())["progressive"]


@pytest.mark.parametrize("name", INPUTS)
def test_every_served_image_is_a_bare_uncompressed_png(served, name):
    report = inspect_served(served[name])

    assert report["format"] == "PNG"
    assert report["size"] == (512, 512)
    assert report["mode"] == "RGB"
    assert report["markers"] == ["IHDR", "IDAT", "IEND"]
    assert report["metadata_markers"] == []
    assert report["stored"] is True
    assert not (report["has_exif"] or report["has_icc"] or report["has_comment"])
    assert report["dpi"] is None
    assert report["trailing_bytes"] == 0
    assert b"synthetic" not in served[name].lower()
    assert b"SyntheticCam" not in served[name]


def test_all_served_images_have_one_length_and_one_layout(served):
    reports = [inspect_served(data) for data in served.values()]

    # Whatever the input (camera JPEG, generator PNG, GIF, WebP) and whatever it shows, the
    # files have the same length, and everything in them but the pixels and the checksums
    # computed from them (chunk layout, IHDR, zlib header, deflate block headers, row
    # filters) is identical.
    assert {len(data) for data in served.values()} == {served_length(512)} == {787_072}
    assert len({r["header_sha256"] for r in reports}) == 1
    assert {r["payload_bytes"] for r in reports} == {787_015}
    assert len(set(served.values())) > 5  # the pixels do differ


def test_two_different_images_differ_only_in_pixels_and_checksums():
    a = blinded_derivative(encode(textured(), "PNG"), size=64)
    b = blinded_derivative(encode(Image.new("RGB", (30, 50), (250, 250, 250)), "PNG"), size=64)
    assert len(a) == len(b) == served_length(64)
    layout_a, layout_b = png_layout(a), png_layout(b)
    assert layout_a == layout_b
    assert layout_a["deflate_blocks"] == [[1, 0, 64 * (1 + 3 * 64)]]
    assert layout_a["row_filters"] == [0]
    # Byte by byte: the 41 bytes before the pixel rows (signature, IHDR, IDAT length and type,
    # zlib and block headers) and the 12-byte IEND are identical.
    assert a[:41] == b[:41] and a[-12:] == b[-12:]


def test_every_image_gets_the_same_jpeg_round_trip():
    source = textured(64, 64)
    served_pixels = np.asarray(
        Image.open(io.BytesIO(blinded_derivative(encode(source, "PNG"), size=64)))
    )
    jpeg = encode(source, "JPEG", quality=DEFAULT_QUALITY, subsampling="4:2:0")
    expected = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert np.array_equal(served_pixels, expected)
    assert not np.array_equal(served_pixels, np.asarray(source))  # the round trip is lossy


def quadrant_means(data: bytes) -> dict[str, np.ndarray]:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)
    half = pixels.shape[0] // 2
    return {
        "top_left": pixels[:half, :half].mean(axis=(0, 1)),
        "top_right": pixels[:half, half:].mean(axis=(0, 1)),
        "bottom_left": pixels[half:, :half].mean(axis=(0, 1)),
    }


def is_red(mean: np.ndarray) -> bool:
    return mean[0] > 180 and mean[1] < 80


def test_exif_orientation_is_applied_before_blinding(served):
    upright = quadrant_means(blinded_derivative(jpeg_with_metadata(marked_square())))
    assert is_red(upright["top_left"]) and not is_red(upright["top_right"])

    # Orientation 6: the stored image is shown turned 90 degrees clockwise, so the stored
    # top-left block is seen at the top right.
    rotated = quadrant_means(served["jpeg_rotated"])
    assert is_red(rotated["top_right"])
    assert not is_red(rotated["top_left"]) and not is_red(rotated["bottom_left"])


def test_colours_survive_the_conversion():
    flat = Image.new("RGB", (40, 60), (200, 120, 60))
    pixels = np.asarray(Image.open(io.BytesIO(blinded_derivative(encode(flat, "PNG")))))
    assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - (200, 120, 60)).max() < 2

    gray = np.asarray(Image.open(io.BytesIO(blinded_derivative(gray16_png()))), dtype=float)
    assert abs(gray.mean() - 128) < 2  # 16-bit mid-grey scaled, not clipped to white

    # Alpha is flattened onto white: the transparent left edge comes out white, the opaque
    # right edge keeps its colour.
    rgba = np.asarray(Image.open(io.BytesIO(blinded_derivative(rgba_png()))), dtype=float)
    assert rgba[:, :4].mean(axis=(0, 1)).min() > 240
    assert np.abs(rgba[:, -4:].mean(axis=(0, 1)) - (30, 90, 160)).max() < 8


def test_a_wide_image_is_centre_cropped_not_squashed():
    pixels = np.full((40, 120, 3), 255, dtype=np.uint8)
    pixels[:, 40:80] = (0, 0, 0)  # the centred square is black; the sides are white
    served = np.asarray(
        Image.open(io.BytesIO(blinded_derivative(encode(Image.fromarray(pixels), "PNG"), size=64))),
        dtype=float,
    )
    assert served.shape == (64, 64, 3)
    assert served[:, 8:56].mean() < 10


def test_the_same_input_gives_the_same_bytes(tmp_path):
    source = jpeg_with_metadata(textured(), orientation=6)
    path = tmp_path / "source.jpg"
    path.write_bytes(source)

    assert blinded_derivative(source) == blinded_derivative(source)
    assert blinded_derivative(path) == blinded_derivative(source)
    assert blinded_derivative(str(path), size=128) == blinded_derivative(source, size=128)


def png_claiming_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (4, 4)), "PNG"))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header[4:]
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
        (encode(textured(), "JPEG")[:1500], "truncated or corrupt"),
        (png_claiming_size(100_000, 100_000), "decompression bomb"),
        (png_claiming_size(8_000, 6_000), "pixel limit"),
    ],
)
def test_corrupt_and_oversized_inputs_are_refused(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        blinded_derivative(data)


def test_the_pixel_limit_can_be_tightened():
    with pytest.raises(ValueError, match="pixel limit"):
        blinded_derivative(encode(textured(), "PNG"), max_pixels=1000)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="size"):
        blinded_derivative(encode(textured(), "PNG"), size=0)
    with pytest.raises(ValueError, match="quality"):
        blinded_derivative(encode(textured(), "PNG"), quality=100)


def test_inspect_served_reports_other_formats_and_refuses_garbage():
    report = inspect_served(png_with_text())
    assert report["format"] == "PNG"
    assert report["subsampling"] is None
    assert report["metadata_markers"] == ["tEXt", "iTXt", "zTXt"]
    assert report["stored"] is False  # Pillow's compressed IDAT
    with pytest.raises(ImageDecodeError):
        inspect_served(b"garbage")


def test_the_datasheet_lines_describe_what_was_served():
    clean = {"formats": ["PNG"], "dimensions": [[512, 512]], "encoding_failures": [], "alpha": 0.01}
    text = " ".join(served_encoding_lines(clean, [787_072] * 3))
    assert "quality 90, 4:2:0" in text and "787,072 bytes long" in text
    assert "no encoding signal" in text
    legacy = {"formats": ["JPEG"], "dimensions": [[512, 512]]}
    text = " ".join(served_encoding_lines(legacy, [30_000, 38_000]))
    assert "served as JPEG" in text and "varied (30,000-38,000 bytes)" in text
    assert "predates" in text
    failing = clean | {"encoding_failures": ["byte length separates real from synthetic"]}
    assert "found encoding signals: byte length" in " ".join(served_encoding_lines(failing, []))
