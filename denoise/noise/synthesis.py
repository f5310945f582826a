"""Noise synthesis: the noise models, shared by training (TensorFlow, on the fly), `add-noise` and `eval` (NumPy).

Levels are given per noise type:

- ``gaussian``: standard deviation in 0-255 grey levels (e.g. 25).
- ``poisson``: peak photon count of a white pixel (lower is noisier, e.g. 30).
- ``salt-pepper``: fraction of pixels replaced by black or white (e.g. 0.05).
- ``speckle``: standard deviation of the multiplicative factor (e.g. 0.2).
- ``camera``: a camera's noise (see :func:`camera_noise`), given as the photon count of a white
  pixel, like ``poisson`` (e.g. 100): photon and read noise on the raw values, which the gamma
  then stretches in the shadows (in the image the noise falls from shadows to highlights), made
  stronger in red and blue by the white balance and correlated over about two pixels by
  demosaicing.
- ``mixture``: each image draws one of the first four types above and a level from that type's
  range in :data:`DEFAULT_RANGES`; the level given for the mixture itself is not used.

A level may be a single number ``25`` or a range ``10:50`` from which each image draws uniformly.

Models with a noise-level input are fed :func:`effective_sigma`: the standard deviation, in [0, 1]
units, of the noise a mid-grey pixel receives, so every type maps onto one scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np


KINDS = ("gaussian", "poisson", "salt-pepper", "speckle", "mixture", "camera")

# Ranges used by ``mixture`` for each component and as the default level of each type.
DEFAULT_RANGES = {
    "gaussian": (5.0, 50.0),
    "poisson": (10.0, 100.0),
    "salt-pepper": (0.01, 0.1),
    "speckle": (0.05, 0.3),
    "camera": (25.0, 400.0),  # from dim indoor light to a phone in daylight's shadows
}


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    """A noise type and the level range each image draws from (low == high for a fixed level)."""

    kind: str = "gaussian"
    low: float = 25.0
    high: float = 25.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown noise type {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high or self.low < 0:
            raise ValueError(f"invalid noise level range {self.low:g}:{self.high:g}")
        if self.kind in ("poisson", "camera") and self.low <= 0:
            raise ValueError(f"{self.kind}: the peak photon count must be above 0 (lower is noisier)")
        if self.kind == "salt-pepper" and self.high > 1:
            raise ValueError("salt-pepper: the fraction of pixels hit must be within 0:1")

    @classmethod
    def parse(cls, kind: str, level: str | float | None) -> "NoiseSpec":
        """Build a spec from a type name and a level such as ``25`` or ``10:50`` (None: default)."""
        try:
            if level is None or level == "":
                low, high = DEFAULT_RANGES.get(kind, (0.0, 0.0))
            elif isinstance(level, str) and ":" in level:
                low_text, high_text = level.split(":", 1)
                low, high = float(low_text), float(high_text)
            else:
                low = high = float(level)
        except ValueError:
            raise ValueError(f"noise level {level!r} is not a number nor a range LOW:HIGH") from None
        return cls(kind, low, high)

    def describe(self) -> str:
        level = f"{self.low:g}" if self.low == self.high else f"{self.low:g}:{self.high:g}"
        return f"{self.kind} {level}"


def effective_sigma(kind: str, level):
    """Standard deviation in [0, 1] units of the noise of ``kind`` at ``level`` on a mid-grey pixel.

    Works on floats and on TensorFlow tensors alike. It is what noise-level models are fed.
    """
    if kind == "gaussian":
        return level / 255.0
    if kind == "poisson":
        return (0.5 / level) ** 0.5  # counts of mean 0.5 * peak, divided by the peak
    if kind == "speckle":
        return 0.5 * level
    if kind == "salt-pepper":
        return 0.5 * level**0.5  # a hit pixel is off by 0.5 whether it turns black or white
    if kind == "camera":  # green at mid-grey: the raw noise there, times the gamma's slope
        linear = 0.5**GAMMA
        return (linear / level + read_variance(level)) ** 0.5 * 0.5 / (GAMMA * linear)
    raise ValueError(f"no single noise level for {kind!r}")


def draw(spec: NoiseSpec, rng: np.random.Generator) -> tuple[str, float]:
    """The noise type and level one image gets: drawn from the spec's range (and type, for a mixture)."""
    if spec.kind == "mixture":
        kind = KINDS[int(rng.integers(0, 4))]
        return kind, float(rng.uniform(*DEFAULT_RANGES[kind]))
    level = rng.uniform(spec.low, spec.high) if spec.high > spec.low else spec.low
    return spec.kind, float(level)


