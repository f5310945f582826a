"""Salt-and-pepper noise: find the impulse pixels and fill them from their neighbours.

Impulse noise sets scattered pixels to black or white (dead and hot sensor pixels, dust on a
scan, transmission errors) and leaves the rest untouched. The models learned Gaussian noise
and smear impulses into blotches; a median over every pixel blurs the untouched ones too. So
only the impulses are replaced: a pixel at 0 or 1 that differs from the median of its 8
neighbours by more than a jump, and is not on a line one pixel thin (two opposite neighbours
like it), takes the median of its neighbours that are not impulses themselves, looking further
out (up to 4 pixels) where all of the nearest are: the adaptive median filter's rule, applied
to the extreme values only.

The jump is 0.2, or 4 times the level of the image's other noise where that is higher: clipped
Gaussian noise of sigma 50 also leaves pixels at 0 and 1 apart from their neighbours.

It runs only when asked (`denoise run --noise impulse`): a page of small text has dots, stroke
ends and corners that look exactly like impulses (1.5% of a page in Pillow's default font),
and a photo with noise of another kind has no impulses to fill.
"""

from __future__ import annotations

import numpy as np

from denoise.noise.estimate import estimate_sigma

MAX_RADIUS = 4
JUMP = 0.2
SIGMAS = 4.0


def remove(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy of the (H, W, C) image in [0, 1] with its impulses filled, and how many there were."""
    rough, count = fill(pixels, JUMP)
    jump = max(JUMP, SIGMAS * estimate_sigma(rough, luminance=False) / 255.0) if count else JUMP
    return (rough, count) if jump == JUMP else fill(pixels, jump)


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
    """Which of the pixels at (rows, columns) differ from the median of their 8 neighbours by
    more than ``jump``, unless two opposite neighbours are within ``jump`` of them: a line one
    pixel thin (a stroke of text, a wire) continues on both sides, a speck does not. The end
    pixel of such a line and the corner pixel of a white or black area look like specks."""
    ring = _ring(plane, rows, columns, 1)  # neighbours in _ring's order: opposite ones mirror
    centre = plane[rows, columns]
    near = np.abs(ring - centre[None, :]) <= jump
    through = np.any(near & near[::-1], axis=0)
    return (np.abs(centre - np.median(ring, axis=0)) > jump) & ~through


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
