"""Pixel-shuffle down-sampling, for noise that spans more than one pixel (``--noise correlated``).

The models learned noise that is independent from pixel to pixel. Noise that is not (a noisy
image resized, demosaicing, in-camera processing) looks like texture to them, and they leave
most of it. Taking every other pixel in each direction splits an image into four half-size
images in which that noise is close to independent again (Zhou et al., "When AWGN-based
denoiser meets real noises", AAAI 2020). They are laid side by side in one mosaic of the
image's size, so the mosaic goes through tiling and the model as an image does, and the
result is put back in place.

The four phases are denoised apart, so their small errors differ, and put back in place those
differences are a pattern at the highest frequencies: a 2-pixel checkerboard and stripes, most
visible on flat colour. :func:`clear_pattern` removes what lies within a narrow band around those
three frequencies, where demosaiced photos hold little of their own.
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


# The width of the band clear_pattern removes: binomial filters of this many [1, 4, 6, 4, 1] / 16
# passes (variance 1 px^2 each: sigma 2.8 px in all), which reach exactly zero at those
# frequencies. Chosen on Set12 and McMaster18 under noise correlated over two pixels (sigma 15,
# 25): 2 passes cost 0.34 dB on Set12 at 15 (its fine textures lie near those frequencies), 4 cost
# 0.14, 8 cost 0.07 there and gain 0.02-0.10 dB on the three others; on flat colour the pattern
# falls to less than half (benchmarks/results/notes.md).
PATTERN_PASSES = 8


def clear_pattern(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (H, W, C) less what lies within the narrow band around the three highest
    frequencies (a checkerboard, and stripes along either axis): ``pixels`` minus, for each of
    the three, the local mean of ``pixels`` times that pattern, times the pattern again."""
    result = np.empty_like(pixels)
    for channel in range(pixels.shape[-1]):  # one channel at a time: a few copies of one plane
        plane = pixels[..., channel]
        low_x, high_x = _binomial(plane, 1, +1), _binomial(plane, 1, -1)
        band = _binomial(high_x, 0, +1)
        band += _binomial(low_x + high_x, 0, -1)
        result[..., channel] = plane - band
    return result


def _binomial(plane: np.ndarray, axis: int, sign: int) -> np.ndarray:
    """``plane`` through PATTERN_PASSES passes of [1, 4, 6, 4, 1] / 16 along ``axis`` (sign +1, a
    low-pass) or of that kernel times (-1)^j (sign -1: its mirror image around the highest
    frequency), the edges mirrored."""
    weights = np.array([1, 4 * sign, 6, 4 * sign, 1], np.float32) / 16.0
    length = plane.shape[axis]
    for _ in range(PATTERN_PASSES):
        padded = np.pad(plane, [(2, 2) if each == axis else (0, 0) for each in (0, 1)], mode="reflect")
        taps = [padded[offset : offset + length] if axis == 0 else padded[:, offset : offset + length]
                for offset in range(5)]
        plane = weights[0] * taps[0]
        for weight, tap in zip(weights[1:], taps[1:]):
            plane += weight * tap
    return plane
