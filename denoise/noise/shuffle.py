"""Pixel-shuffle down-sampling, for noise that spans more than one pixel (``--noise correlated``).

The models learned noise that is independent from pixel to pixel. Noise that is not (a noisy
image resized, demosaicing, in-camera processing) looks like texture to them, and they leave
most of it. Taking every other pixel in each direction splits an image into four half-size
images in which that noise is close to independent again (Zhou et al., "When AWGN-based
denoiser meets real noises", AAAI 2020). They are laid side by side in one mosaic of the
image's size, so the mosaic goes through tiling and the model as an image does, and the
result is put back in place.
"""

from __future__ import annotations

import numpy as np


def to_mosaic(pixels: np.ndarray) -> np.ndarray:
    """The four phases of an (H, W, C) image side by side: [[even rows, even columns], [even
    rows, odd columns]], [[odd rows, even columns], [odd, odd]]. An odd height or width is
    first mirrored out by one pixel."""
    height, width = pixels.shape[:2]
    pixels = np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="symmetric")
    top = np.concatenate([pixels[0::2, 0::2], pixels[0::2, 1::2]], axis=1)
    bottom = np.concatenate([pixels[1::2, 0::2], pixels[1::2, 1::2]], axis=1)
    return np.concatenate([top, bottom], axis=0)


def from_mosaic(mosaic: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (height, width, C) image whose :func:`to_mosaic` is ``mosaic``."""
    half_height, half_width = mosaic.shape[0] // 2, mosaic.shape[1] // 2
    pixels = np.empty_like(mosaic)
    pixels[0::2, 0::2] = mosaic[:half_height, :half_width]
    pixels[0::2, 1::2] = mosaic[:half_height, half_width:]
    pixels[1::2, 0::2] = mosaic[half_height:, :half_width]
    pixels[1::2, 1::2] = mosaic[half_height:, half_width:]
    return pixels[:height, :width]
