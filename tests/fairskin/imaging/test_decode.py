import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from fairskin.imaging.decode import (
    ImageDecodeError,
    decode_image,
    decode_image_file,
)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def noisy_rgb(width: int = 64, height: int = 48) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR header is rewritten to declare width x height."""
    data = bytearray(encode(Image.new("RGB", (4, 4), (10, 20, 30)), "PNG"))
    # Signature (8 bytes), then the IHDR chunk: length, type, 13 data bytes, CRC.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_decodes_png_and_jpeg_to_rgb():
    source = noisy_rgb()
    png = decode_image(encode(source, "PNG"))
    jpeg = decode_image(encode(source, "JPEG", quality=95))
    assert png.mode == jpeg.mode == "RGB"
    assert png.size == jpeg.size == (64, 48)
    assert np.array_equal(np.asarray(png), np.asarray(source))


def test_random_bytes_are_rejected_naming_the_file():
    junk = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match="lesion_17.jpg.*not a readable image"):
        decode_image(junk, name="lesion_17.jpg")


def test_empty_data_is_rejected():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", name="x.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_rejected(fmt):
    data = encode(noisy_rgb(256, 256), fmt)
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], name=f"cut.{fmt.lower()}")


def test_header_claiming_a_huge_image_is_refused_as_a_bomb():
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        decode_image(png_claiming_size(100_000, 100_000), name="bomb.png")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # 8000 x 6000 = 48 M pixels: under Pillow's own bomb limit, over ours (40 M), and the file
    # holds no such pixel data. Were pixels decoded first, this would fail as "truncated".
    with pytest.raises(ImageDecodeError, match="48,000,000 pixels exceeds the pixel limit"):
        decode_image(png_claiming_size(8000, 6000), name="claims_48mp.png")


def test_real_image_over_a_small_pixel_limit_is_refused():
    data = encode(Image.new("RGB", (300, 200), (200, 150, 120)), "PNG")
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        decode_image(data, max_pixels=50_000)
    assert decode_image(data, max_pixels=60_000).size == (300, 200)


def test_pillow_bomb_warning_becomes_an_error_when_our_limit_is_higher():
    # 10000 x 10000 is above Pillow's warning threshold (89 M) but below our generous limit.
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        decode_image(png_claiming_size(10_000, 10_000), max_pixels=200_000_000)


def test_zero_size_header_is_rejected():
    with pytest.raises(ImageDecodeError, match="zero.png"):
        decode_image(png_claiming_size(0, 4), name="zero.png")


def test_rgba_is_flattened_onto_white():
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (200, 10, 10, 255)  # opaque red
    pixels[0, 1] = (200, 10, 10, 0)  # fully transparent
    pixels[1, 0] = (0, 0, 0, 128)  # half-transparent black
    rgb = np.asarray(decode_image(encode(Image.fromarray(pixels), "PNG")))
    assert tuple(rgb[0, 0]) == (200, 10, 10)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in rgb[1, 0])


def test_grayscale_and_palette_images_become_rgb():
    gray = Image.new("L", (3, 3), 77)
    assert tuple(np.asarray(decode_image(encode(gray, "PNG")))[1, 1]) == (77, 77, 77)

    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 12, 200, 34] + [0, 0, 0] * 254)
    assert tuple(np.asarray(decode_image(encode(palette, "PNG")))[0, 0]) == (12, 200, 34)


def test_palette_transparency_is_flattened_onto_white():
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([90, 40, 40, 12, 200, 34] + [0, 0, 0] * 254)
    palette.putpixel((1, 0), 1)
    rgb = np.asarray(decode_image(encode(palette, "PNG", transparency=1)))
    assert tuple(rgb[0, 0]) == (90, 40, 40)
    assert tuple(rgb[0, 1]) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    cmyk = Image.new("CMYK", (8, 8), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((255, 0, 0, 0), (0, 0, 4, 8))  # full cyan: no red
    rgb = np.asarray(decode_image(encode(cmyk, fmt))).astype(int)
    assert rgb.shape == (8, 8, 3)
    assert np.all(rgb[:, 6] >= 245)
    assert rgb[4, 1, 0] <= 15 and rgb[4, 1, 1] >= 240 and rgb[4, 1, 2] >= 240


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    rgb = np.asarray(decode_image(data))
    assert [int(v) for v in rgb[0, :, 0]] == [0, 128, 255]
    assert np.all(rgb[..., 0] == rgb[..., 2])


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 5, 5))  # red marker top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.size == (20, 40)
    r, g, b = np.asarray(upright)[2, 17].astype(int)  # the marker is now at the top-right
    assert r > 200 and b < 60


def test_embedded_srgb_profile_leaves_pixels_and_broken_profile_is_ignored():
    source = noisy_rgb(16, 16)
    srgb_bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_profile = decode_image(encode(source, "PNG", icc_profile=srgb_bytes))
    with_garbage = decode_image(encode(source, "PNG", icc_profile=b"not an icc profile"))
    assert np.array_equal(np.asarray(with_profile), np.asarray(source))
    assert np.array_equal(np.asarray(with_garbage), np.asarray(source))


def linear_rgb_icc_profile() -> bytes:
    """A minimal ICC v2 display profile: sRGB primaries with a linear (gamma 1.0) tone curve."""

    def s15f16(*values: float) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz_tag(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15f16(x, y, z)

    text = b"Linear RGB test\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    gamma_one = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0100) + bytes(2)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz_tag(0.9642, 1.0, 0.8249)),
        # The sRGB primaries adapted to the D50 connection space.
        (b"rXYZ", xyz_tag(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz_tag(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz_tag(0.1431, 0.0606, 0.7141)),
        (b"rTRC", gamma_one),
        (b"gTRC", gamma_one),
        (b"bTRC", gamma_one),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)
        + s15f16(0.9642, 1.0, 0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_embedded_non_srgb_profile_is_converted_to_srgb():
    # Mid-grey 128 in linear light is 188 once sRGB-encoded; untagged it stays 128.
    grey = Image.new("RGB", (4, 4), (128, 128, 128))
    tagged = decode_image(encode(grey, "PNG", icc_profile=linear_rgb_icc_profile()))
    untagged = decode_image(encode(grey, "PNG"))
    assert np.all(np.abs(np.asarray(tagged).astype(int) - 188) <= 2)
    assert np.all(np.asarray(untagged) == 128)


def test_multi_picture_jpeg_from_phones_decodes_to_its_first_picture():
    first = Image.new("RGB", (32, 24), (200, 30, 30))
    second = Image.new("RGB", (32, 24), (30, 30, 200))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    r, g, b = np.asarray(decode_image(data))[12, 16].astype(int)
    assert r > 150 and b < 80


def test_unlisted_formats_are_refused():
    data = encode(Image.new("RGB", (4, 4)), "PPM")
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(data)


def test_decode_image_file_reads_and_names_the_path(tmp_path):
    good = tmp_path / "ok.png"
    good.write_bytes(encode(noisy_rgb(), "PNG"))
    assert decode_image_file(good).size == (64, 48)

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        decode_image_file(bad)
    with pytest.raises(FileNotFoundError):
        decode_image_file(tmp_path / "missing.png")
