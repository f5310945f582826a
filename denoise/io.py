"""Find, read and write images: formats, modes, bit depths, metadata and atomic writes.

Pillow reads and writes everything except colour images with 16 bits per channel, which Pillow
silently truncates to 8 bits; those go through OpenCV, which keeps all 16 bits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io as _io
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

EXTENSIONS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
FORMAT_EXTENSION = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
# A decompression bomb (a small file claiming a huge size) is refused from its header alone.
MAX_PIXELS = 300_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageError(Exception):
    """A file that cannot be read or written as an image; the message says why in one line."""


@dataclasses.dataclass
class Decoded:
    """An image ready for the model, and everything needed to write it back the same way.

    ``pixels`` is float32 in [0, 1], shape (H, W, C) with C = 1 (grey) or 3 (colour).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None  # the alpha plane in its original dtype, passed through untouched
    bits: int  # 8 or 16 (32 for float TIFFs, written back as 16-bit)
    format: str  # Pillow format name of the source
    info: dict  # exif / icc_profile / dpi to copy to the output


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def iter_inputs(inputs: list[Path], recursive: bool = True, exclude: Path | None = None) -> Iterator[tuple[Path, Path]]:
    """Yield ``(path, relative_name)`` for each image file below the inputs, lazily and sorted.

    A folder named ``x.png`` or a broken symlink is still yielded, so the reader reports it.
    ``exclude`` (the output folder) is never descended into.
    """
    exclude = exclude.resolve() if exclude is not None else None
    for root in inputs:
        if not root.is_dir():
            yield root, Path(root.name)
            continue
        yield from _walk(root, root, recursive, exclude, set())


def _walk(folder: Path, root: Path, recursive: bool, exclude, seen: set) -> Iterator[tuple[Path, Path]]:
    try:
        real = folder.resolve()
    except (OSError, RuntimeError):  # symlink loop
        return
    if real in seen or (exclude is not None and real == exclude):
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir and not is_image_name(path):
            if recursive:
                yield from _walk(path, root, recursive, exclude, seen)
        elif is_image_name(path):
            yield path, path.relative_to(root)


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text


