"""Find, read and write images: formats, modes, bit depths, metadata and atomic writes.

Pillow reads and writes everything except colour images with 16 bits per channel, which Pillow
silently truncates to 8 bits; those go through OpenCV, which keeps all 16 bits.

Every problem with one file is an :class:`ImageError` with a one-line reason; nothing here
prints, and Pillow's own warnings (corrupt EXIF, large images) are silenced because the reason
for refusing a file is reported instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io as _io
import itertools
import logging
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Callable, Iterator

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
    ".gif": "GIF",  # single-frame only; written back as a GIF (256 colours): --format png keeps them all
}
FORMAT_EXTENSION = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
# A decompression bomb (a small file claiming a huge size) is refused from its header alone.
MAX_PIXELS = 300_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Pillow warns (on stderr, several lines) about corrupt EXIF blocks and images between one and
# two times MAX_IMAGE_PIXELS; the first is harmless and the second is refused with a reason.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# Pillow also logs some decoding problems (through `logging`, which prints them on stderr when
# nothing else is set up); they are reported as the file's reason instead.
logging.getLogger("PIL").setLevel(logging.CRITICAL)
# Files that hold several images (animations, pages) are refused: which frame would be meant is
# not clear, and writing one of them would silently drop the rest. A camera's MPO JPEG (the
# photo plus previews) is the exception: its first frame is the photo.
MULTI_FRAME_OK = {"MPO"}
# TIFF tags that describe how the source stored its pixels (not the picture): never copied to
# an output, which stores its pixels its own way.
_STRUCTURAL_TAGS = {
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 292, 293, 317,
    320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347, *range(512, 522), 529, 530, 531, 532,
}
_LOSSLESS_TIFF = {"tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}
_TEMPORARY_NUMBERS = itertools.count()  # temporary names for write_atomic, unique within the process


class ImageError(Exception):
    """A file that cannot be read or written as an image; the message says why in one line."""


@dataclasses.dataclass
class Decoded:
    """An image ready for the model, and everything needed to write it back the same way.

    ``pixels`` is float32 in [0, 1], shape (H, W, C) with C = 1 (grey) or 3 (colour).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None  # the alpha plane in its original dtype, passed through untouched
    bits: int  # 8 or 16 (32 for float and 32-bit integer TIFFs: written back so to TIFF, else as 16-bit)
    format: str  # Pillow format name of the source
    info: dict  # exif / icc_profile / dpi / progressive to copy to the output
    # 32-bit sources only: the (low, high) that ``pixels`` 0 and 1 stand for, so values outside
    # [0, 1] (float) or [0, 65535] (integer) survive a round trip instead of being clipped
    value_range: tuple[float, float] | None = None
    integer: bool = False  # a 32-bit source held integers: written back rounded, as int32


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def iter_inputs(inputs: list[Path], recursive: bool = True, exclude: Path | None = None,
                on_error: Callable[[Path, str], None] | None = None) -> Iterator[tuple[Path, Path]]:
    """Yield ``(path, relative_name)`` for each image file below the inputs, lazily and sorted.

    A folder named ``x.png`` or a broken symlink is still yielded, so the reader reports it.
    ``exclude`` (the output folder) is never descended into. A folder that cannot be listed is
    passed to ``on_error`` with the reason. The walk keeps its own stack, so any depth works.
    """
    exclude = exclude.resolve() if exclude is not None else None
    for root in inputs:
        if not root.is_dir():
            yield root, Path(root.name)
            continue
        yield from _walk(root, recursive, exclude, on_error)


