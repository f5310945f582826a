"""Each noise type has the statistics it claims, in NumPy (add-noise, eval) and in TensorFlow
(training, on the fly), and the level options parse and fail as documented."""

from __future__ import annotations

import numpy as np
import pytest

from denoise.noise import (
    DEFAULT_RANGES,
    KINDS,
    NoiseSpec,
    add_noise,
    add_noise_tf,
    add_noise_uint,
    draw,
    effective_sigma,
    estimate_level,
    estimate_sigma,
    seed_for,
)
from denoise.noise.estimate import _gamma_quantile, _weak_texture_threshold

GREY = 100.0  # a mid-grey level (0-255) far enough from 0 and 255 for nothing to clip
SIZE = 256


def flat(value: float = GREY, channels: int = 1) -> np.ndarray:
    return np.full((SIZE, SIZE, channels), value)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- NumPy ----------------------------------------------------------------------------------


def test_gaussian_has_zero_mean_and_sigma():
    noise = add_noise(flat(), NoiseSpec("gaussian", 25, 25), rng()) - GREY
    assert abs(noise.mean()) < 0.2
    assert noise.std() == pytest.approx(25, rel=0.01)


def test_poisson_is_unbiased_with_variance_of_the_photon_count():
    peak = 30.0
    noisy = add_noise(flat(), NoiseSpec("poisson", peak, peak), rng())
    assert noisy.mean() == pytest.approx(GREY, rel=0.01)
    # counts ~ Poisson(x / 255 * peak), scaled back by 255 / peak: variance x * 255 / peak.
    assert noisy.var() == pytest.approx(GREY * 255 / peak, rel=0.03)


def test_salt_and_pepper_hits_the_fraction_half_white_half_black_in_every_channel():
    noisy = add_noise(flat(channels=3), NoiseSpec("salt-pepper", 0.1, 0.1), rng())
    white = (noisy == 255).all(axis=-1)
    black = (noisy == 0).all(axis=-1)
    untouched = (noisy == GREY).all(axis=-1)
    assert (white | black | untouched).all()  # no pixel is hit in only some channels
    assert (white | black).mean() == pytest.approx(0.1, abs=0.005)
    assert white.sum() / (white | black).sum() == pytest.approx(0.5, abs=0.03)


def test_speckle_is_multiplicative():
    for value in (50.0, 150.0):
        noise = add_noise(flat(value), NoiseSpec("speckle", 0.2, 0.2), rng()) - value
        assert abs(noise.mean()) < 0.01 * value
        assert noise.std() == pytest.approx(0.2 * value, rel=0.02)


def neighbour_correlation(noise: np.ndarray) -> float:
    return float(np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1])


def test_camera_noise_is_stronger_in_red_and_blue_and_spans_two_pixels_in_colour_only():
    colour = add_noise(flat(channels=3), NoiseSpec("camera", 100, 100), rng()) - GREY
    spread = colour.std(axis=(0, 1))
    assert spread[0] > 1.2 * spread[1] and spread[2] > 1.2 * spread[1]  # white balance: red x2.0, blue x1.7
    assert all(neighbour_correlation(colour[..., channel]) > 0.3 for channel in range(3))  # demosaiced
    grey = add_noise(flat(), NoiseSpec("camera", 100, 100), rng())[..., 0] - GREY  # no mosaic
    assert abs(neighbour_correlation(grey)) < 0.03
    # Photon noise grows with brightness in the raw values, but the gamma stretches the shadows
    # more: in the image, shadows are noisier than highlights. Fewer photons are noisier.
    shadow = add_noise(flat(20.0), NoiseSpec("camera", 100, 100), rng()) - 20.0
    highlight = add_noise(flat(200.0), NoiseSpec("camera", 100, 100), rng()) - 200.0
    dim = add_noise(flat(), NoiseSpec("camera", 25, 25), rng()) - GREY
    assert shadow.std() > 1.3 * highlight.std() and dim.std() > 1.5 * grey.std()


def test_mixture_draws_every_type_from_its_default_range():
    generator = rng()
    drawn = [draw(NoiseSpec("mixture", 0, 0), generator) for _ in range(400)]
    assert {kind for kind, _ in drawn} == set(KINDS[:4])
    for kind, level in drawn:
        low, high = DEFAULT_RANGES[kind]
        assert low <= level <= high