# The camera model (after Brooks et al., "Unprocessing images for learned raw denoising", CVPR
# 2019, simplified: no colour matrix, bilinear demosaicing):
GAMMA = 2.2  # sRGB's transfer curve, as a power
# Daylight white balance multiplies raw red and blue by about these, and their noise with them.
WHITE_BALANCE = (2.0, 1.0, 1.7)
# Bilinear demosaicing of an RGGB mosaic: green from its 4 neighbours, red and blue from 2 or 4.
_GREEN = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4.0
_RED_BLUE = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4.0


def read_variance(peak):
    """Read noise that goes with a shot noise of 1 / ``peak``: the line Brooks et al. fit through
    real cameras' (log shot, log read) noise levels."""
    return math.exp(1.20) * (1.0 / peak) ** 2.18  # a power, not a log: works on tensors too


def _mosaic_sites(height: int, width: int) -> np.ndarray:
    """(H, W, 3) booleans: where an RGGB Bayer mosaic samples each colour."""
    rows, columns = np.indices((height, width)) % 2
    return np.stack([(rows == 0) & (columns == 0), rows != columns, (rows == 1) & (columns == 1)], axis=-1)


def camera_noise(image: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (0-255 units, (H, W), (H, W, 1) or (H, W, 3)) as a camera at ``peak`` photons for white
    would have recorded it: taken back to linear raw values (gamma, white balance undone),
    photon and read noise added at each pixel's site of an RGGB mosaic, the noise demosaiced,
    then white-balanced and gamma-encoded again. Only the noise is demosaiced, so the clean
    picture gains no demosaicing artefacts. Grey images have no mosaic nor white balance."""
    colour = image.ndim == 3 and image.shape[-1] == 3
    linear = (np.clip(image if image.ndim == 3 else image[..., None], 0.0, 255.0) / 255.0) ** GAMMA
    balance = np.asarray(WHITE_BALANCE if colour else (1.0,))
    raw = linear / balance
    noise = rng.normal(0.0, 1.0, raw.shape) * np.sqrt(raw / peak + read_variance(peak))
    if colour:
        sparse = np.where(_mosaic_sites(*raw.shape[:2]), noise, 0.0)
        padded = np.pad(sparse, ((1, 1), (1, 1), (0, 0)), mode="reflect")
        kernels = np.stack([_RED_BLUE, _GREEN, _RED_BLUE], axis=-1)
        noise = sum(kernels[dy, dx] * padded[dy : dy + raw.shape[0], dx : dx + raw.shape[1]]
                    for dy in range(3) for dx in range(3))
    noisy = np.clip((raw + noise) * balance, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0
    return noisy if image.ndim == 3 else noisy[..., 0]


def seed_for(name: str, seed: int) -> int:
    """A per-file seed derived from the file's name and a global seed, stable across runs."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


# --------------------------------------------------------------------------------------------
# NumPy: the protocol used by add-noise, eval and the benchmarks.
# --------------------------------------------------------------------------------------------


def add_noise(image: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    """Return a noisy float64 copy of ``image`` given in 0-``peak`` units (peak 255 for 8 bits).

    The caller rounds and clips: with uint8 images and Gaussian noise this is exactly the
    protocol of the benchmarks (add N(0, sigma^2) in 0-255 units, round, clip to [0, 255]).
    """
    return _add_noise_scaled(np.asarray(image, dtype=np.float64), spec, rng, peak=255.0)


def add_noise_uint(image: np.ndarray, spec: NoiseSpec, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of an integer image (uint8 or uint16), rounded and clipped to its dtype.

    Levels stay in 0-255 units whatever the bit depth, so sigma 25 means the same on both.
    """
    peak = float(np.iinfo(image.dtype).max)
    scaled = np.asarray(image, dtype=np.float64) * (255.0 / peak)
    noisy = _add_noise_scaled(scaled, spec, rng, peak=255.0) * (peak / 255.0)
    return np.clip(np.round(noisy), 0, peak).astype(image.dtype)


def _add_noise_scaled(x: np.ndarray, spec: NoiseSpec, rng: np.random.Generator, peak: float):
    kind, level = draw(spec, rng)
    if kind == "gaussian":
        return x + rng.normal(0.0, level, size=x.shape)
    if kind == "poisson":
        return rng.poisson(np.clip(x, 0, None) / peak * level) / level * peak
    if kind == "speckle":
        return x + x * rng.normal(0.0, level, size=x.shape)
    if kind == "camera":
        return camera_noise(x * (255.0 / peak), level, rng) * (peak / 255.0)
    # salt-pepper: the same pixels flip in every channel, half to black and half to white.
    hit = rng.random(x.shape[:2]) < level
    salt = rng.random(x.shape[:2]) < 0.5
    out = x.copy()
    out[hit & salt] = peak
    out[hit & ~salt] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# TensorFlow: noise drawn on the fly inside tf.data during training, images in [0, 1].
# --------------------------------------------------------------------------------------------


def add_noise_tf(image, spec: NoiseSpec, seed, clip: bool = True):
    """Noisy version of a float image in [0, 1], drawn with a stateless ``seed`` (shape [2]).

    Returns ``(noisy, sigma)`` where ``sigma`` is :func:`effective_sigma` of the noise drawn:
    it feeds the model's noise-level input during training.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    if spec.kind == "mixture":
        choice = tf.random.stateless_uniform([], seeds[0], 0, 4, dtype=tf.int32)
        branches = [
            (lambda k=k: _tf_noise(image, k, _uniform(seeds[1], *DEFAULT_RANGES[k]), seeds[2:]))
            for k in KINDS[:4]
        ]
        noisy, sigma = tf.switch_case(choice, branches)
    else:
        level = _uniform(seeds[1], spec.low, spec.high)
        noisy, sigma = _tf_noise(image, spec.kind, level, seeds[2:])
    if clip:
        noisy = tf.clip_by_value(noisy, 0.0, 1.0)
    return noisy, sigma


def _uniform(seed, low, high):
    import tensorflow as tf

    return tf.random.stateless_uniform([], seed, low, high, dtype=tf.float32)


def _tf_noise(image, kind, level, seeds):
    import tensorflow as tf

    sigma = effective_sigma(kind, level)
    if kind == "gaussian":
        return image + sigma * tf.random.stateless_normal(tf.shape(image), seeds[0]), sigma
    if kind == "poisson":
        counts = tf.random.stateless_poisson(tf.shape(image), seeds[0], image * level, dtype=tf.float32)
        return counts / level, sigma
    if kind == "speckle":
        noise = tf.random.stateless_normal(tf.shape(image), seeds[0]) * level
        return image + image * noise, sigma
    if kind == "camera":
        return _tf_camera(image, level, seeds[0]), sigma
    # salt-pepper: the same pixels flip in every channel, half to black and half to white.
    shape = tf.shape(image)[:2]
    hit = tf.random.stateless_uniform(shape, seeds[0]) < level
    salt = tf.random.stateless_uniform(shape, seeds[1]) < 0.5
    hit, salt = hit[..., None], salt[..., None]
    noisy = tf.where(hit, tf.where(salt, 1.0, 0.0), image)
    return noisy, sigma


def _tf_camera(image, peak, seed):
    """:func:`camera_noise` for a [0, 1] image (H, W, C) in TensorFlow."""
    import tensorflow as tf

    colour = image.shape[-1] == 3
    balance = tf.constant(WHITE_BALANCE if colour else (1.0,), tf.float32)
    raw = tf.clip_by_value(image, 0.0, 1.0) ** GAMMA / balance
    noise = tf.random.stateless_normal(tf.shape(raw), seed) * tf.sqrt(raw / peak + read_variance(peak))
    if colour:
        rows = tf.range(tf.shape(raw)[0])[:, None] % 2
        columns = tf.range(tf.shape(raw)[1])[None, :] % 2
        sites = tf.stack([(rows == 0) & (columns == 0), rows != columns, (rows == 1) & (columns == 1)], axis=-1)
        sparse = tf.pad(tf.where(sites, noise, 0.0), [[1, 1], [1, 1], [0, 0]], mode="REFLECT")
        kernels = tf.constant(np.stack([_RED_BLUE, _GREEN, _RED_BLUE], axis=-1)[..., None])
        noise = tf.nn.depthwise_conv2d(sparse[None], kernels, [1, 1, 1, 1], "VALID")[0]
    return tf.clip_by_value((raw + noise) * balance, 0.0, 1.0) ** (1.0 / GAMMA)
