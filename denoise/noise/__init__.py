"""Noise: synthesis (the noise models of training, add-noise and the benchmark protocol), level
estimation, signal-dependent noise and its stabiliser, impulse removal and the pixel-shuffle mosaic.

The synthesis and estimation names most callers need are importable from here.
"""

from denoise.noise.estimate import SPREAD_RATIO, estimate_level, estimate_sigma
from denoise.noise.synthesis import (
    DEFAULT_RANGES, GAMMA, KINDS, NoiseSpec, add_noise, add_noise_tf, add_noise_uint, camera_noise, draw,
    effective_sigma, seed_for,
)

__all__ = [
    "DEFAULT_RANGES", "GAMMA", "KINDS", "NoiseSpec", "SPREAD_RATIO", "add_noise", "add_noise_tf", "add_noise_uint",
    "camera_noise", "draw", "effective_sigma", "estimate_level", "estimate_sigma", "seed_for",
]