def test_a_range_draws_a_level_per_image_uniformly():
    generator = rng()
    levels = [draw(NoiseSpec("gaussian", 10, 50), generator)[1] for _ in range(2000)]
    assert 10 <= min(levels) < 11 and 49 < max(levels) <= 50
    assert np.mean(levels) == pytest.approx(30, abs=1)
    stds = [np.std(add_noise(flat(), NoiseSpec("gaussian", 10, 50), rng(seed)) - GREY) for seed in range(20)]
    assert 10 * 0.98 < min(stds) and max(stds) < 50 * 1.02 and np.std(stds) > 5


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_images_keep_dtype_and_levels_stay_in_8_bit_units(dtype):
    peak = np.iinfo(dtype).max
    image = np.full((SIZE, SIZE), peak * GREY / 255.0, dtype=np.float64).round().astype(dtype)
    noisy = add_noise_uint(image, NoiseSpec("gaussian", 25, 25), rng())
    assert noisy.dtype == dtype
    assert (noisy.astype(float) - image).std() * 255 / peak == pytest.approx(25, rel=0.02)
    clipped = add_noise_uint(np.full((64, 64), peak, dtype), NoiseSpec("gaussian", 50, 50), rng())
    assert clipped.max() == peak and clipped.min() >= 0


def test_the_same_seed_gives_the_same_noise():
    spec = NoiseSpec("mixture", 0, 0)
    image = flat().astype(np.uint8)
    first = add_noise_uint(image, spec, rng(seed_for("a.png", 3)))
    assert np.array_equal(first, add_noise_uint(image, spec, rng(seed_for("a.png", 3))))
    assert seed_for("a.png", 3) != seed_for("b.png", 3) != seed_for("a.png", 4)


# --- Estimating sigma (--sigma auto) -------------------------------------------------------


def textured(size: int = 128, channels: int = 1) -> np.ndarray:
    """A clean uint8 image: smooth shading on the left, the same plus a fine random texture
    (std 8 grey levels, like sand or film grain) on the right. Patch PCA alone reads that
    texture as noise: the estimator before weak-texture selection said 7.5 at sigma 5."""
    y, x = np.mgrid[0:size, 0:size] / size
    smooth = 70 + 110 * x + 30 * np.sin(3 * y)
    texture = np.random.default_rng(7).normal(0.0, 8.0, (size, size))
    image = smooth + np.where(x > 0.5, texture, 0.0)
    image = np.repeat(image[..., None], channels, axis=-1)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def noisy_unit(clean: np.ndarray, spec: NoiseSpec, seed: int = 0) -> np.ndarray:
    """The protocol's noisy uint8 image, as the pipeline hands it over: float32 in [0, 1]."""
    return add_noise_uint(clean, spec, rng(seed)).astype(np.float32) / 255.0


@pytest.mark.parametrize("sigma", [5, 25])
@pytest.mark.parametrize("size, channels", [(128, 1), (96, 3)])
def test_estimate_sigma_is_within_15_percent_on_a_textured_image(sigma, size, channels):
    image = noisy_unit(textured(size, channels), NoiseSpec("gaussian", sigma, sigma))
    assert estimate_sigma(image) == pytest.approx(sigma, rel=0.15)


@pytest.mark.parametrize("channels", [1, 3])
def test_estimate_level_reads_noise_spanning_two_pixels_on_every_other_pixel(channels):
    clean = textured(128, channels)
    independent = noisy_unit(clean, NoiseSpec("gaussian", 25, 25))
    assert estimate_level(independent) == estimate_sigma(independent)  # the same on the half-size images
    # Independent noise of sigma 25 shared with its neighbours (a 3x3 binomial blur, about what
    # demosaicing does), scaled back to 25 per pixel: the image's patches take most of it for texture.
    noise = np.random.default_rng(3).normal(0.0, 1.0, clean.shape)
    padded = np.pad(noise, ((1, 1), (1, 1), (0, 0))[: noise.ndim], mode="reflect")
    weights = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    spread = sum(weights[dy, dx] * padded[dy : dy + 128, dx : dx + 128] for dy in range(3) for dx in range(3))
    grainy = (clean + spread / spread.std() * 25.0) / 255.0
    assert estimate_sigma(grainy) < 0.6 * 25
    assert estimate_level(grainy) == pytest.approx(25, rel=0.25)


