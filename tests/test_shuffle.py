"""Pixel-shuffle down-sampling: four half-size phases side by side, and back without loss."""

import numpy as np
import pytest

from denoise.noise import shuffle


@pytest.mark.parametrize("height, width, channels", [(8, 6, 1), (7, 9, 3), (1, 1, 1), (2, 5, 3)])
def test_the_mosaic_puts_back_exactly(height, width, channels):
    image = np.random.default_rng(0).random((height, width, channels)).astype(np.float32)
    mosaic = shuffle.to_mosaic(image)
    assert mosaic.shape == (height + height % 2, width + width % 2, channels)
    np.testing.assert_array_equal(shuffle.from_mosaic(mosaic, height, width), image)


def test_each_quarter_is_one_phase_of_the_image():
    image = np.arange(4 * 6, dtype=np.float32).reshape(4, 6, 1)
    mosaic = shuffle.to_mosaic(image)
    np.testing.assert_array_equal(mosaic[:2, :3], image[0::2, 0::2])
    np.testing.assert_array_equal(mosaic[:2, 3:], image[0::2, 1::2])
    np.testing.assert_array_equal(mosaic[2:, :3], image[1::2, 0::2])
    np.testing.assert_array_equal(mosaic[2:, 3:], image[1::2, 1::2])


def test_noise_twice_as_wide_as_a_pixel_is_independent_again_in_the_mosaic():
    """What the models are for: in a 2x enlarged noise field, neighbours are alike; in each phase
    of the mosaic they are as unrelated as in the noise before it was enlarged."""
    noise = np.random.default_rng(1).normal(size=(128, 128))
    enlarged = np.kron(noise, np.ones((2, 2)))[..., None]

    def neighbour_correlation(field):
        return np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1]

    assert neighbour_correlation(enlarged[..., 0]) > 0.4
    assert abs(neighbour_correlation(shuffle.to_mosaic(enlarged)[:128, :128, 0])) < 0.05
