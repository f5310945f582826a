"""Property tests: any bytes, any small array in any supported mode, through decode -> denoise ->
encode. Never a crash, a hang or a traceback: a clean one-line io.ImageError, or an output of
the same size and mode.

Each example is decoded and re-encoded in-process (hypothesis shrinks failures there); the
files are also kept, and one `denoise run` over all of them at the end checks the model path
with the same rule, per file, against the in-process outcome.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from corpus import encoded, gradient
from denoise import io
from denoise.cli import main

# DENOISE_FUZZ_SCALE=20 runs twenty times the examples, with fresh random ones each time.
SCALE = int(os.environ.get("DENOISE_FUZZ_SCALE", "1"))
SETTINGS = dict(deadline=5000, database=None, derandomize=SCALE == 1,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_decoded(decoded: io.Decoded) -> None:
    pixels = decoded.pixels
    assert pixels.dtype == np.float32 and pixels.ndim == 3 and pixels.shape[-1] in (1, 3)
    assert pixels.shape[0] >= 1 and pixels.shape[1] >= 1
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert decoded.bits in (8, 16, 32)
    if decoded.alpha is not None:
        assert decoded.alpha.shape == pixels.shape[:2]


def same_kind(before: io.Decoded, after: io.Decoded, fmt: str) -> None:
    """Same size, channels, alpha and (for formats that hold them) bit depth.

    Format limits: WebP holds no grey (grey comes back as colour) and drops an alpha plane that
    is opaque everywhere; JPEG and BMP hold no alpha."""
    channels = 3 if fmt == "WEBP" else before.pixels.shape[-1]
    assert after.pixels.shape == before.pixels.shape[:2] + (channels,)
    if fmt not in ("JPEG", "BMP"):
        opaque = before.alpha is not None and (before.alpha == np.iinfo(before.alpha.dtype).max).all()
        if not (fmt == "WEBP" and opaque and after.alpha is None):
            assert (after.alpha is None) == (before.alpha is None)
    if fmt in ("PNG", "TIFF"):
        assert after.bits == (16 if before.bits == 32 and fmt == "PNG" else before.bits)


UNWRITABLE = "unwritable"  # decoded, but the format refuses it (a WebP wider than 16383 pixels)


def roundtrip(data: bytes, ext: str) -> io.Decoded | str | None:
    """decode -> encode -> decode in-process: the decoded image, None when the input is
    (cleanly) refused, or UNWRITABLE when the output format (cleanly) refuses it."""
    try:
        decoded = io.decode_bytes(data)
    except io.ImageError as error:
        reason = str(error)
        assert reason and "\n" not in reason
        return None
    check_decoded(decoded)
    fmt = io.EXTENSIONS[ext]
    try:
        written = io.encode(decoded, decoded.pixels, fmt)
    except io.ImageError as error:
        assert str(error) and "\n" not in str(error)
        return UNWRITABLE
    again = io.decode_bytes(written)
    check_decoded(again)
    same_kind(decoded, again, fmt)
    return decoded


def run_folder(folder: Path, outputs: Path, model: Path, expected: dict) -> None:
    """`denoise run` over every kept example: each one ok with the same kind of output, or
    failed exactly when the in-process decode or encode refused it."""
    report = folder.parent / "report.json"
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}
    result = CliRunner().invoke(main, ["run", str(folder), str(outputs), "--model", str(model), "--report",
                                       str(report), "-q"], catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.stderr
    assert digests == {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}
    files = {Path(entry["input"]).name: entry for entry in json.loads(report.read_text())["files"]}
    assert set(files) == set(expected)
    refused = [name for name, decoded in expected.items() if not isinstance(decoded, io.Decoded)]
    assert len(result.stderr.strip().splitlines()) == len(refused)
    for name, decoded in expected.items():
        entry = files[name]
        if not isinstance(decoded, io.Decoded):
            assert entry["status"] == "failed" and entry["reason"] and "\n" not in entry["reason"], entry
            assert ("cannot write" in entry["reason"]) == (decoded == UNWRITABLE), entry
            assert not (outputs / name).exists()
        else:
            assert entry["status"] == "ok", entry
            output = io.read_image(outputs / name)
            check_decoded(output)
            same_kind(decoded, output, io.EXTENSIONS[Path(name).suffix])


# --------------------------------------------------------------------------------------------
# Arbitrary bytes, and valid files damaged at random
# --------------------------------------------------------------------------------------------


def _seeds() -> list[bytes]:
    grey, colour = Image.fromarray(gradient(12, 10)), Image.fromarray(gradient(9, 13, 3))
    return [encoded(grey, "PNG"), encoded(colour, "JPEG"), encoded(colour, "TIFF"), encoded(grey, "BMP"),
            encoded(colour, "WEBP"), encoded(colour.convert("P"), "GIF"), encoded(colour.convert("RGBA"), "PNG"),
            encoded(colour, "JPEG", progressive=True)]


@st.composite
def damaged(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_seeds())))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(1, len(data)))]
    return bytes(data)


def test_any_bytes(tmp_path, tiny_models):
    folder = tmp_path / "in"
    folder.mkdir()
    expected: dict = {}

    @settings(max_examples=200 * SCALE, **SETTINGS)
    @given(data=st.one_of(st.binary(max_size=600), damaged()), ext=st.sampled_from(sorted(io.EXTENSIONS)))
    def check(data, ext):
        decoded = roundtrip(data, ext)
        name = f"{len(expected):04d}{ext}"
        (folder / name).write_bytes(data)
        expected[name] = decoded

    check()
    assert any(isinstance(decoded, io.Decoded) for decoded in expected.values())  # the damage left some readable
    run_folder(folder, tmp_path / "out", tiny_models["conv"], expected)


# --------------------------------------------------------------------------------------------
# Arbitrary small arrays in every supported mode
# --------------------------------------------------------------------------------------------

# mode -> (numpy dtype, channels, extensions it can be stored as)
MODES = {
    "1": (np.bool_, 0, [".png", ".tif", ".bmp"]),
    "L": (np.uint8, 0, [".png", ".tif", ".bmp", ".jpg", ".webp", ".gif"]),
    "LA": (np.uint8, 2, [".png", ".tif"]),
    "P": (np.uint8, 0, [".png", ".gif", ".bmp", ".tif"]),
    "RGB": (np.uint8, 3, [".png", ".tif", ".bmp", ".jpg", ".webp", ".gif"]),
    "RGBA": (np.uint8, 4, [".png", ".tif", ".webp", ".gif"]),
    "CMYK": (np.uint8, 4, [".jpg", ".tif"]),
    "I;16": (np.uint16, 0, [".png", ".tif"]),
    "I": (np.int32, 0, [".tif", ".png"]),
    "F": (np.float32, 0, [".tif"]),
    "RGB16": (np.uint16, 3, [".png", ".tif"]),  # through OpenCV: Pillow cannot write these
    "RGBA16": (np.uint16, 4, [".png", ".tif"]),
}


@st.composite
def images(draw) -> tuple[bytes, str]:
    mode = draw(st.sampled_from(sorted(MODES)))
    dtype, channels, extensions = MODES[mode]
    ext = draw(st.sampled_from(extensions))
    shape = (draw(st.integers(1, 20)), draw(st.integers(1, 20))) + ((channels,) if channels else ())
    elements = None
    if dtype == np.float32:
        elements = st.floats(width=32, allow_nan=True, allow_infinity=True)
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    if mode.endswith("16") and channels:
        import cv2

        ok, buffer = cv2.imencode(ext, np.ascontiguousarray(array[..., [2, 1, 0, 3][:channels]]))
        assume(ok)
        return buffer.tobytes(), ext
    if mode == "P":
        image = Image.fromarray(array, "P")
        image.putpalette(draw(st.lists(st.integers(0, 255), min_size=768, max_size=768)))
        options = {"transparency": draw(st.integers(0, 255))} if draw(st.booleans()) and ext != ".bmp" else {}
    else:
        image = Image.fromarray(array) if mode not in ("CMYK", "LA") else Image.fromarray(array, mode)
        if image.mode != mode:
            image = image.convert(mode)
        options = {}
    try:
        return encoded(image, io.EXTENSIONS[ext], **options), ext
    except (OSError, ValueError, KeyError):  # Pillow cannot write this mode in this format
        assume(False)


def test_any_small_array_in_every_mode(tmp_path, tiny_models):
    folder = tmp_path / "in"
    folder.mkdir()
    expected: dict = {}

    @settings(max_examples=150 * SCALE, **SETTINGS)
    @given(image=images())
    def check(image):
        data, ext = image
        decoded = roundtrip(data, ext)
        assert isinstance(decoded, io.Decoded), "a valid image was refused"
        name = f"{len(expected):04d}{ext}"
        (folder / name).write_bytes(data)
        expected[name] = decoded

    check()
    run_folder(folder, tmp_path / "out", tiny_models["conv"], expected)
