"""Signal-dependent noise: find it, and turn it into the Gaussian noise the models know.

Photon (shot) noise grows with brightness: its variance is ``a * x + b`` at clean value x, in
0-1 units (``a`` = 1 / the photon count of white, ``b`` the sensor's read-noise variance).
Multiplicative noise (speckle: ultrasound, radar, some film scans) grows faster: its standard
deviation is proportional to x, variance ``c * x**2 + b``. The models learned one noise level
everywhere. A variance-stabilising transform makes such noise close to Gaussian with a single
level; the model denoises there, and the inverse brings the result back. For photon noise that
is the generalised Anscombe transform (GAT; Starck, Murtagh and Bijaoui 1998) and the closed-form
approximation of its exact unbiased inverse (Makitalo and Foi, IEEE TIP 2011 and 2013); for
multiplicative noise the integral of 1 / standard deviation (a logarithm that stays finite at 0)
and its inverse, corrected for the logarithm's bias.

The function is read off the image: the noise of each flat block (the median absolute deviation
of a Laplacian that passes noise at unit gain) against the block's mean, a low quantile per
brightness band (texture only adds), and a straight line through them, in x for photon noise or
in x**2 for multiplicative noise, as the power of x the variance grows with says.
Their common scale is left free: the pipeline measures the level of the stabilised noise with
:func:`denoise.noise.estimate_sigma`, so only the ratios ``b / a`` and ``b / c`` matter.
"""

from __future__ import annotations

import numpy as np

BLOCK = 16  # pixels a side of the blocks whose noise is measured: 196 Laplacian values each
MAX_BLOCKS = 4096  # per channel, sampled on an even grid, so the cost is bounded whatever the image size
BANDS = np.linspace(0.15, 0.85, 8)  # brightness bands fitted; clipping bends the ends of 0-1
QUANTILE = 0.2  # of a band's block variances: the flattest blocks, little texture in them
MIN_BLOCKS_PER_BAND = 8
# Noise counts as signal-dependent when its estimated standard deviation at brightness 0.75 is
# at least this many times that at 0.25 (pure photon noise: sqrt(3) = 1.73), and its overall
# level is at least MIN_SIGMA (0-255 units): at lower levels texture bends the fit. Measured on
# 180 images (150 BSDS photos, Set12, McMaster18) with protocol noise: Gaussian noise of sigma
# 5 / 10 was taken for photon noise in 2 / 1 of them, of sigma 15-50 in none; Poisson noise of
# peak 10 / 30 / 100 / 300 was found in 130 / 166 / 173 / 117. A Gaussian image misread loses
# up to 1.2 dB (BSDS photos at sigma 5: 0.34 on average), which is why the bar is this high.
SIGNAL_DEPENDENT_RATIO = 1.4
# Multiplicative noise (variance c x**2) is told from photon noise (a x) by the power of x the
# variance grows with, read on bands from near black to 0.6, short of where clipping at white bends
# it. Protocol noise on Set12 and McMaster18 read: Poisson at peak 10-300 0.44-1.54 (median 1.1),
# speckle 0.1-0.3 1.37-2.80 (median 2.1), 4 of its 90 images under the bar (treated as before);
# on 150 BSDS photos Poisson read 0.57-1.47. No Poisson image was over it.
MULTIPLICATIVE_POWER = 1.6
SHAPE_BANDS = np.linspace(0.05, 0.6, 9)
MIN_SIGMA = 6.0
# The fit must also agree with the image's overall noise level (denoise.noise.estimate_sigma):
# at the image's mean brightness its standard deviation measured 0.57-1.52 times that level
# under Poisson noise on Set12 and McMaster18, and at most 0.33 times under salt-and-pepper
# noise, whose sparse impulses a median-based spread hardly sees while texture bends the fit.
AGREEMENT = (0.5, 2.0)