@pytest.mark.parametrize("quality", [95, 90, 75])
def test_estimate_sigma_reads_the_noise_a_colour_jpeg_was_saved_with(quality):
    """JPEG subsamples and coarsely quantises the chroma: the channels pooled keep about two
    thirds of the noise, the luminance keeps its own; the level the models want is the latter."""
    import io

    from PIL import Image

    y, x = np.mgrid[0:128, 0:128]
    clean = np.stack([120 + 70 * np.sin(x / 9) * np.cos(y / 7), 100 + 50 * np.cos(x / 11), 130 + 70 * np.sin(y / 8)], -1)
    noisy = add_noise_uint(np.round(clean).astype(np.uint8), NoiseSpec("gaussian", 25, 25), rng(0))
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=quality)
    pixels = np.asarray(Image.open(buffer), np.float32) / 255.0
    assert estimate_sigma(pixels) == pytest.approx(25, rel=0.15)


def test_estimate_sigma_leaves_out_clipped_black_areas():
    y, x = np.mgrid[0:128, 0:128] / 128
    clean = np.where(x < 0.6, 4, 110 + 60 * y).round().astype(np.uint8)  # 60% near black
    for sigma in (5, 25, 50):
        assert estimate_sigma(noisy_unit(clean, NoiseSpec("gaussian", sigma, sigma))) == pytest.approx(sigma, rel=0.15)


def test_estimate_sigma_of_clean_images_is_about_zero():
    assert estimate_sigma(np.full((96, 96, 1), 0.4, np.float32)) == 0.0
    assert estimate_sigma(np.full((96, 96, 3), 1.0, np.float32)) == 0.0
    assert estimate_sigma(textured().astype(np.float32) / 255.0) < 1.0  # texture is not noise
    assert estimate_sigma(np.zeros((5, 5), np.float32)) == 0.0  # smaller than a patch


def test_estimate_sigma_is_deterministic_and_takes_grey_as_2d_or_3d():
    image = noisy_unit(textured(), NoiseSpec("gaussian", 15, 15))
    first = estimate_sigma(image)
    assert isinstance(first, float)
    assert estimate_sigma(image.copy()) == first
    assert estimate_sigma(image[..., 0]) == first
    assert estimate_sigma(image.astype(np.float64)) == pytest.approx(first, rel=1e-6)


def test_estimate_sigma_gives_salt_and_pepper_noise_its_rms():
    clean = textured()
    noisy = add_noise_uint(clean, NoiseSpec("salt-pepper", 0.05, 0.05), rng(3))
    rms = np.sqrt(np.mean((noisy.astype(float) - clean) ** 2))
    assert estimate_sigma(noisy.astype(np.float32) / 255.0) == pytest.approx(rms, rel=0.15)


def test_gamma_quantile_matches_known_values():
    assert _gamma_quantile(0.5, 1.0) == pytest.approx(np.log(2.0), rel=1e-9)  # exponential
    assert _gamma_quantile(0.99, 1.0) == pytest.approx(np.log(100.0), rel=1e-9)
    assert 2 * _gamma_quantile(0.99, 5.0) == pytest.approx(23.2093, abs=1e-4)  # chi-square, 10 dof
    assert 2 * _gamma_quantile(0.05, 10.0) == pytest.approx(10.8508, abs=1e-4)  # chi-square, 20 dof
    # 7x7 patches: rank 45 and trace 35 for the two central-difference operators
    assert _weak_texture_threshold(7, 0.99) == pytest.approx(_gamma_quantile(0.99, 22.5) * 70 / 45)


# --- TensorFlow -----------------------------------------------------------------------------


def tf_noise(spec: NoiseSpec, value: float = GREY / 255.0, channels: int = 1, seed=(1, 2)):
    import tensorflow as tf

    image = tf.fill([SIZE, SIZE, channels], np.float32(value))
    noisy, sigma = add_noise_tf(image, spec, tf.constant(seed, tf.int64), clip=False)
    return noisy.numpy().astype(np.float64), float(sigma)


def test_tf_gaussian_matches_the_numpy_statistics_and_reports_sigma():
    noisy, sigma = tf_noise(NoiseSpec("gaussian", 25, 25))
    assert abs(noisy.mean() - GREY / 255) < 0.2 / 255
    assert noisy.std() * 255 == pytest.approx(25, rel=0.01)
    assert sigma == pytest.approx(25 / 255)


