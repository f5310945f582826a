"""The level a model is told for a real photo's noise (``--sigma auto``): :func:`level_for`.

Method. A camera's noise reaches the JPEG demosaiced, noise-reduced, sharpened and compressed:
it spans several pixels and has lost most of its finest grain, so :func:`estimate_sigma`, which
reads the weakest principal components of 7x7 patches (the highest frequencies), reads it far
too low, and the models, told that, leave it. What a model should be told for such noise is the
level of white noise it resembles at the frequencies the model sees, which the image shows at
coarser scales. So the level is read at four scales of the image -- the image itself (``s0``),
the luminance alone (``y0``), the mosaic of every other pixel (``sm``) and of every fourth
(``smm``), and the 2x2 means (``sb2``, times 2) -- and mapped to the level by a log-linear fit:

    log level = w . (1, log(s0 + 0.5), log(sm + 0.5), log(smm + 0.5), log(sb2 + 0.5), log(y0 + 0.5))

The fit (:data:`WEIGHTS`, made by ``train_scripts/calibrate_levels.py``) is on synthetic images
only: clean crops of Urban100, Sun-Hays80 and BSDS colour photos through a camera pipeline
(inverse sRGB, a random colour matrix, white balance undone, Poisson-Gaussian noise on an RGGB
mosaic at the noise levels Brooks et al. 2019 fit to real cameras, bilinear / edge-aware / VNG
demosaicing, the colour matrix, sRGB and a tone curve, chroma and luma noise reduction, unsharp
masking, optional down-scaling, JPEG quality 75-96), and white, JPEG'd white, blurred and Poisson
noise; the target is the level at which the shipped default model gives the best PSNR against
the clean image, found by trying 17 levels from 2 to 71. The fit applies only where the noise
spans more than a pixel -- where the mosaic reads over :data:`SPREAD_RATIO` times the image,
the test ``--sigma auto`` has made since it learned of camera noise; elsewhere the level is
:func:`estimate_level`'s, exactly as before, so white noise is told what it was told before.

Cost: where the noise is pixel-sized, exactly estimate_level's two estimates; where it spans
more, three more :func:`estimate_sigma` calls (quarter-size mosaic, 2x2 means, luminance), each
bounded by its patch sampling. No model call.

Measured on CC15 (real camera noise, held out: nothing was fitted on it) and on white noise by
``benchmarks/real_noise.py``: docs/results.md, "Real camera noise".
"""

from __future__ import annotations

import math

import numpy as np

from denoise.noise.estimate import SPREAD_RATIO, estimate_level, estimate_sigma
from denoise.noise.shuffle import to_mosaic

# log-linear weights on (1, log(s0 + 0.5), log(sm + 0.5), log(smm + 0.5), log(sb2 + 0.5), log(y0 + 0.5)),
# fitted by train_scripts/calibrate_levels.py (ridge 1.0) on the 956 of 1,360 synthetic crops where sm > SPREAD_RATIO * s0.
WEIGHTS = (1.739, -0.114, 0.424, -0.122, -0.053, 0.213)
OFFSET = 0.5  # added to each level before the log: levels near 0 stay finite
# Never told less than estimate_level, nor more than the levels the models learned.
MAX_LEVEL = 75.0
# Below this level on the mosaic of every other pixel (0-255 units), noise that spans more than a
# pixel cannot be told from a clean photo's fine texture, which reads 0.2-6 there on McMaster18,
# Set12 and Urban100 (real camera noise on CC15: 2.0-10.0). The fitted level, 5-7 on clean photos,
# would smooth their texture away; there the level is estimate_level's and no photo route is taken.
WEAKEST_SPREAD = 2.0
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def features(pixels: np.ndarray, found: dict[str, float] | None = None) -> dict[str, float]:
    """The levels (0-255 units) :func:`level_for` reads on ``pixels`` ((H, W) or (H, W, C) in [0, 1]);
    those in ``found`` already are not read again."""
    image = _as_image(pixels)
    found = dict(found or {})
    if "s0" not in found or "sm" not in found:
        found.update(_pixel_scale(image))
    mosaic = to_mosaic(image)
    found["smm"] = estimate_sigma(to_mosaic(mosaic))
    found["sb2"] = 2.0 * estimate_sigma(_means_2x2(image))
    found["y0"] = estimate_sigma((image @ _LUMA)[..., None]) if image.shape[-1] == 3 else found["s0"]
    return found


def spread(found: dict[str, float]) -> bool:
    """Whether the noise spans more than a pixel: the mosaic reads clearly more than the image
    (the test of :func:`estimate_level`)."""
    return found["sm"] > SPREAD_RATIO * found["s0"]


def level_for(pixels: np.ndarray) -> float:
    """The level (0-255 units) to tell a model with a noise-level input for ``pixels`` ((H, W) or
    (H, W, C), float in [0, 1], as decoded).

    Where the noise is pixel-sized (:func:`spread` false) it is :func:`estimate_level`'s, read at
    the same cost; else the fitted level of the module's docstring, never below estimate_level's."""
    return read(pixels)[0]


def read(pixels: np.ndarray) -> tuple[float, bool]:
    """``(level_for(pixels), whether the noise spans more than a pixel)``: such noise is sent to
    the photo models (denoise.treatments)."""
    image = _as_image(pixels)
    if min(image.shape[:2]) < 32:  # too small for the coarser scales
        return estimate_level(image), False
    found = _pixel_scale(image)
    if not spread(found):
        return found["s0"], False  # what estimate_level returns here
    if found["sm"] < WEAKEST_SPREAD:
        return found["sm"], False  # what estimate_level returns here
    found = features(image, found)
    x = [1.0] + [math.log(found[key] + OFFSET) for key in ("s0", "sm", "smm", "sb2", "y0")]
    fitted = math.exp(sum(w * v for w, v in zip(WEIGHTS, x)))
    return float(min(MAX_LEVEL, max(fitted, found["sm"]))), True


def _as_image(pixels: np.ndarray) -> np.ndarray:
    image = np.asarray(pixels, np.float32)
    return image[..., None] if image.ndim == 2 else image


def _pixel_scale(image: np.ndarray) -> dict[str, float]:
    """The two levels estimate_level reads: the image's and its mosaic's of every other pixel."""
    return {"s0": estimate_sigma(image), "sm": estimate_sigma(to_mosaic(image))}


def _means_2x2(image: np.ndarray) -> np.ndarray:
    """The image at half size, each pixel the mean of a 2x2 block (a last odd row or column dropped)."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    image = image[:height, :width]
    return 0.25 * (image[0::2, 0::2] + image[0::2, 1::2] + image[1::2, 0::2] + image[1::2, 1::2])
