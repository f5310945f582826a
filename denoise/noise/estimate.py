"""Noise level estimation: how strong an image's noise is, read from the image alone.

:func:`estimate_sigma` reads white noise from weakly textured patches; :func:`estimate_level` is
what ``--sigma auto`` tells a model (the level of the mosaic of every other pixel where noise spans
more than a pixel).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from denoise.noise.shuffle import to_mosaic

# Noise that spans more than a pixel (demosaicing, resizing, in-camera processing) reads low on
# the image itself: estimate_sigma looks at its patches' weakest principal components, the high
# frequencies such noise lacks. In the half-size images of every other pixel it is close to
# independent again, while independent noise reads about the same there (within 3% on average
# on Set12 and McMaster18 at sigma 5-50; at sigma 5, where texture weighs most, up to 31% more on
# one image). So where they read clearly more, theirs is the level: a camera's noise on
# McMaster18 (see camera_noise, RMS 11.4) reads 4.5 on the image and 7.0 on them (15 of its 18
# images over the ratio), and the default run gains 1.0 dB (2.5 dB at RMS 24.7).
SPREAD_RATIO = 1.35


def estimate_level(image: np.ndarray) -> float:
    """The noise level `--sigma auto` tells a model: :func:`estimate_sigma` of ``image`` ((H, W) or
    (H, W, C) in [0, 1]), or that of its mosaic of every other pixel when that reads more than
    SPREAD_RATIO times as much (noise spanning more than a pixel)."""
    level = estimate_sigma(image)
    spread = estimate_sigma(to_mosaic(image if image.ndim == 3 else image[..., None]))
    return spread if spread > SPREAD_RATIO * level else level


def estimate_sigma(image: np.ndarray, patch: int = 7, max_patches: int = 60_000, luminance: bool = True) -> float:
    """Estimate the Gaussian noise level of an image in [0, 1], in 0-255 units.

    ``image`` is (H, W) or (H, W, C); the channels share one noise level and their patches
    are pooled. Two published methods, one after the other:

    - weak-textured patch selection (Liu, Tanaka and Okutomi, IEEE TIP 2013): the gradient
      energy tr(G^T G) of a patch of pure Gaussian noise follows a gamma law scaled by sigma
      squared, so the patches whose energy lies below its 99% quantile at the current
      estimate are taken as free of texture, sigma is estimated again on them alone, and the
      selection repeated (a few rounds, from the estimate on all patches: texture only adds
      energy, so the rounds come down to the noise);
    - the PCA estimate of Chen, Zhu and Heng (ICCV 2015) on those patches: the covariance of
      the patches has its smallest eigenvalues from noise alone; the largest tail of
      eigenvalues whose mean is no more than its median is taken as pure noise, and its mean
      is sigma squared.

    PCA on all patches reads fine texture as noise at low noise levels (+42% at sigma 5 on
    Set12); on weak-textured patches it does not. Patches with a 3x3 mean within 1.5 sigma
    of 0 or 1 are left out, clipping having shrunk their noise (in an image almost all dark
    or bright, the weak-textured patches farthest from 0 and 1 are used). Salt-and-pepper
    noise, which no patch is free of, gets its root mean square, as PCA on all patches
    measures it. Up to ``max_patches`` patches are sampled on an even grid, so the cost is
    bounded whatever the image size (about 0.1 CPU second). Deterministic.

    A colour image's level is the larger of that and its luminance's level over the share
    independent channel noise leaves in it (0.668 for Rec. 601 luma). A JPEG's chroma
    subsampling and coarse chroma steps remove most chroma noise while the luminance keeps
    its own, so the pooled channels read about two thirds of the noise that was there; models
    that learned independent noise take away the luminance noise they are told of (BSDS colour
    photos, sigma 25 saved at JPEG quality 95: read as 16.5, 28.5 dB; as 24.9, 30.3 dB).
    ``luminance=False`` leaves that out: the channels' own level, for thresholds on each channel
    (noise that is the same in every channel reads 1.5 times as strong in the luminance).
    """
    pixels = np.asarray(image, np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    if height < patch or width < patch:
        return float(_strip_sigma(pixels) * 255.0)
    sigma = _estimate(pixels, patch, max_patches)
    if channels == 3 and luminance:
        luma = pixels @ _LUMA
        # As many positions as each channel had above: the same sampling, a third of the cost.
        sigma = max(sigma, _estimate(luma[..., None], patch, max_patches // channels) / _LUMA_SHARE)
    return float(sigma * 255.0)


def _strip_sigma(pixels: np.ndarray) -> float:
    """The level of an image too narrow for patches (a strip a few pixels wide), in 0-1 units:
    the median absolute deviation of second differences along its long side, which a smooth
    signal hardly moves (sigma * sqrt(6) for white noise); 0 with fewer than 16 of them."""
    along = pixels if pixels.shape[1] >= pixels.shape[0] else pixels.transpose(1, 0, 2)
    differences = (along[:, 2:] - 2 * along[:, 1:-1] + along[:, :-2]).ravel()
    if differences.size < 16:
        return 0.0
    deviation = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * deviation / math.sqrt(6))


def _estimate(pixels: np.ndarray, patch: int, max_patches: int) -> float:
    """:func:`estimate_sigma` on all channels pooled, in 0-1 units."""
    patches = _sample_patches(pixels, patch, max_patches)  # (N, patch, patch) float32
    vectors = patches.reshape(len(patches), -1)
    energy, distance = _gradient_energy(patches), _clip_distance(patches)
    sigma = on_all = _pca_sigma(vectors)
    minimum = _MIN_PATCHES_PER_DIMENSION * patch * patch
    threshold = _weak_texture_threshold(patch, _WEAK_TEXTURE_CONFIDENCE)  # in units of sigma^2
    for _ in range(_WEAK_TEXTURE_ROUNDS):
        weak = energy < threshold * sigma * sigma
        if np.count_nonzero(weak) < minimum:
            break
        keep = weak & (distance > _CLIP_MARGIN * sigma)
        if np.count_nonzero(keep) < minimum:  # mostly dark or bright: the weak patches farthest from 0 and 1
            keep = weak & (distance >= np.sort(distance[weak])[-minimum])
        previous, sigma = sigma, _pca_sigma(vectors[keep])
        if abs(sigma - previous) <= 1e-3 * previous:
            break
    # Salt-and-pepper noise: its black and white pixels make every patch they hit textured,
    # so the rounds above measure only the rest. Its level, for the models, is its root mean
    # square, which PCA on all patches measures (as the estimate did before the rounds).
    jump = max(_IMPULSE_JUMP * sigma, _IMPULSE_MIN_JUMP)
    if np.count_nonzero(_isolation(patches) > jump) > _IMPULSE_FRACTION * len(patches):
        sigma = max(sigma, on_all)
    return sigma


# The quantile of the gradient energy of pure noise below which a patch counts as free of
# texture; the rounds of selection and estimation; the least number of patches, per dimension
# of a patch, a covariance is estimated from; how many sigmas the 3x3 means of a patch keep
# from 0 and 1 for clipping not to shrink its noise.
_WEAK_TEXTURE_CONFIDENCE = 0.99
_WEAK_TEXTURE_ROUNDS = 4
_MIN_PATCHES_PER_DIMENSION = 10
_CLIP_MARGIN = 1.5
# Salt-and-pepper noise: a black or white pixel whose 8 neighbours all differ from it by more
# than 6 sigma (and 0.2) is an impulse; impulses at over 0.1% of the patch centres are that noise
# (at most 0.02% in Set12, McMaster18 and 80 BSDS photos, clean or with Gaussian noise).
_IMPULSE_JUMP = 6.0
_IMPULSE_MIN_JUMP = 0.2
_IMPULSE_FRACTION = 0.001
# JPEG's luma (Rec. 601), and the standard deviation it gives noise of unit deviation in each channel.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_LUMA_SHARE = float(np.sqrt(np.sum(_LUMA.astype(np.float64) ** 2)))


def _sample_patches(pixels: np.ndarray, patch: int, max_patches: int) -> np.ndarray:
    """Up to ``max_patches`` patches of every channel on an even grid, as float32."""
    rows, columns, channels = pixels.shape[0] - patch + 1, pixels.shape[1] - patch + 1, pixels.shape[2]
    scale = min(1.0, float(np.sqrt(max_patches / (rows * columns * channels))))
    take_rows = np.unique(np.linspace(0, rows - 1, max(1, int(rows * scale))).round().astype(np.intp))
    take_columns = np.unique(np.linspace(0, columns - 1, max(1, int(columns * scale))).round().astype(np.intp))
    windows = np.lib.stride_tricks.sliding_window_view(pixels, (patch, patch), axis=(0, 1))
    windows = windows[np.ix_(take_rows, take_columns)]  # (rows', columns', C, patch, patch)
    return windows.reshape(-1, patch, patch).astype(np.float32)


def _gradient_energy(patches: np.ndarray) -> np.ndarray:
    """tr(G^T G) of each patch: its squared central differences, across and down, summed."""
    across = 0.5 * (patches[:, :, 2:] - patches[:, :, :-2])
    down = 0.5 * (patches[:, 2:, :] - patches[:, :-2, :])
    return np.einsum("nij,nij->n", across, across) + np.einsum("nij,nij->n", down, down)


def _isolation(patches: np.ndarray) -> np.ndarray:
    """How far a white (black) centre pixel stands above (below) all its 8 neighbours; else 0."""
    middle = patches.shape[1] // 2
    block = patches[:, middle - 1 : middle + 2, middle - 1 : middle + 2].reshape(len(patches), 9)
    centre, neighbours = block[:, 4], np.delete(block, 4, axis=1)
    white = np.where(centre >= 1.0, 1.0 - neighbours.max(axis=1), 0.0)
    return np.where(centre <= 0.0, neighbours.min(axis=1), white)


def _clip_distance(patches: np.ndarray) -> np.ndarray:
    """How close each patch comes to black or white: the extremes of its 3x3 means.

    The 3x3 means have a third of the noise, so a flat patch is judged by its level, not by
    its noise, and a patch half dark half bright is known for what it is.
    """
    rows = patches[:, :-2] + patches[:, 1:-1] + patches[:, 2:]
    means = (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9.0
    return np.minimum(means.min(axis=(1, 2)), 1.0 - means.max(axis=(1, 2)))


@functools.lru_cache(maxsize=None)
def _weak_texture_threshold(patch: int, confidence: float) -> float:
    """The ``confidence`` quantile of the gradient energy of a patch of unit Gaussian noise.

    That energy is n^T D n for the noise n and D = Dh^T Dh + Dv^T Dv (the central-difference
    operators); as in Liu et al., it is taken to be gamma with shape rank(D) / 2 and mean tr(D).
    """
    size = patch * patch
    index = np.arange(size).reshape(patch, patch)
    rows = []
    for before, after in ((index[:, :-2], index[:, 2:]), (index[:-2, :], index[2:, :])):
        for low, high in zip(before.ravel(), after.ravel()):
            row = np.zeros(size)
            row[low], row[high] = -0.5, 0.5
            rows.append(row)
    operator = np.array(rows)
    gram = operator.T @ operator
    rank = int(np.linalg.matrix_rank(gram))
    return _gamma_quantile(confidence, rank / 2.0) * 2.0 * float(np.trace(gram)) / rank


def _gamma_quantile(p: float, shape: float) -> float:
    """The ``p`` quantile of the unit-scale gamma distribution, by bisection of its CDF."""
    low, high = 0.0, max(1.0, 2.0 * shape)
    while _gamma_cdf(high, shape) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _gamma_cdf(middle, shape) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return 0.5 * (low + high)


def _gamma_cdf(x: float, shape: float) -> float:
    """The regularised lower incomplete gamma function P(shape, x) (Numerical Recipes 6.2)."""
    if x <= 0.0:
        return 0.0
    log_prefactor = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1.0:  # the series converges fast here
        term = total = 1.0 / shape
        denominator = shape
        for _ in range(10_000):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(1.0, total * math.exp(log_prefactor))
    tiny = 1e-300  # else the continued fraction of Q = 1 - P, by the modified Lentz method
    b = x + 1.0 - shape
    c, d = 1.0 / tiny, 1.0 / b
    result = d
    for i in range(1, 10_000):
        a = -i * (i - shape)
        b += 2.0
        d = a * d + b
        d = tiny if abs(d) < tiny else d
        c = b + a / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        result *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(log_prefactor) * result)


def _pca_sigma(vectors: np.ndarray) -> float:
    if len(vectors) < vectors.shape[1] + 1:
        return 0.0
    centred = vectors - vectors.mean(axis=0)
    covariance = (centred.T @ centred).astype(np.float64) / (len(vectors) - 1)
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))[::-1]
    for start in range(len(eigenvalues)):
        tail = eigenvalues[start:]
        if tail.mean() <= np.median(tail):
            return float(np.sqrt(max(tail.mean(), 0.0)))
    return float(np.sqrt(max(eigenvalues[-1], 0.0)))
