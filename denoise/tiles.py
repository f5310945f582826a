"""Cut images into overlapping tiles the model accepts, and blend the results back without seams.

Along each axis an image shorter than the tile is one tile, padded up to the model's size
multiple; a longer one is covered by the fewest tiles of at most the tile length, evenly spaced
on the model's size multiple, that overlap by at least ``2 * margin``.
Each tile's weight is 0 within ``margin / 2`` of an inner edge (where the network sees the
tile border instead of the image), rises linearly over the next ``margin`` and is 1 beyond; the blend
divides by the weights' sum, so wider overlaps blend as well. Image borders keep weight 1.
Because the grid is a product of two 1-D layouts, the weight sum is an outer product.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Axis:
    """The tiles along one axis: their start offsets and common length."""

    length: int  # the image's length
    tile: int  # every tile's length (>= length when there is a single tile)
    starts: tuple[int, ...]
    margin: int

    @property
    def extent(self) -> int:
        """How far the tiles reach: the length, or a little more, padded by mirroring."""
        return self.starts[-1] + self.tile

    def weights(self, index: int) -> np.ndarray:
        ramp = np.ones(self.tile, np.float32)
        if len(self.starts) == 1:
            return ramp
        distance = np.arange(self.tile, dtype=np.float32)
        rising = np.clip((distance - self.margin / 2 + 0.5) / self.margin, 0.0, 1.0)
        if index > 0:
            ramp = np.minimum(ramp, rising)
        if index < len(self.starts) - 1:
            ramp = np.minimum(ramp, rising[::-1])
        return ramp


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def layout(length: int, tile: int, multiple: int, margin: int, fixed: bool = False) -> Axis:
    """Tiles along an axis of ``length`` pixels; ``fixed`` forces every tile to be ``tile`` long."""
    if not fixed:
        tile = max(multiple, tile // multiple * multiple)
    if length <= tile:
        return Axis(length, tile if fixed else round_up(length, multiple), (0,), margin)
    margin = min(margin, tile // 4)
    count = -(-(length - tile) // (tile - 2 * margin)) + 1
    if not fixed:
        # The fewest tiles are kept, each shrunk to what still covers the axis: the model then
        # computes the overlaps and nothing more (a last tile pushed back to the edge would
        # recompute most of its neighbour).
        tile = min(tile, round_up(-(-(length + (count - 1) * 2 * margin) // count), multiple))
    step = -(-(length - tile) // (count - 1))  # even steps that reach the end
    aligned = round_up(step, multiple)
    if aligned <= tile - 2 * margin:
        # On the grid of the network's downsampling, a tile computes what the whole image
        # would away from its edges; the last tile may then reach a few pixels past the end.
        step = aligned
    return Axis(length, tile, tuple(index * step for index in range(count)), margin)


@dataclasses.dataclass(frozen=True)
class Grid:
    rows: Axis
    columns: Axis

    def __len__(self) -> int:
        return len(self.rows.starts) * len(self.columns.starts)

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.rows.tile, self.columns.tile

    def positions(self):
        for row_index, top in enumerate(self.rows.starts):
            for column_index, left in enumerate(self.columns.starts):
                yield row_index, column_index, top, left


def grid(height: int, width: int, tile: int, multiple: int, margin: int = 32, fixed: bool = False) -> Grid:
    return Grid(layout(height, tile, multiple, margin, fixed), layout(width, tile, multiple, margin, fixed))


def extract(image: np.ndarray, tiles: Grid):
    """Yield the tiles of ``image`` (H, W, C) one by one, each (th, tw, C), padded by mirroring."""
    height, width = tiles.tile_shape
    pad_h = max(0, tiles.rows.extent - image.shape[0])
    pad_w = max(0, tiles.columns.extent - image.shape[1])
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    for _, _, top, left in tiles.positions():
        yield image[top : top + height, left : left + width]


class Blender:
    """Accumulates denoised tiles in any order; :meth:`result` gives the blended image."""

    def __init__(self, tiles: Grid, channels: int):
        self.tiles = tiles
        self.positions = list(tiles.positions())
        self.remaining = len(self.positions)
        self.sum = None  # a single tile needs no weights
        if len(self.positions) > 1:
            height = max(tiles.rows.length, tiles.rows.extent)
            width = max(tiles.columns.length, tiles.columns.extent)
            self.sum = np.zeros((height, width, channels), np.float32)
            self.row_weight = np.zeros(height, np.float32)
            self.column_weight = np.zeros(width, np.float32)

    def add(self, index: int, tile: np.ndarray) -> None:
        row_index, column_index, top, left = self.positions[index]
        self.remaining -= 1
        if self.sum is None:
            self.single = tile
            return
        rows = self.tiles.rows.weights(row_index)
        columns = self.tiles.columns.weights(column_index)
        height, width = tile.shape[:2]
        self.sum[top : top + height, left : left + width] += tile * rows[:, None, None] * columns[None, :, None]

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def result(self) -> np.ndarray:
        height, width = self.tiles.rows.length, self.tiles.columns.length
        if self.sum is None:
            return self.single[:height, :width]
        # Each tile row / column contributes its 1-D weights once: the total is their outer product.
        for row_index, top in enumerate(self.tiles.rows.starts):
            self.row_weight[top : top + self.tiles.rows.tile] += self.tiles.rows.weights(row_index)
        for column_index, left in enumerate(self.tiles.columns.starts):
            self.column_weight[left : left + self.tiles.columns.tile] += self.tiles.columns.weights(column_index)
        # In place and one row block at a time: a 24-megapixel photo needs no second full copy.
        self.sum /= np.maximum(self.row_weight, 1e-8)[:, None, None]
        self.sum /= np.maximum(self.column_weight, 1e-8)[None, :, None]
        return self.sum[:height, :width]
