"""Salt-and-pepper noise: find the impulse pixels and fill them from their neighbours.

Impulse noise sets scattered pixels to black or white (dead and hot sensor pixels, dust on a
scan, transmission errors) and leaves the rest untouched. The models learned Gaussian noise
and smear impulses into blotches; a median over every pixel blurs the untouched ones too. So
only the impulses are replaced: each pixel at 0 or 1 that stands out from the median of its 8
neighbours by more than a jump takes the median of its neighbours that are not impulses
themselves, looking further out (up to 4 pixels) where all of the nearest are: the adaptive
median filter's rule, applied to the extreme values only.

The jump is 0.2, or 4 times the level of the image's other noise where that is higher: clipped
Gaussian noise of sigma 50 also leaves pixels at 0 and 1 that stand out from their neighbours,
by a couple of sigma. An image counts as having impulse noise when at least MIN_FRACTION of
its pixels are impulses: salt-and-pepper noise hitting 1% of the pixels marks about 0.7%
(impulses on pixels already near black or white do not stand out and need no filling), while
a clean photo's isolated specular highlights or a star field's few saturated stars stay far
below it.
"""

from __future__ import annotations

import numpy as np

from denoise.noise import estimate_sigma

MAX_RADIUS = 4
JUMP = 0.2
SIGMAS = 4.0
MIN_FRACTION = 0.003
SAMPLE = 100_000  # black or white pixels per channel the first test looks at: bounded cost


def remove(pixels: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The (H, W, C) image in [0, 1] with its impulses filled, and how many there were; None
    when it has no impulse noise. The input is not modified."""
    if _fraction(pixels, JUMP) < MIN_FRACTION:
        return None  # the cheap test: a higher jump can only find fewer
    rough, _ = fill(pixels, JUMP)
    jump = max(JUMP, SIGMAS * estimate_sigma(rough) / 255.0)
    if jump == JUMP:
        return rough, int(np.count_nonzero(_impulses(pixels, JUMP)))
    return fill(pixels, jump) if _fraction(pixels, jump) >= MIN_FRACTION else None


def _fraction(pixels: np.ndarray, jump: float) -> float:
    """The fraction of an (H, W, C) image's values that are impulses, from up to SAMPLE black or
    white pixels per channel, evenly spread."""
    impulses = 0.0
    for channel in range(pixels.shape[-1]):
        plane = pixels[..., channel]
        rows, columns = np.nonzero((plane <= 0.0) | (plane >= 1.0))
        if len(rows) > SAMPLE:
            take = np.linspace(0, len(rows) - 1, SAMPLE).astype(np.intp)
            share = np.count_nonzero(_standing_out(plane, rows[take], columns[take], jump)) / SAMPLE
            impulses += share * len(rows)
        elif len(rows):
            impulses += np.count_nonzero(_standing_out(plane, rows, columns, jump))
    return impulses / pixels.size


def _impulses(pixels: np.ndarray, jump: float) -> np.ndarray:
    """A mask of the impulses of an (H, W, C) image."""
    mask = np.zeros(pixels.shape, bool)
    for channel in range(pixels.shape[-1]):
        plane = pixels[..., channel]
        rows, columns = np.nonzero((plane <= 0.0) | (plane >= 1.0))
        if len(rows):
            out = _standing_out(plane, rows, columns, jump)
            mask[rows[out], columns[out], channel] = True
    return mask


def _standing_out(plane: np.ndarray, rows: np.ndarray, columns: np.ndarray, jump: float) -> np.ndarray:
    return np.abs(plane[rows, columns] - np.median(_ring(plane, rows, columns, 1), axis=0)) > jump


def fill(pixels: np.ndarray, jump: float) -> tuple[np.ndarray, int]:
    """A copy of the (H, W, C) image in [0, 1] with the impulses at ``jump`` filled, and their
    number. Channels are treated one by one."""
    impulses = _impulses(pixels, jump)
    result = np.array(pixels, np.float32, copy=True)
    for channel in range(result.shape[-1]):
        plane, mask = result[..., channel], impulses[..., channel]
        rows, columns = np.nonzero(mask)
        for radius in range(1, MAX_RADIUS + 1):
            if len(rows) == 0:
                break
            values = _ring(plane, rows, columns, radius, exclude=mask)
            found = ~np.all(np.isnan(values), axis=0)
            plane[rows[found], columns[found]] = np.nanmedian(values[:, found], axis=0)
            rows, columns = rows[~found], columns[~found]
    return result, int(np.count_nonzero(impulses))


def _ring(plane: np.ndarray, rows: np.ndarray, columns: np.ndarray, radius: int, exclude=None) -> np.ndarray:
    """The values around each (row, column) within ``radius``, the centre left out, edges
    clamped: shape (neighbours, len(rows)); NaN where ``exclude`` marks the neighbour."""
    offsets = [(down, across) for down in range(-radius, radius + 1) for across in range(-radius, radius + 1)
               if (down, across) != (0, 0)]
    height, width = plane.shape
    around_rows = np.clip(rows[None, :] + np.array([down for down, _ in offsets])[:, None], 0, height - 1)
    around_columns = np.clip(columns[None, :] + np.array([across for _, across in offsets])[:, None], 0, width - 1)
    values = plane[around_rows, around_columns].astype(np.float32)
    if exclude is not None:
        values[exclude[around_rows, around_columns]] = np.nan
    return values
