"""Noise models, shared by training (TensorFlow, on the fly), `add-noise` and `eval` (NumPy).

Levels are given per noise type:

- ``gaussian``: standard deviation in 0-255 grey levels (e.g. 25).
- ``poisson``: peak photon count of a white pixel (lower is noisier, e.g. 30).
- ``salt-pepper``: fraction of pixels replaced by black or white (e.g. 0.05).
- ``speckle``: standard deviation of the multiplicative factor (e.g. 0.2).
- ``mixture``: each image draws one of the four types above, with its level drawn from the
  type's default range scaled into the given range's position (see :data:`DEFAULT_RANGES`).

A level may be a single number ``25`` or a range ``10:50`` from which each image draws uniformly.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

KINDS = ("gaussian", "poisson", "salt-pepper", "speckle", "mixture")

# Ranges used by ``mixture`` for each component and as the default level of each type.
DEFAULT_RANGES = {
    "gaussian": (5.0, 50.0),
    "poisson": (10.0, 100.0),
    "salt-pepper": (0.01, 0.1),
    "speckle": (0.05, 0.3),
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
        if self.low > self.high or self.low < 0:
            raise ValueError(f"invalid noise level range {self.low}:{self.high}")

    @classmethod
    def parse(cls, kind: str, level: str | float | None) -> "NoiseSpec":
        """Build a spec from a type name and a level such as ``25`` or ``10:50`` (None: default)."""
        if level is None or level == "":
            low, high = DEFAULT_RANGES.get(kind, (0.0, 1.0))
        elif isinstance(level, str) and ":" in level:
            low_text, high_text = level.split(":", 1)
            low, high = float(low_text), float(high_text)
        else:
            low = high = float(level)
        return cls(kind, low, high)

    def describe(self) -> str:
        level = f"{self.low:g}" if self.low == self.high else f"{self.low:g}:{self.high:g}"
        return f"{self.kind} {level}"


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
    kind, level = spec.kind, rng.uniform(spec.low, spec.high) if spec.high > spec.low else spec.low
    if kind == "mixture":
        kind = KINDS[rng.integers(0, 4)]
        lo, hi = DEFAULT_RANGES[kind]
        level = rng.uniform(lo, hi)
    if kind == "gaussian":
        return x + rng.normal(0.0, level, size=x.shape)
    if kind == "poisson":
        return rng.poisson(np.clip(x, 0, None) / peak * level) / level * peak
    if kind == "speckle":
        return x + x * rng.normal(0.0, level, size=x.shape)
    # salt-pepper: the same pixels flip in every channel, half to black and half to white.
    hit = rng.random(x.shape[:2]) < level
    salt = rng.random(x.shape[:2]) < 0.5
    out = x.copy()
    out[hit & salt] = peak
    out[hit & ~salt] = 0.0
    return out


def estimate_sigma(image: np.ndarray) -> float:
    """Estimate the Gaussian noise level of an image in [0, 1], in 0-255 units.

    Robust median estimator on the finest diagonal Haar wavelet band (Donoho and Johnstone),
    taken per channel and averaged. Image structure raises the median a little, so very clean
    images read a few grey levels rather than 0.
    """
    pixels = np.asarray(image, np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    if height < 2 or width < 2:
        return 0.0
    blocks = pixels[:height, :width]
    diagonal = (blocks[0::2, 0::2] - blocks[0::2, 1::2] - blocks[1::2, 0::2] + blocks[1::2, 1::2]) / 2.0
    per_channel = np.median(np.abs(diagonal.reshape(-1, pixels.shape[-1])), axis=0) / 0.6745
    return float(np.mean(per_channel) * 255.0)


# --------------------------------------------------------------------------------------------
# TensorFlow: noise drawn on the fly inside tf.data during training, images in [0, 1].
# --------------------------------------------------------------------------------------------


def add_noise_tf(image, spec: NoiseSpec, seed, clip: bool = True):
    """Noisy version of a float image in [0, 1], drawn with a stateless ``seed`` (shape [2]).

    Returns ``(noisy, sigma)`` where ``sigma`` is the effective Gaussian-equivalent noise level
    in [0, 1] units: it feeds the model's noise-level input during training.
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

    return tf.random.stateless_uniform([], seed, low, high + 1e-9, dtype=tf.float32)


def _tf_noise(image, kind, level, seeds):
    import tensorflow as tf

    if kind == "gaussian":
        sigma = level / 255.0
        return image + sigma * tf.random.stateless_normal(tf.shape(image), seeds[0]), sigma
    if kind == "poisson":
        counts = tf.random.stateless_poisson(tf.shape(image), seeds[0], image * level)
        # A Poisson image of peak p has std sqrt(x p)/p; report it at mid-grey.
        return tf.cast(counts, tf.float32) / level, tf.sqrt(0.5 / level)
    if kind == "speckle":
        noise = tf.random.stateless_normal(tf.shape(image), seeds[0]) * level
        return image + image * noise, level * 0.5
    shape = tf.shape(image)[:2]
    hit = tf.random.stateless_uniform(shape, seeds[0]) < level
    salt = tf.random.stateless_uniform(shape, seeds[1]) < 0.5
    hit, salt = hit[..., None], salt[..., None]
    noisy = tf.where(hit, tf.where(salt, 1.0, 0.0), image)
    return noisy, tf.sqrt(level * 0.25)
