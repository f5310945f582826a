"""Salt-and-pepper noise: impulses found and filled, nothing else touched."""

import numpy as np
import pytest

from denoise.noise import impulses
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
def test_other_noise_has_almost_no_impulses_to_fill(kind, level):
    noisy = with_noise(smooth(3), kind, level)
    filled, count = impulses.remove(noisy)
    assert count <= 0.001 * noisy.size
    assert np.abs(filled - noisy).mean() < 1e-4


def test_lines_one_pixel_thin_and_saturated_areas_are_kept_but_their_ends_and_corners():
    """One-pixel lines, black on white and white on black, and a blown-out area: only the end
    pixels of the lines and the corner pixels of the area can look like specks."""
    picture = smooth(1, 128)
    picture[40:90, 30:100] = 1.0
    corners = {(40, 30), (40, 99), (89, 30), (89, 99)}
    lines = np.ones((128, 128, 1), np.float32)
    lines[4:40:6, 10:120] = 0.0  # rows of lines, like strokes of text
    lines[44:80, 10:120:6] = 0.0  # columns of lines
    lines[np.arange(84, 124), np.arange(40, 80)] = 0.0  # a diagonal
    ends = {(row, column) for row in range(4, 40, 6) for column in (10, 119)}
    ends |= {(row, column) for row in (44, 79) for column in range(10, 120, 6)} | {(84, 40), (123, 79)}
    for image, allowed in ((picture, corners), (lines, ends), (1.0 - lines, ends)):
        filled, _ = impulses.remove(image)
        changed = {tuple(index) for index in np.argwhere(filled[..., 0] != image[..., 0])}
        assert changed <= allowed
