"""A corpus of awkward inputs, made at test time: broken files, odd modes, odd names.

``make_corpus(folder)`` writes the files and returns what ``denoise run`` must do with each:
a :class:`Fail` (one clear line naming the file and the reason, no output) or an :class:`Ok`
(an output of the given size, mode and sample type). Everything is small, so building the
whole corpus takes well under a second.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Fail:
    reason: str  # a substring of the one-line reason


@dataclasses.dataclass(frozen=True)
class Ok:
    size: tuple[int, int]  # (width, height) of the output
    mode: str  # Pillow mode of the output ("cv2" checks dtype/channels through OpenCV instead)
    dtype: str = "uint8"  # numpy dtype of the output's samples
    format: str | None = None  # Pillow format of the output; None: same as the input's
    channels: int | None = None  # for mode "cv2": channels read back by OpenCV


def gradient(height: int, width: int, channels: int = 1, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A noisy gradient: an image a denoiser has something to do on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = (0.3 + 0.4 * (x + y) / max(1, height + width - 2))[..., None] * np.ones(channels)
    noisy = np.clip(base + rng.normal(0, 0.08, base.shape), 0, 1)
    if np.dtype(dtype).kind == "f":
        array = noisy.astype(dtype)
    else:
        peak = np.iinfo(dtype).max
        array = np.round(noisy * peak).astype(dtype)
    return array[..., 0] if channels == 1 else array


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid-looking PNG whose header claims ``width`` x ``height`` grey pixels (a few hundred bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)  # the first rows only: enough to start decoding
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def frames(count: int, size=(20, 16), mode: str = "RGB") -> list[Image.Image]:
    return [Image.fromarray(gradient(size[1], size[0], 3, seed=index)).convert(mode) for index in range(count)]


def make_corpus(folder: Path) -> dict[str, Fail | Ok]:
    """Write the corpus below ``folder``; return the expected outcome by relative path."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Fail | Ok] = {}

    def write(name: str, data: bytes, expect):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases[name] = expect

    grey = Image.fromarray(gradient(48, 40))
    colour = Image.fromarray(gradient(48, 40, 3))

    # Broken files: each fails alone with its reason.
    write("empty.png", b"", Fail("empty file"))
    png = encoded(colour, "PNG")
    write("truncated.png", png[: len(png) // 2], Fail("truncated"))
    jpeg = encoded(colour, "JPEG", quality=90)
    write("truncated.jpg", jpeg[: len(jpeg) // 2], Fail("truncated"))
    write("random.jpg", np.random.default_rng(1).bytes(3000), Fail("not an image"))
    write("random.tif", b"II*\0" + np.random.default_rng(2).bytes(500), Fail("not"))
    write("text.png", b"Just some notes, saved with the wrong name.\n" * 20, Fail("not an image"))
    (folder / "notes.txt").write_text("not an image name: never read\n")  # ignored, not an input
    (folder / "folder.png").mkdir()
    cases["folder.png"] = Fail("is a folder")
    os.symlink("missing.png", folder / "broken_link.png")
    cases["broken_link.png"] = Fail("broken symlink")
    os.symlink("loop.png", folder / "loop.png")
    cases["loop.png"] = Fail("symlink loop")
    (folder / "nested").mkdir()
    os.symlink("..", folder / "nested" / "up")  # a folder loop: must not be walked forever
    write("bomb.png", png_bomb(), Fail("pixel limit"))

    # Tiny images.
    write("tiny_1x1.png", encoded(Image.fromarray(gradient(1, 1)), "PNG"), Ok((1, 1), "L"))
    write("tiny_2x3.png", encoded(Image.fromarray(gradient(3, 2, 3)), "PNG"), Ok((2, 3), "RGB"))
    write("tiny_1x1.jpg", encoded(Image.fromarray(gradient(1, 1, 3)), "JPEG"), Ok((1, 1), "RGB"))

    # Several frames: refused, with the frame count (see io.read_image).
    gif_frames = frames(3, mode="P")
    write("animated.gif", encoded(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], duration=100,
                                  loop=0), Fail("3 frames"))
    apng_frames = frames(3)
    write("animated.png", encoded(apng_frames[0], "PNG", save_all=True, append_images=apng_frames[1:], duration=100),
          Fail("3 frames"))
    pages = frames(2, mode="L")
    write("pages.tif", encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:]), Fail("2 frames"))
    write("single.gif", encoded(frames(1, mode="P")[0], "GIF"), Ok((20, 16), "P", format="GIF"))

    # Valid images in every mode and depth worth a test: processed, mode/depth kept where possible.
    write("cmyk.jpg", encoded(colour.convert("CMYK"), "JPEG", quality=95), Ok((40, 48), "RGB"))
    write("grey16.png", encoded(Image.fromarray(gradient(30, 20, dtype=np.uint16)), "PNG"),
          Ok((20, 30), "I;16", "uint16"))
    import cv2

    ok, rgb16 = cv2.imencode(".tif", gradient(24, 28, 3, dtype=np.uint16))
    assert ok
    write("rgb16.tif", rgb16.tobytes(), Ok((28, 24), "cv2", "uint16", channels=3))
    write("float32.tif", encoded(Image.fromarray(gradient(18, 22, dtype=np.float32), "F"), "TIFF"),
          Ok((22, 18), "F", "float32"))
    wide = Image.fromarray((gradient(18, 22, dtype=np.float32) * 1000 - 200).astype(np.float32), "F")
    write("float32_wide.tif", encoded(wide, "TIFF"), Ok((22, 18), "F", "float32"))
    # 32-bit integers: beyond 16 bits they keep their range and type; within it they are 16-bit
    counts = (gradient(18, 22, dtype=np.float32) * 300_000 - 1_000).round().astype(np.int32)
    write("int32_wide.tif", encoded(Image.fromarray(counts, "I"), "TIFF"), Ok((22, 18), "I", "int32"))
    write("int32_16bit.tif", encoded(Image.fromarray(gradient(18, 22, dtype=np.uint16).astype(np.int32), "I"), "TIFF"),
          Ok((22, 18), "I;16", "uint16"))
    palette = colour.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    write("palette_transparent.png", encoded(palette, "PNG", transparency=0), Ok((40, 48), "RGBA"))
    grey_alpha = Image.merge("LA", (grey, Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (48, 1)))))
    write("grey_alpha.png", encoded(grey_alpha, "PNG"), Ok((40, 48), "LA"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 48 high, shown rotated: 48 wide and 40 high
    write("exif_rotated.jpg", encoded(colour, "JPEG", quality=95, exif=exif.tobytes()), Ok((48, 40), "RGB"))
    write("progressive.jpg", encoded(colour, "JPEG", quality=90, progressive=True), Ok((40, 48), "RGB"))
    write("grey.bmp", encoded(grey, "BMP"), Ok((40, 48), "L"))
    write("colour.webp", encoded(colour, "WEBP", quality=90), Ok((40, 48), "RGB"))
    write("png_named.jpg", png, Ok((40, 48), "RGB", format="JPEG"))  # content and name disagree: the name wins
    # Readable, but the output format cannot hold it: a write failure, named like a bad file.
    write("too_wide.webp", encoded(Image.fromarray(gradient(2, 16_400)), "PNG"), Fail("16383"))

    # Names: spaces, unicode, upper-case extensions, a subfolder.
    write("with space.png", encoded(grey, "PNG"), Ok((40, 48), "L"))
    write("ünïcødé 画像.png", encoded(colour, "PNG"), Ok((40, 48), "RGB"))
    write("UPPER.JPG", jpeg, Ok((40, 48), "RGB"))
    write("Mixed.TiFF", encoded(grey, "TIFF"), Ok((40, 48), "L"))
    write("sub folder/deeper/grey.png", encoded(grey, "PNG"), Ok((40, 48), "L"))
    return cases


def make_unreadable(folder: Path) -> str:
    """A valid image with mode 000 (only fails when not running as root)."""
    path = folder / "unreadable.png"
    path.write_bytes(encoded(Image.fromarray(gradient(8, 8)), "PNG"))
    path.chmod(0)
    return path.name
