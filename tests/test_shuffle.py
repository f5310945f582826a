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


def test_the_pattern_of_phases_denoised_apart_is_cleared_and_smooth_images_are_left_alone():
    """Four phases each off by its own slowly varying amount -- what denoising them apart leaves --
    come back as a flat image; a smooth image and a flat one pass unchanged."""
    rows, columns = np.mgrid[0:96, 0:128].astype(np.float32)
    smooth = (0.5 + 0.3 * np.sin(rows / 15.0) * np.cos(columns / 11.0))[..., None].repeat(3, axis=-1)
    assert np.abs(shuffle.clear_pattern(smooth) - smooth)[8:-8, 8:-8].max() < 2e-3
    flat = np.full((40, 50, 1), 0.4, np.float32)
    np.testing.assert_array_equal(shuffle.clear_pattern(flat), flat)
    offsets = 0.02 * np.sin(np.arange(4)[:, None, None] + rows[::2, ::2][None] / 20.0)  # per phase, slowly varying
    patterned = np.full((96, 128, 1), 0.4, np.float32)
    for phase, (row, column) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        patterned[row::2, column::2, 0] += offsets[phase]
    common = 0.4 + offsets.mean(axis=0).repeat(2, axis=0).repeat(2, axis=1)[..., None]  # what the phases share
    before, after = np.abs(patterned - common), np.abs(shuffle.clear_pattern(patterned) - common)
    assert before[8:-8, 8:-8].mean() > 0.01 and after[8:-8, 8:-8].mean() < 0.05 * before[8:-8, 8:-8].mean()
