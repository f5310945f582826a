"""Salt-and-pepper noise: impulses found and filled, nothing else touched."""

import numpy as np
import pytest

from denoise import impulses
from denoise.noise import NoiseSpec, add_noise_uint


def smooth(channels: int = 1, size: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    plane = 0.5 + 0.3 * np.sin(x / 11.0) * np.cos(y / 7.0)
    return np.repeat(plane[..., None], channels, axis=-1).astype(np.float32)


def with_noise(clean: np.ndarray, kind: str, level: float) -> np.ndarray:
    array = np.round(clean * 255).astype(np.uint8)
    return (add_noise_uint(array, NoiseSpec(kind, level, level), np.random.default_rng(0)) / 255.0).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_salt_and_pepper_is_filled_from_the_neighbours(channels, fraction):
    clean = smooth(channels)
    noisy = with_noise(clean, "salt-pepper", fraction)
    before = noisy.copy()
    filled, count = impulses.remove(noisy)
    np.testing.assert_array_equal(noisy, before)  # the input is not modified
    hit = np.any(noisy != np.round(clean * 255) / 255, axis=-1)
    assert count >= 0.9 * hit.sum() * channels
    untouched = ~hit
    np.testing.assert_array_equal(filled[untouched], noisy[untouched])  # only impulses change
    assert np.abs(filled - clean)[hit].mean() < 0.02 + 0.05 * fraction


@pytest.mark.parametrize("kind,level", [("gaussian", 50), ("gaussian", 25), ("poisson", 10)])
def test_other_noise_is_not_taken_for_impulses(kind, level):
    assert impulses.remove(with_noise(smooth(3), kind, level)) is None


def test_saturated_areas_and_a_few_stars_are_kept():
    """Blown highlights (a white area) and isolated saturated stars on a dark sky (0.05% of
    the pixels) are picture, not noise."""
    picture = smooth(1, 256)
    picture[40:90, 100:200] = 1.0
    rng = np.random.default_rng(1)
    stars = rng.choice(256 * 256, size=32, replace=False)
    sky = np.full((256, 256, 1), 0.05, np.float32)
    sky.reshape(-1)[stars] = 1.0
    assert impulses.remove(picture) is None
    assert impulses.remove(sky) is None