def read_image(path: Path) -> Decoded:
    """Decode ``path`` into a :class:`Decoded`; raise :class:`ImageError` with the reason."""
    path = Path(path)
    if path.is_dir():
        raise ImageError("is a folder, not an image file")
    if not path.exists():
        raise ImageError("no such file (or a broken symlink)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return decode_bytes(data)


def decode_bytes(data: bytes) -> Decoded:
    """Decode an encoded image held in memory (see :func:`read_image`)."""
    try:
        with Image.open(_io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{width}x{height} pixels is over the {MAX_PIXELS:,} pixel limit")
            source_format = image.format or "PNG"
            sixteen_bit_colour = _is_16bit_colour(image)  # before getexif(), which may load the tiles
            info = _metadata(image)
            if sixteen_bit_colour:
                return _decode_16bit_colour(data, image, source_format, info)
            image = ImageOps.exif_transpose(image)
            return _from_pillow(image, source_format, info)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"refused: {_reason(error)}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image (unknown or corrupt format)") from None
    except Exception as error:  # Pillow raises many types for corrupt data; report them all alike
        raise ImageError(f"not a readable image: {_reason(error)}") from None


def _metadata(image: Image.Image) -> dict:
    info = {}
    exif = image.getexif()
    if exif:
        # The orientation is applied to the pixels, so the output must not rotate them again.
        # (Restore it afterwards: exif_transpose reads it from this same object.)
        orientation = exif.get(0x0112)
        exif[0x0112] = 1
        info["exif"] = exif.tobytes()
        if orientation is not None:
            exif[0x0112] = orientation
    for key in ("icc_profile", "dpi"):
        if image.info.get(key):
            info[key] = image.info[key]
    return info


def _is_16bit_colour(image: Image.Image) -> bool:
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    raw = image.tile[0].args
    raw = raw[0] if isinstance(raw, tuple) else raw
    return isinstance(raw, str) and ";16" in raw


def _decode_16bit_colour(data: bytes, image: Image.Image, source_format: str, info: dict) -> Decoded:
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim != 3:
        raise ImageError("not a readable 16-bit colour image")
    array = array[..., [2, 1, 0, 3][: array.shape[2]]]  # OpenCV is BGR(A)
    alpha = array[..., 3] if array.shape[2] == 4 else None
    return Decoded(_unit(array[..., :3]), alpha, 16, source_format, info)


def _unit(array: np.ndarray) -> np.ndarray:
    """Integer or float pixels to float32 in [0, 1]."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)


def _from_pillow(image: Image.Image, source_format: str, info: dict) -> Decoded:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "L"):
        image = image.convert("L")
    elif mode == "PA":
        image = image.convert("LA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    mode = image.mode

    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image)
        bits = 16
        if array.dtype != np.uint16:  # mode I: 32-bit ints holding 16-bit values
            array = np.clip(array, 0, 65535).astype(np.uint16)
        return Decoded(_unit(array)[..., None], None, bits, source_format, info)
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        return Decoded(_unit(array)[..., None], None, 32, source_format, info)
    if mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        has_alpha = mode in ("LA", "RGBA")
        alpha = array[..., -1].copy() if has_alpha else None
        colour = array[..., :-1] if has_alpha else array
        return Decoded(_unit(colour), alpha, 8, source_format, info)
    raise ImageError(f"unsupported image mode {mode}")


def load_array(path: Path, channels: int) -> np.ndarray:
    """Pixels of ``path`` as uint8 (H, W, channels), for training data: grey or colour as asked."""
    decoded = read_image(path)
    pixels = decoded.pixels
    if channels == 1 and pixels.shape[-1] == 3:
        pixels = pixels @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    elif channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.round(pixels * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def output_path(relative: Path, output_dir: Path, fmt: str = "keep") -> Path:
    """Where the output for ``relative`` goes: same name, the extension changed for ``--format``."""
    target = output_dir / relative
    if fmt != "keep" and target.suffix.lower() not in _same_format_suffixes(fmt):
        target = target.with_suffix(FORMAT_EXTENSION[fmt])
    return target


def _same_format_suffixes(fmt: str) -> set[str]:
    name = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}[fmt]
    return {ext for ext, value in EXTENSIONS.items() if value == name}


def encode(decoded: Decoded, pixels: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encode denoised ``pixels`` (float [0, 1], H x W x C) like the source ``decoded`` was stored.

    ``fmt`` is a Pillow format name ("PNG", "JPEG", ...). Bit depth, alpha, EXIF, ICC and dpi
    are carried over where the format can hold them; formats without 16 bits get 8.
    """
    sixteen = decoded.bits > 8 and fmt in ("PNG", "TIFF")
    scale = 65535.0 if sixteen else 255.0
    dtype = np.uint16 if sixteen else np.uint8
    array = np.clip(np.round(np.asarray(pixels, np.float32) * scale), 0, scale).astype(dtype)
    alpha = decoded.alpha
    if alpha is not None:
        alpha = _convert_depth(alpha, dtype)
        if fmt in ("JPEG", "BMP"):
            alpha = None  # these formats hold no alpha: the denoised colour is written alone
    if sixteen and (array.shape[-1] == 3 or alpha is not None):
        return _encode_16bit_cv2(array, alpha, fmt)
    if sixteen:
        image = Image.fromarray(array[..., 0])  # grey 16-bit: mode I;16
    else:
        channels = [array] if alpha is None else [array, alpha[..., None]]
        stacked = np.concatenate(channels, axis=-1)
        image = Image.fromarray(stacked[..., 0] if stacked.shape[-1] == 1 else stacked)
    buffer = _io.BytesIO()
    options = {key: value for key, value in decoded.info.items() if value}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "BMP":
        options = {"dpi": options["dpi"]} if "dpi" in options else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _convert_depth(alpha: np.ndarray, dtype) -> np.ndarray:
    if alpha.dtype == dtype:
        return alpha
    if dtype == np.uint16:
        return alpha.astype(np.uint16) * 257
    return np.round(alpha.astype(np.float32) / 257.0).astype(np.uint8)


def _encode_16bit_cv2(array: np.ndarray, alpha, fmt: str) -> bytes:
    import cv2

    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    bgr = array[..., ::-1]
    if alpha is not None:
        bgr = np.concatenate([bgr, alpha[..., None]], axis=-1)
    ok, buffer = cv2.imencode(".png" if fmt == "PNG" else ".tif", np.ascontiguousarray(bgr))
    if not ok:
        raise ImageError("OpenCV could not encode the 16-bit image")
    return buffer.tobytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash, a full disk or Ctrl-C leaves either the old state or the whole new file, never part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
