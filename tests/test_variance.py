"""Signal-dependent noise: telling it from Gaussian noise, and making it Gaussian."""

import numpy as np
import pytest

from conftest import brightness_steps
from denoise.noise import variance
from denoise.noise import NoiseSpec, add_noise_uint, estimate_sigma


def noisy(kind: str, level: float, seed: int = 0) -> np.ndarray:
    clean = np.round(brightness_steps() * 255).astype(np.uint8)
    return add_noise_uint(clean, NoiseSpec(kind, level, level), np.random.default_rng(seed)).astype(np.float32) / 255


def classified(pixels: np.ndarray) -> bool:
    function = variance.noise_function(pixels)
    return variance.is_signal_dependent(function, float(pixels.mean()), estimate_sigma(pixels) / 255)


@pytest.mark.parametrize("peak", [30, 100])
def test_photon_noise_is_found_and_its_function_grows_like_it(peak):
    pixels = noisy("poisson", peak)
    assert classified(pixels)
    a, b, c = variance.noise_function(pixels)
    assert c == 0  # photon noise, not multiplicative
    assert b < 0.3 * a * 0.25  # almost all of the variance grows with brightness
    assert 0.5 / peak < a < 1.5 / peak  # variance x / peak, give or take the free common scale


@pytest.mark.parametrize("level", [0.1, 0.2, 0.3])
def test_multiplicative_noise_is_told_from_photon_noise(level):
    """Speckle's standard deviation grows as brightness, photon noise's as its square root. At
    0.1 the image's overall reading (4.8) is under MIN_SIGMA: speckle is found all the same."""
    pixels = noisy("speckle", level)
    assert classified(pixels)
    a, b, c = variance.noise_function(pixels)
    assert a == 0 and c > 0
    assert variance.noise_function(pixels, "photon")[2] == 0  # --noise poisson
    assert variance.noise_function(noisy("poisson", 30), "multiplicative")[0] == 0  # --noise speckle


def test_faint_noise_is_left_gaussian_whatever_its_fit():
    """Below sigma 6 texture bends the fit too much to tell: Poisson noise of peak 3000."""
    assert not classified(noisy("poisson", 3000))


@pytest.mark.parametrize("kind,level", [("gaussian", 5), ("gaussian", 25), ("gaussian", 50), ("salt-pepper", 0.05)])
def test_gaussian_and_impulse_noise_are_not_taken_for_photon_noise(kind, level):
    assert not classified(noisy(kind, level))


def test_too_small_an_image_has_no_function():
    assert variance.noise_function(np.zeros((10, 300), np.float32)) is None
    assert not variance.is_signal_dependent(None, 0.5, 0.1)


@pytest.mark.parametrize("speckle", ["gaussian", "gamma"])
def test_multiplicative_noise_stabilized_has_one_level_and_its_inverse_is_unbiased(speckle):
    """Speckle of relative spread 0.2 (Gaussian) or 0.5 (gamma of 4 looks, as in radar and
    ultrasound): after the transform its spread is about the same at every brightness, and the
    inverse of the transformed mean, told that spread, gives back the clean value."""
    function = (0.0, 0.0, 0.04)
    rng = np.random.default_rng(0)
    spreads, means = [], []
    for clean in (0.1, 0.3, 0.6, 0.9):
        factor = 1 + rng.normal(0, 0.2, 200_000) if speckle == "gaussian" else rng.gamma(4, 1 / 4, 200_000)
        stabilized = variance.stabilize(clean * factor, function).astype(np.float64)
        spreads.append(np.std(stabilized))
        means.append((clean, stabilized.mean()))
    assert max(spreads) / min(spreads) < 1.1
    for clean, mean in means:
        restored = variance.unstabilize(np.array([mean]), function, spread=float(np.mean(spreads)))[0]
        assert restored == pytest.approx(clean, rel=0.02)
        assert variance.unstabilize(np.array([mean]), function)[0] < 0.99 * clean  # the bias it corrects


@pytest.mark.parametrize("function", [(1 / 30, 0.0), (1 / 100, 0.0004)])
def test_stabilized_noise_has_one_level_and_the_inverse_is_unbiased(function):
    """Poisson-Gaussian noise of variance a x + b: after the transform its spread is the same at
    every brightness, and the inverse of the transformed mean gives back the clean value."""
    a, b = function
    rng = np.random.default_rng(0)
    spreads = []
    for clean in (0.1, 0.3, 0.6, 0.9):
        samples = a * rng.poisson(clean / a, 200_000) + rng.normal(0, np.sqrt(b), 200_000)
        stabilized = variance.stabilize(samples, function).astype(np.float64)
        spreads.append(stabilized.std())
        restored = variance.unstabilize(np.array([stabilized.mean()]), function)[0]
        assert restored == pytest.approx(clean, rel=0.01, abs=0.002)
    assert max(spreads) / min(spreads) < 1.1 and all(0.9 < spread < 1.1 for spread in spreads)


@pytest.mark.parametrize("peak", [30, 100, 300])
def test_a_cameras_photon_count_is_read_off_its_green_sites_whichever_way_the_mosaic_lies(peak):
    clean = np.round(np.repeat(brightness_steps()[..., None], 3, axis=-1) * 255).astype(np.uint8)
    pixels = add_noise_uint(clean, NoiseSpec("camera", peak, peak), np.random.default_rng(0)).astype(np.float32) / 255
    assert variance.camera_peak(pixels) == pytest.approx(peak, rel=0.3)
    assert variance.camera_peak(pixels[1:, :]) == pytest.approx(variance.camera_peak(pixels), rel=0.1)  # GRBG


def test_an_image_without_whole_blocks_has_no_camera_peak():
    assert variance.camera_peak(np.zeros((20, 300, 3), np.float32)) is None
