"""Reading and writing images: modes, bit depths, alpha, metadata, atomic writes."""

import io as stdio
import os

import numpy as np
import pytest
from PIL import Image

from conftest import noisy_array, save
from denoise import io


@pytest.mark.parametrize(
    "mode,channels,bits,alpha",
    [("L", 1, 8, False), ("LA", 1, 8, True), ("RGB", 3, 8, False), ("RGBA", 3, 8, True), ("P", 3, 8, False)],
)
def test_read_modes(tmp_path, mode, channels, bits, alpha):
    path = save(tmp_path / "x.png", noisy_array(12, 10, 3), mode)
    decoded = io.read_image(path)
    assert decoded.pixels.shape == (12, 10, channels)
    assert decoded.pixels.dtype == np.float32 and 0 <= decoded.pixels.min() <= decoded.pixels.max() <= 1
    assert decoded.bits == bits
    assert (decoded.alpha is not None) == alpha


def test_16bit_grey_and_colour_keep_all_bits(tmp_path):
    import cv2

    grey = noisy_array(9, 11, 1, dtype=np.uint16)
    colour = noisy_array(9, 11, 3, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    cv2.imwrite(str(tmp_path / "c.png"), colour[..., ::-1])
    cv2.imwrite(str(tmp_path / "c.tif"), colour[..., ::-1])
    for name, expected in (("g.png", grey[..., None]), ("c.png", colour), ("c.tif", colour)):
        decoded = io.read_image(tmp_path / name)
        assert decoded.bits == 16
        np.testing.assert_array_equal(np.round(decoded.pixels * 65535).astype(np.uint16), expected)
        written = io.encode(decoded, decoded.pixels, io.EXTENSIONS[os.path.splitext(name)[1]])
        again = io.decode_bytes(written)
        assert again.bits == 16
        np.testing.assert_array_equal(again.pixels, decoded.pixels)


def test_exif_orientation_applied_and_metadata_copied(tmp_path):
    array = noisy_array(10, 20, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    exif[0x010F] = "TestCam"
    icc = b"\0" * 128  # any bytes: Pillow copies the profile through without parsing it
    path = save(tmp_path / "x.jpg", array, exif=exif.tobytes(), icc_profile=icc, quality=95)
    decoded = io.read_image(path)
    assert decoded.pixels.shape[:2] == (20, 10)  # rotated upright
    out = Image.open(stdio.BytesIO(io.encode(decoded, decoded.pixels, "JPEG")))
    assert out.size == (10, 20)
    assert out.getexif()[0x010F] == "TestCam"
    assert out.getexif().get(0x0112, 1) == 1  # not rotated twice by viewers
    assert out.info.get("icc_profile") == icc


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA", "F"])
@pytest.mark.parametrize("compression,expected", [
    ("tiff_lzw", "tiff_lzw"), ("packbits", "packbits"), ("raw", "raw"), ("jpeg", "tiff_adobe_deflate"),
])
def test_tiff_keeps_a_lossless_compression_and_stores_lossy_ones_as_deflate(tmp_path, mode, compression, expected):
    if compression == "jpeg" and mode not in ("L", "RGB"):
        pytest.skip("libtiff's JPEG scheme takes 8-bit grey and RGB only")
    array = noisy_array(16, 24, 4 if mode == "RGBA" else 3 if mode == "RGB" else 1)
    image = Image.fromarray(array.squeeze()).convert(mode) if mode != "F" else Image.fromarray(
        array.squeeze().astype(np.float32) / 255, "F")
    if mode == "I;16":
        image = Image.fromarray(array.squeeze().astype(np.uint16) * 257)
    image.save(tmp_path / "x.tif", compression=compression)
    decoded = io.read_image(tmp_path / "x.tif")
    written = Image.open(stdio.BytesIO(io.encode(decoded, decoded.pixels, "TIFF")))
    assert written.info.get("compression", "raw") == expected
    assert written.mode == Image.open(tmp_path / "x.tif").mode
    np.testing.assert_array_equal(io.decode_bytes(io.encode(decoded, decoded.pixels, "TIFF")).pixels, decoded.pixels)
    assert "compression" not in Image.open(stdio.BytesIO(io.encode(decoded, decoded.pixels, "PNG"))).info


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_lossless_webp_stays_lossless_and_lossy_stays_lossy(tmp_path, mode):
    array = noisy_array(16, 24, 4 if mode == "RGBA" else 3)
    for lossless in (True, False):
        Image.fromarray(array, mode).save(tmp_path / "x.webp", lossless=lossless)
        decoded = io.read_image(tmp_path / "x.webp")
        written = io.encode(decoded, decoded.pixels, "WEBP")
        assert (b"VP8L" in written[12:40]) == lossless
        if lossless:
            np.testing.assert_array_equal(np.asarray(Image.open(stdio.BytesIO(written))),
                                          np.asarray(Image.open(tmp_path / "x.webp")))
    assert "lossless" not in Image.open(stdio.BytesIO(io.encode(decoded, decoded.pixels, "PNG"))).info


def test_alpha_passes_through_untouched(tmp_path):
    rgba = noisy_array(8, 8, 3)
    alpha = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    path = save(tmp_path / "x.png", np.dstack([rgba, alpha]))
    decoded = io.read_image(path)
    out = np.asarray(Image.open(stdio.BytesIO(io.encode(decoded, decoded.pixels * 0.5, "PNG"))))
    np.testing.assert_array_equal(out[..., 3], alpha)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not an image", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "not"),
])
def test_bad_files_raise_one_line_errors(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(io.ImageError) as caught:
        io.read_image(path)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_folder_named_like_an_image(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(io.ImageError, match="folder"):
        io.read_image(tmp_path / "x.png")


def test_write_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.png"

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        io.write_atomic(target, b"data" * 1000)
    assert list(target.parent.iterdir()) == []


def test_iter_inputs_is_sorted_recursive_and_skips_the_output(tmp_path):
    for name in ("b.png", "a.jpg", "sub/c.tif", "out/d.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [str(relative) for _, relative in io.iter_inputs([tmp_path], exclude=tmp_path / "out")]
    assert found == ["a.jpg", "b.png", "sub/c.tif"]
    flat = [str(relative) for _, relative in io.iter_inputs([tmp_path], recursive=False, exclude=tmp_path / "out")]
    assert flat == ["a.jpg", "b.png"]
