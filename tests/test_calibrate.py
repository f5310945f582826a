"""calibrate.level_for: white noise is told what estimate_level says; noise spanning more than a
pixel (a camera's, demosaiced and noise-reduced) is told more than estimate_level reads on it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from denoise import calibrate
from denoise.noise import estimate_level

SIZE = 192


def picture(channels: int = 3) -> np.ndarray:
    """A smooth clean picture in [0, 1]: gradients, a disc and a bar, well inside 0-1."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    grey = 0.3 + 0.3 * rows + 0.15 * np.sin(4 * columns)
    grey += 0.15 * (((rows - 0.5) ** 2 + (columns - 0.4) ** 2) < 0.04)
    grey[20:40, 100:180] -= 0.15
    if channels == 1:
        return grey[..., None]
    return np.stack([grey, 0.9 * grey + 0.05, 1.1 * grey - 0.05], axis=-1)


def noisy(clean: np.ndarray, level: float, blur: float = 0.0, seed: int = 0) -> np.ndarray:
    """``clean`` with Gaussian noise of ``level`` (0-255 units) per pixel, blurred over ``blur``
    pixels (then scaled back to that level) for noise spanning more than a pixel."""
    noise = np.random.default_rng(seed).normal(size=clean.shape)
    if blur:
        noise = cv2.GaussianBlur(noise, (0, 0), blur).reshape(clean.shape)
        noise /= noise.std()
    return np.clip(clean + noise * level / 255.0, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("level", [5.0, 25.0])
def test_white_noise_is_told_what_estimate_level_reads(channels, level):
    image = noisy(picture(channels), level)
    assert not calibrate.spread(calibrate.features(image))
    assert calibrate.level_for(image) == pytest.approx(estimate_level(image))
    assert calibrate.level_for(image) == pytest.approx(level, rel=0.15)


@pytest.mark.parametrize("channels", [1, 3])
def test_noise_spanning_pixels_is_told_more_than_estimate_level_reads(channels):
    """Noise of RMS 8 blurred over a pixel and a half: its finest grain is gone, so the image reads
    low; the calibrated level is above that and above the per-pixel reading of the mosaic."""
    image = noisy(picture(channels), 8.0, blur=1.5)
    found = calibrate.features(image)
    assert calibrate.spread(found)
    assert found["s0"] < 4.0  # what the patch estimate sees: a fraction of the noise
    level = calibrate.level_for(image)
    assert level > estimate_level(image)
    assert 6.0 < level < 40.0


def test_stronger_noise_is_told_more():
    clean = picture()
    levels = [calibrate.level_for(noisy(clean, rms, blur=1.2, seed=3)) for rms in (4.0, 8.0, 16.0)]
    assert levels[0] < levels[1] < levels[2]


def test_clean_small_and_grey_images():
    assert calibrate.level_for(picture().astype(np.float32)) < 2.0
    tiny = noisy(np.full((20, 20, 3), 0.5), 10.0)
    assert calibrate.level_for(tiny) == pytest.approx(estimate_level(tiny))
    grey = noisy(picture(1), 10.0)[..., 0]  # (H, W) as well as (H, W, 1)
    assert calibrate.level_for(grey) == pytest.approx(calibrate.level_for(grey[..., None]))


def test_spread_noise_too_weak_to_tell_from_texture_keeps_estimate_level_and_the_white_route():
    """Grain of RMS 1 blurred over a pixel spans pixels, but reads under WEAKEST_SPREAD on the
    mosaic, as a clean photo's fine texture does: told estimate_level's reading, not routed."""
    weak = noisy(picture(), 1.0, blur=1.2, seed=4)
    found = calibrate.features(weak)
    assert calibrate.spread(found) and found["sm"] < calibrate.WEAKEST_SPREAD
    assert calibrate.read(weak) == (pytest.approx(estimate_level(weak)), False)
    strong = noisy(picture(), 8.0, blur=1.2, seed=4)
    level, routed = calibrate.read(strong)
    assert routed and level > estimate_level(strong)