def _walk(root: Path, recursive: bool, exclude, on_error) -> Iterator[tuple[Path, Path]]:
    seen: set = set()
    stack = [_entries(root, exclude, seen, on_error)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir and not is_image_name(path):
            if recursive:
                stack.append(_entries(path, exclude, seen, on_error))
        elif is_image_name(path):
            yield path, path.relative_to(root)


def _entries(folder: Path, exclude, seen: set, on_error) -> Iterator[os.DirEntry]:
    """The sorted entries of ``folder``; none for a folder already walked (a symlink loop), the
    excluded one, or one that cannot be listed (reported to ``on_error``)."""
    try:
        real = folder.resolve()
    except (OSError, RuntimeError):  # symlink loop
        return iter(())
    if real in seen or (exclude is not None and real == exclude):
        return iter(())
    seen.add(real)
    try:
        with os.scandir(folder) as listing:
            return iter(sorted(listing, key=lambda entry: entry.name))
    except OSError as error:
        if on_error is not None:
            on_error(folder, f"cannot list the folder: {error.strerror or error}")
        return iter(())


def shown(path) -> str:
    """A path as it can always be printed: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text


def read_image(path: Path, bytes_per_value: int = 0) -> Decoded:
    """Decode ``path`` into a :class:`Decoded`; raise :class:`ImageError` with the reason.

    Only regular files are read: a FIFO would block for ever and a device never ends. With
    ``bytes_per_value``, an image whose pixel values times that would not fit in the memory
    available now is refused from its header (see :func:`check_memory`).
    """
    return decode_bytes(read_file(path), bytes_per_value)


def read_file(path: Path) -> bytes:
    """The bytes of an image file, refused with :class:`ImageError` unless it is a regular,
    readable, non-empty file."""
    path = Path(path)
    try:
        kind = os.stat(path).st_mode
    except OSError as error:
        raise ImageError(_missing_reason(path, error)) from None
    if stat.S_ISDIR(kind):
        raise ImageError("is a folder, not an image file")
    if not stat.S_ISREG(kind):
        raise ImageError(f"not a regular file ({_FILE_TYPES.get(stat.S_IFMT(kind), 'a special file')})")
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the check above must not block the open.
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(handle, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise ImageError("not a regular file")
            data = stream.read()
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


_FILE_TYPES = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device"}


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(width: int, height: int, bands: int, bytes_per_value: int) -> None:
    """Refuse an image whose ``width * height * bands`` values at ``bytes_per_value`` each would
    not fit in the memory available now, before any pixel is decoded."""
    needed = width * height * bands * bytes_per_value
    available = available_memory()
    if bytes_per_value and available is not None and needed > available:
        raise ImageError(f"{width}x{height} needs about {needed / 2**30:.1f} GiB to denoise, more than the "
                         f"{available / 2**30:.1f} GiB of memory available")


def _missing_reason(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop (the link points back to itself)"
    if path.is_symlink():
        try:
            return f"broken symlink (its target {os.readlink(path)} does not exist)"
        except OSError:
            return "broken symlink"
    if error.errno == errno.ENOENT:
        return "no such file (removed while the run was going?)"
    return f"cannot read: {error.strerror or error}"


def decode_bytes(data: bytes, bytes_per_value: int = 0) -> Decoded:
    """Decode an encoded image held in memory (see :func:`read_image`)."""
    try:
        with Image.open(_io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _too_large(f"{width}x{height} is {width * height:,}")
            if width < 1 or height < 1:
                raise ImageError(f"{width}x{height}: an image without pixels")
            check_memory(width, height, 3 if image.mode == "P" else min(3, len(image.getbands())), bytes_per_value)
            source_format = image.format or "PNG"
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and source_format not in MULTI_FRAME_OK:
                raise ImageError(
                    f"{source_format} with {frames} frames (animation or pages): only single-image "
                    "files are denoised; split it into one file per frame first"
                )
            sixteen_bit_colour = _is_16bit_colour(image)  # before getexif(), which may load the tiles
            info = _metadata(image)
            if source_format == "WEBP" and _webp_is_lossless(data):
                info["lossless"] = True
            if sixteen_bit_colour:
                decoded = _decode_16bit_colour(data, image, source_format, info)
            else:
                decoded = _from_pillow(ImageOps.exif_transpose(image), source_format, info)
            _keep_matching_profile(decoded)
            return decoded
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        counted = re.search(r"\((\d+) pixels\)", str(error))
        raise _too_large(f"{int(counted.group(1)):,}" if counted else "its size") from None
    except MemoryError:
        raise ImageError("not enough memory to decode it") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image (unknown or corrupt format)") from None
    except Exception as error:  # Pillow raises many types for corrupt data; report them all alike
        raise ImageError(f"not a readable image: {_reason(error)}") from None


def _webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP stores its picture losslessly: its first image chunk is VP8L, not VP8."""
    position = 12  # after "RIFF", the file size and "WEBP"
    while position + 8 <= len(data):
        fourcc = data[position : position + 4]
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        position += 8 + size + (size & 1)  # chunks are padded to an even size
    return False


def _too_large(pixels: str) -> ImageError:
    return ImageError(f"refused: {pixels} pixels is over the {MAX_PIXELS:,} pixel limit (a decompression bomb?)")


def _metadata(image: Image.Image) -> dict:
    info = {}
    exif = image.getexif()
    for tag in _STRUCTURAL_TAGS & set(exif):
        del exif[tag]
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
    if image.format == "JPEG" and image.info.get("progressive"):
        info["progressive"] = True
    compression = image.info.get("compression", "raw") if image.format == "TIFF" else "raw"
    if compression != "raw":
        # A lossless scheme is kept; any other (JPEG-in-TIFF, fax codes for 1-bit pages) becomes
        # Deflate, which stores the denoised pixels exactly at any bit depth.
        info["compression"] = compression if compression in _LOSSLESS_TIFF else "tiff_adobe_deflate"
    return info


def _keep_matching_profile(decoded: Decoded) -> None:
    """Drop an ICC profile made for other colours than the output's (a CMYK profile on a
    JPEG converted to RGB): a profile of the wrong colour space makes viewers misdraw or refuse."""
    profile = decoded.info.get("icc_profile")
    if profile and len(profile) >= 20:
        wanted = b"GRAY" if decoded.pixels.shape[-1] == 1 else b"RGB "
        space = profile[16:20]  # the header's colour space signature: 'RGB ', 'GRAY', 'CMYK', ...
        if space != wanted and space.strip(b" ").isalnum():  # other bytes: not parsed, passed through
            del decoded.info["icc_profile"]


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
    if mode == "P":  # a palette of greys only is a grey image
        transparent = "transparency" in image.info
        image = image.convert(("LA" if transparent else "L") if _grey_palette(image) else ("RGBA" if transparent else "RGB"))
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
        if array.dtype == np.uint16 or (array.min() >= 0 and array.max() <= 65535):  # mode I often holds 16 bits
            return Decoded(_unit(array.astype(np.uint16))[..., None], None, 16, source_format, info)
        # 32-bit integers beyond 16 bits (photon counts, negative offsets): scaled like floats
        return _scaled(array.astype(np.float64), (float(array.min()), float(array.max())), source_format, info,
                       integer=True)
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        finite = array[np.isfinite(array)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = max(1.0, float(finite.max())) if finite.size else 1.0
        return _scaled(np.nan_to_num(array, nan=low, posinf=high, neginf=low), (low, high), source_format, info)
    if mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        has_alpha = mode in ("LA", "RGBA")
        alpha = array[..., -1].copy() if has_alpha else None
        colour = array[..., :-1] if has_alpha else array
        return Decoded(_unit(colour), alpha, 8, source_format, info)
    raise ImageError(f"unsupported image mode {mode}")


def _scaled(array: np.ndarray, value_range: tuple[float, float], source_format: str, info: dict,
            integer: bool = False) -> Decoded:
    """A 32-bit grey image mapped from ``value_range`` onto [0, 1], the range kept for writing back."""
    low, high = value_range
    unit = ((array.astype(np.float64) - low) / ((high - low) or 1.0)).astype(np.float32)
    return Decoded(np.clip(unit, 0.0, 1.0)[..., None], None, 32, source_format, info, value_range, integer)


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
    if decoded.bits == 32 and fmt == "TIFF" and np.shape(pixels)[-1] == 1 and decoded.alpha is None:
        return _encode_float(decoded, pixels)
    sixteen = decoded.bits > 8 and fmt in ("PNG", "TIFF")
    scale = 65535.0 if sixteen else 255.0
    dtype = np.uint16 if sixteen else np.uint8
    scaled = np.multiply(pixels, scale, dtype=np.float32)  # one temporary, then in place
    array = np.clip(np.round(scaled, out=scaled), 0, scale, out=scaled).astype(dtype)
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
    options = _save_options(decoded, fmt, quality)
    if fmt == "GIF":
        image, options = _for_gif(image)
    _save(image, buffer, fmt, options)
    return buffer.getvalue()


def _save(image: Image.Image, buffer, fmt: str, options: dict) -> None:
    """Pillow's save, its refusals (a WebP over 16383 pixels wide...) as one-line ImageErrors."""
    try:
        image.save(buffer, format=fmt, **options)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ImageError(f"cannot encode as {fmt}: {_reason(error)}") from None


def _save_options(decoded: Decoded, fmt: str, quality: int) -> dict:
    options = {key: value for key, value in decoded.info.items() if value}
    if fmt != "JPEG":
        options.pop("progressive", None)
    if fmt != "TIFF":
        options.pop("compression", None)
    if fmt != "WEBP":
        options.pop("lossless", None)
    elif options.get("lossless"):
        options["exact"] = True  # keep the colour under fully transparent pixels too
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0 if quality >= 90 else 2
    if fmt == "BMP":
        options = {"dpi": options["dpi"]} if "dpi" in options else {}
    return options


def _grey_palette(image: Image.Image) -> bool:
    palette = np.asarray(image.getpalette("RGB") or [0, 0, 1], np.uint8).reshape(-1, 3)
    return bool((palette == palette[:, :1]).all())


def _for_gif(image: Image.Image) -> tuple[Image.Image, dict]:
    """A GIF holds 256 palette colours, one of which may stand for transparent (alpha < 128).

    Images with at most that many colours are stored exactly, others are quantised. A grey
    image gets a palette of greys (and reads back as grey); a colour image gets one entry
    that is not grey, so it reads back as colour even when all its pixels are grey."""
    grey = image.mode in ("L", "LA")
    alpha = np.asarray(image.getchannel("A")) < 128 if image.mode in ("LA", "RGBA") else None
    slots = 256 - (alpha is not None) - (not grey)
    rgb = np.asarray(image.convert("RGB"))
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique, inverse = np.unique(keys.ravel(), return_inverse=True)
    if len(unique) <= slots:
        indices = inverse.reshape(keys.shape).astype(np.uint8)
        palette = np.stack([unique >> 16, (unique >> 8) & 255, unique & 255], axis=-1).astype(np.uint8)
    else:
        quantised = image.convert("RGB").quantize(slots, dither=Image.Dither.NONE)
        indices = np.asarray(quantised).copy()
        palette = np.asarray(quantised.getpalette("RGB"), np.uint8).reshape(-1, 3)[:slots]
        if grey:
            palette = np.repeat(palette.mean(axis=1, keepdims=True).round().astype(np.uint8), 3, axis=1)
    palette = np.concatenate([palette, np.zeros((256 - len(palette), 3), np.uint8)])
    options = {"optimize": False}  # Pillow's optimizer would drop the unused entries, the marker with them
    if alpha is not None:
        indices[alpha] = 255
        options["transparency"] = 255
    if not grey:
        palette[254 if alpha is not None else 255] = (255, 0, 0)
    result = Image.fromarray(indices, "P")
    result.putpalette(palette.ravel().tolist())
    return result, options


def _encode_float(decoded: Decoded, pixels: np.ndarray) -> bytes:
    """A 32-bit TIFF back as float32 or int32, in the value range it came in."""
    low, high = decoded.value_range or (0.0, 1.0)
    unit = np.clip(np.asarray(pixels, np.float64)[..., 0], 0.0, 1.0)
    values = unit * (high - low) + low
    image = Image.fromarray(np.round(values).astype(np.int32) if decoded.integer else values.astype(np.float32))
    buffer = _io.BytesIO()
    _save(image, buffer, "TIFF", _save_options(decoded, "TIFF", 95))
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
    # Names near the 255-byte limit would outgrow it with the suffix: they get a short temporary.
    stem = path.name if len(os.fsencode(path.name)) <= 200 else "denoise"
    while True:
        # A name unique to this process and call; O_EXCL refuses a leftover of another process.
        temporary = path.parent / f".{stem}.{os.getpid()}.{next(_TEMPORARY_NUMBERS)}.part"
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileNotFoundError:
            make_folders(path.parent)
        except FileExistsError:
            continue
    try:
        with os.fdopen(handle, "wb") as stream:  # 0o666 less the umask, as for any new file
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def make_folders(folder: Path) -> None:
    """``mkdir -p`` without recursion (``Path.mkdir(parents=True)`` recurses once per missing
    level, which fails over a thousand levels deep)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for each in reversed(missing):
        try:
            each.mkdir()
        except FileExistsError:
            if not each.is_dir():
                raise