def noise_function(pixels: np.ndarray, shape: str = "auto") -> tuple[float, float, float] | None:
    """``(a, b, c)`` with noise variance ``a * x + b + c * x**2`` (up to a common scale) at
    brightness x, from an (H, W) or (H, W, C) image in [0, 1] (channels pooled): photon noise
    (``c`` = 0) or multiplicative noise (``a`` = 0), as ``shape`` says (``photon``,
    ``multiplicative``, or ``auto``: multiplicative where the variance grows as x**2). None when
    too few flat blocks."""
    image = np.asarray(pixels, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    found = [_block_variances(image[..., channel]) for channel in range(image.shape[-1])]
    if any(part is None for part in found):
        return None
    mean, variance = (np.concatenate(parts) for parts in zip(*found))
    xs, ys, weights = _bands(mean, variance, BANDS)
    if len(xs) < 3:
        return None
    if shape == "multiplicative" or shape == "auto" and _power(mean, variance) >= MULTIPLICATIVE_POWER:
        c, b = _fit(xs**2, ys, weights)
        if c > 0:
            return 0.0, max(b, 0.0), c
    a, b = _fit(xs, ys, weights)
    return a, max(b, 0.0), 0.0  # a line through the bands can cross zero above 0


def _bands(mean: np.ndarray, variance: np.ndarray, edges: np.ndarray):
    """Per brightness band with enough blocks: its mean brightness, a low quantile of its blocks'
    variances, and a weight (the square root of its count)."""
    xs, ys, weights = [], [], []
    for low, high in zip(edges[:-1], edges[1:]):
        chosen = (mean >= low) & (mean < high)
        if np.count_nonzero(chosen) >= MIN_BLOCKS_PER_BAND:
            xs.append(mean[chosen].mean())
            ys.append(np.quantile(variance[chosen], QUANTILE))
            weights.append(np.sqrt(np.count_nonzero(chosen)))
    return np.array(xs), np.array(ys), np.array(weights)


def _power(mean: np.ndarray, variance: np.ndarray) -> float:
    """The power of brightness the noise variance grows with: the slope of log variance against
    log brightness through the bands of SHAPE_BANDS (1 for photon noise, 2 for multiplicative)."""
    xs, ys, _ = _bands(mean, variance, SHAPE_BANDS)
    if len(xs) < 3 or np.any(ys <= 0):
        return 1.0
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _fit(xs: np.ndarray, ys: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """The weighted least-squares line ``ys ~ slope * xs + intercept``: (slope, intercept)."""
    design = np.stack([xs, np.ones_like(xs)], axis=1) * weights[:, None]
    slope, intercept = np.linalg.lstsq(design, ys * weights, rcond=None)[0]
    return float(slope), float(intercept)


def _terms(function: tuple[float, ...]) -> tuple[float, float, float]:
    """``(a, b, c)`` of a noise function; ``(a, b)``, photon noise's, has c = 0."""
    return (*tuple(function), 0.0)[:3]


def variance_at(function: tuple[float, ...], x) -> np.ndarray:
    """The noise variance ``function`` gives at brightness ``x``."""
    a, b, c = _terms(function)
    return a * np.asarray(x, np.float64) + b + c * np.asarray(x, np.float64) ** 2


def is_signal_dependent(function: tuple[float, ...] | None, mean: float, sigma: float) -> bool:
    """Whether ``function`` shows noise that grows with brightness and agrees with ``sigma``, the
    image's overall noise level (0-1 units), at its ``mean`` brightness. Multiplicative noise
    leaves dark flat areas almost clean, and the overall reading, taken where the image is
    flattest, runs far below it (1-4 against an RMS of 11 at speckle 0.1 on McMaster18): there
    the function's own level at the mean brightness must reach MIN_SIGMA, and only the lower
    bound of AGREEMENT holds (it keeps out impulse noise, whose function is texture's)."""
    if function is None or variance_at(function, 0.75) < SIGNAL_DEPENDENT_RATIO**2 * variance_at(function, 0.25):
        return False
    level = np.sqrt(variance_at(function, mean))
    if function[2] > 0:
        return bool(level >= MIN_SIGMA / 255.0 and level >= AGREEMENT[0] * sigma)
    return sigma >= MIN_SIGMA / 255.0 and AGREEMENT[0] <= level / sigma <= AGREEMENT[1]


def _blocks(channel: np.ndarray):
    """(values, Laplacian residuals) of up to MAX_BLOCKS blocks, each (n, BLOCK, BLOCK)."""
    height, width = channel.shape
    rows, columns = max(0, height - 2) // BLOCK, max(0, width - 2) // BLOCK
    if rows == 0 or columns == 0:
        return None
    step = max(1, int(np.ceil(np.sqrt(rows * columns / MAX_BLOCKS))))
    tops = np.arange(0, rows, step) * BLOCK + 1
    lefts = np.arange(0, columns, step) * BLOCK + 1
    top_index = tops[:, None, None, None] + np.arange(BLOCK)[None, None, :, None]
    left_index = lefts[None, :, None, None] + np.arange(BLOCK)[None, None, None, :]

    def shifted(down: int, across: int) -> np.ndarray:
        return channel[top_index + down, left_index + across].reshape(-1, BLOCK, BLOCK)

    centre = shifted(0, 0)
    edges = shifted(-1, 0) + shifted(1, 0) + shifted(0, -1) + shifted(0, 1)
    corners = shifted(-1, -1) + shifted(-1, 1) + shifted(1, -1) + shifted(1, 1)
    # Immerkaer's kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] / 6: the sum of its squares is 1, so
    # white noise passes at its own level, and it removes constant and linear brightness.
    residuals = (4.0 * centre - 2.0 * edges + corners) / 6.0
    return centre, residuals


def stabilize(pixels: np.ndarray, function: tuple[float, ...]) -> np.ndarray:
    """``pixels`` with noise of variance ``function`` (:func:`noise_function`) made even: the
    generalised Anscombe transform, or for multiplicative noise :func:`_log_stabilize`."""
    a, b, c = _terms(function)
    if c > 0:
        return _log_stabilize(pixels, b, c)
    inside = np.asarray(pixels, np.float64) / a + 0.375 + b / (a * a)
    return (2.0 * np.sqrt(np.maximum(inside, 0.0))).astype(np.float32)


def unstabilize(values: np.ndarray, function: tuple[float, ...], spread: float = 0.0) -> np.ndarray:
    """Back from :func:`stabilize`: the closed-form approximation of the exact unbiased inverse
    of the GAT, or for multiplicative noise :func:`_log_unstabilize` (``spread``: the noise level
    measured on the stabilised image, in its units)."""
    a, b, c = _terms(function)
    if c > 0:
        return _log_unstabilize(values, b, c, spread)
    d = np.maximum(np.asarray(values, np.float64), 0.8)  # below it the approximation turns back
    root = np.sqrt(1.5)
    counts = 0.25 * d**2 + 0.25 * root / d - 1.375 / d**2 + 0.625 * root / d**3 - 0.125 - b / (a * a)
    return (np.maximum(counts, 0.0) * a).astype(np.float32)


# A floor under b: the rounding of 8-bit values (1 / 12 of a level squared), so the transform of
# multiplicative noise stays finite at black.
ROUNDING_VARIANCE = 1.0 / (12.0 * 255.0**2)


def _log_stabilize(pixels: np.ndarray, b: float, c: float) -> np.ndarray:
    """The integral of 1 / sqrt(c x**2 + b): asinh(x sqrt(c / b)) / sqrt(c), a logarithm for
    x well above sqrt(b / c) and linear near black."""
    b = max(b, ROUNDING_VARIANCE)
    x = np.maximum(np.asarray(pixels, np.float64), 0.0)
    return (np.arcsinh(x * np.sqrt(c / b)) / np.sqrt(c)).astype(np.float32)


def _log_unstabilize(values: np.ndarray, b: float, c: float, spread: float = 0.0) -> np.ndarray:
    """The inverse of :func:`_log_stabilize`, less the bias of the logarithm: the log of noise of
    mean 1 has a mean below 0, about -s**2 / 2 for a standard deviation s of the log (exact for
    log-normal noise, within 10% for Gaussian and gamma speckle of s under 0.55). The model
    takes that mean for the clean value; uncorrected, gamma speckle of 4 looks came out 12 grey
    levels dark on Set12. ``spread`` times sqrt(c) is s."""
    b = max(b, ROUNDING_VARIANCE)
    shift = spread**2 * np.sqrt(c) / 2.0  # s**2 / 2 in the transform's units (s / sqrt(c) is spread)
    x = np.sinh((np.asarray(values, np.float64) + shift) * np.sqrt(c)) / np.sqrt(c / b)
    return np.maximum(x, 0.0).astype(np.float32)


# A camera's noise (denoise.noise.camera_noise) has one free parameter, the photon count of
# white ("peak"): where the sensor sampled a colour itself, the variance of the linear value x
# (the gamma undone) is x / peak plus the read noise that goes with that peak. Green is sampled
# on one diagonal of each 2x2 cell; its two half-size images there carry that noise unmixed,
# those of the other diagonal the weaker noise of interpolated values, so of the two diagonals
# the noisier is taken, whichever way the mosaic lies. Per band of linear brightness (clear of
# the clipping at 0 and 1) a low quantile of the blocks' variances (texture only adds), then
# the peak of the line through them. On McMaster18 at 25 / 50 / 100 / 200 / 400 photons the
# level of the peak found is off by 15 / 11 / 8 / 14 / 24% (root mean square of the log ratio;
# estimate_sigma of the mosaic of every other pixel: 21 / 26 / 35 / 28 / 21%), and color-camera
# gains 0.3 dB at 50 and 200 photons over being told the mosaic's level (0.3 dB less at 400).
CAMERA_BANDS = np.geomspace(0.03, 0.6, 7)
# The quantile: 0.2 read the noise up to 14% low at 25-50 photons (28.35 dB at 50), 0.5 up to
# 29% high at 200-400 (32.73 at 200); 0.35 gave 28.76 and 32.79.
CAMERA_QUANTILE = 0.35


def camera_peak(pixels: np.ndarray) -> float | None:
    """The photon count of white of a colour image in [0, 1] (H, W, 3) with a camera's noise,
    from its green values; None when it has too few flat blocks."""
    from denoise.noise.synthesis import GAMMA, read_variance

    green = np.clip(np.asarray(pixels[..., 1], np.float64), 0.0, 1.0) ** GAMMA
    peaks = []
    for planes in ((green[0::2, 1::2], green[1::2, 0::2]), (green[0::2, 0::2], green[1::2, 1::2])):
        found = [_block_variances(plane.astype(np.float32)) for plane in planes]
        if any(part is None for part in found):
            continue
        means, variances = (np.concatenate(parts) for parts in zip(*found))
        xs, ys = [], []
        for low, high in zip(CAMERA_BANDS[:-1], CAMERA_BANDS[1:]):
            chosen = (means >= low) & (means < high)
            if np.count_nonzero(chosen) >= MIN_BLOCKS_PER_BAND:
                xs.append(means[chosen].mean())
                ys.append(np.quantile(variances[chosen], CAMERA_QUANTILE))
        if not xs:
            continue
        xs, ys = np.array(xs), np.array(ys)
        peak = 100.0
        for _ in range(5):  # the read noise depends on the peak: a few rounds settle it
            slope = float(np.sum(xs * (ys - read_variance(peak))) / np.sum(xs * xs))
            peak = 1.0 / max(slope, 1e-6)
        peaks.append(peak)
    return min(peaks) if peaks else None


def _block_variances(channel: np.ndarray):
    """(mean, noise variance) of each of the channel's blocks, the variance from the median
    absolute deviation of the Laplacian residuals; None when the channel has no whole block."""
    blocks = _blocks(channel)
    if blocks is None:
        return None
    values, residuals = blocks
    flat = residuals.reshape(len(residuals), -1)
    deviation = np.median(np.abs(flat - np.median(flat, axis=1, keepdims=True)), axis=1)
    return values.mean(axis=(1, 2)), (1.4826 * deviation) ** 2