def test_tf_poisson_speckle_and_salt_pepper_statistics():
    x = GREY / 255.0
    noisy, sigma = tf_noise(NoiseSpec("poisson", 30, 30))
    assert noisy.mean() == pytest.approx(x, rel=0.01)
    assert noisy.var() == pytest.approx(x / 30, rel=0.03)
    assert sigma == pytest.approx(effective_sigma("poisson", 30), rel=1e-6)

    noisy, sigma = tf_noise(NoiseSpec("speckle", 0.2, 0.2))
    assert noisy.mean() == pytest.approx(x, rel=0.01)
    assert noisy.std() == pytest.approx(0.2 * x, rel=0.02)
    assert sigma == pytest.approx(0.1)

    noisy, sigma = tf_noise(NoiseSpec("salt-pepper", 0.05, 0.05), channels=3)
    white, black = (noisy == 1).all(axis=-1), (noisy == 0).all(axis=-1)
    assert ((noisy == 1) | (noisy == 0) | np.isclose(noisy, x)).all()
    assert (white | black).mean() == pytest.approx(0.05, abs=0.004)
    assert sigma == pytest.approx(effective_sigma("salt-pepper", 0.05), rel=1e-6)


def test_tf_camera_noise_has_the_numpy_statistics():
    spec = NoiseSpec("camera", 50, 50)
    noisy, sigma = tf_noise(spec, channels=3)
    expected = add_noise(flat(channels=3), spec, rng()) / 255.0
    np.testing.assert_allclose(noisy.std(axis=(0, 1)), expected.std(axis=(0, 1)), rtol=0.05)
    np.testing.assert_allclose(noisy.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), rtol=0.01)
    assert neighbour_correlation(noisy[..., 1]) == pytest.approx(neighbour_correlation(expected[..., 1]), abs=0.05)
    assert sigma == pytest.approx(effective_sigma("camera", 50), rel=1e-6)
    grey, _ = tf_noise(spec)
    assert grey.std() == pytest.approx((add_noise(flat(), spec, rng()) / 255.0).std(), rel=0.05)


def test_tf_noise_is_stateless_clipped_and_a_range_varies_per_seed():
    a, _ = tf_noise(NoiseSpec("gaussian", 50, 50), seed=(0, 7))
    b, _ = tf_noise(NoiseSpec("gaussian", 50, 50), seed=(0, 7))
    c, _ = tf_noise(NoiseSpec("gaussian", 50, 50), seed=(0, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    sigmas = {round(tf_noise(NoiseSpec("gaussian", 10, 50), seed=(0, i))[1] * 255, 3) for i in range(8)}
    assert len(sigmas) == 8 and all(10 <= s <= 50 for s in sigmas)

    import tensorflow as tf

    image = tf.fill([64, 64, 1], 0.9)
    clipped, _ = add_noise_tf(image, NoiseSpec("gaussian", 75, 75), tf.constant([0, 1], tf.int64), clip=True)
    assert 0.0 <= float(tf.reduce_min(clipped)) and float(tf.reduce_max(clipped)) == 1.0


def test_tf_mixture_draws_several_types():
    kinds = set()
    for index in range(24):
        noisy, sigma = tf_noise(NoiseSpec("mixture", 0, 0), seed=(5, index))
        kinds.add("salt-pepper" if ((noisy == 0) | (noisy == 1)).mean() > 0.005 else round(sigma, 6))
    assert len(kinds) >= 3


# --- Levels ---------------------------------------------------------------------------------


def test_parse_levels_and_defaults():
    assert NoiseSpec.parse("gaussian", "25") == NoiseSpec("gaussian", 25, 25)
    assert NoiseSpec.parse("gaussian", "10:50") == NoiseSpec("gaussian", 10, 50)
    assert NoiseSpec.parse("poisson", None) == NoiseSpec("poisson", *DEFAULT_RANGES["poisson"])
    assert NoiseSpec.parse("gaussian", "10:50").describe() == "gaussian 10:50"


@pytest.mark.parametrize(
    "kind, level, message",
    [
        ("gaussian", "abc", "not a number"),
        ("gaussian", "50:10", "invalid noise level range"),
        ("gaussian", "-5", "invalid noise level range"),
        ("poisson", "0:10", "above 0"),
        ("camera", "0", "above 0"),
        ("salt-pepper", "0.5:2", "within 0:1"),
        ("blur", "1", "unknown noise type"),
    ],
)
def test_bad_levels_are_refused_with_a_reason(kind, level, message):
    with pytest.raises(ValueError, match=message):
        NoiseSpec.parse(kind, level)


def test_effective_sigma_is_the_noise_std_at_mid_grey():
    generator = rng()
    mid = flat(127.5)
    for kind, level in (("gaussian", 25), ("poisson", 20), ("speckle", 0.3), ("salt-pepper", 0.1), ("camera", 100)):
        noisy = add_noise(mid, NoiseSpec(kind, level, level), generator)
        assert (noisy - mid).std() / 255 == pytest.approx(effective_sigma(kind, level), rel=0.05), kind
