"""Tiling and blending: every pixel covered, weights sum to one, seamless reassembly."""

import numpy as np
import pytest

from denoise import tiles


@pytest.mark.parametrize("length,tile", [(1, 64), (63, 64), (64, 64), (65, 64), (1000, 256), (1024, 256)])
def test_layout_covers_the_axis(length, tile):
    axis = tiles.layout(length, tile, multiple=8, margin=32)
    assert axis.tile % 8 == 0
    assert axis.starts[0] == 0
    assert axis.starts[-1] + axis.tile >= length
    covered = np.zeros(max(length, axis.tile), bool)
    for start in axis.starts:
        covered[start : start + axis.tile] = True
    assert covered[:length].all()


@pytest.mark.parametrize("length", [600, 1000, 1025, 2049, 3000, 4000])
def test_layout_computes_little_more_than_the_overlaps(length):
    # The model's cost is the tiles' total length: the image plus the overlaps, plus at most one
    # size multiple per tile, never a last tile pushed back over its neighbour.
    axis = tiles.layout(length, 1024, multiple=16, margin=32)
    count = len(axis.starts)
    assert axis.tile <= 1024 and axis.tile % 16 == 0
    assert all(later - earlier <= axis.tile - 64 for earlier, later in zip(axis.starts, axis.starts[1:]))
    assert all(start % 16 == 0 for start in axis.starts)  # on the network's grid: no shift of its pooling
    assert length <= axis.extent < length + count * 16
    assert count * axis.tile < length + (count - 1) * 64 + count * 16
    assert count == -(-(length - 64) // (1024 - 64))  # no fewer 1024-long tiles could cover it


def test_identity_model_reassembles_the_image_exactly():
    image = np.random.default_rng(0).random((300, 517, 3)).astype(np.float32)
    grid = tiles.grid(300, 517, tile=128, multiple=8, margin=32)
    assert len(grid) > 1
    blender = tiles.Blender(grid, 3)
    for index, tile in enumerate(tiles.extract(image, grid)):
        blender.add(index, tile)
    assert blender.done
    np.testing.assert_allclose(blender.result(), image, atol=1e-6)


def test_small_image_is_one_padded_tile():
    image = np.ones((5, 7, 1), np.float32)
    grid = tiles.grid(5, 7, tile=512, multiple=4)
    assert len(grid) == 1 and grid.tile_shape == (8, 8)
    (tile,) = list(tiles.extract(image, grid))
    assert tile.shape == (8, 8, 1)


def test_fixed_size_model_gets_fixed_tiles():
    grid = tiles.grid(40, 20, tile=28, multiple=1, margin=32, fixed=True)
    assert grid.tile_shape == (28, 28)
    assert all(tile.shape == (28, 28, 1) for tile in tiles.extract(np.zeros((40, 20, 1), np.float32), grid))
