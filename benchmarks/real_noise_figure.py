"""Crops of CC15 (real camera noise) before and after denoising: docs/real_noise_crops.png.

Four CC15 images, one from each camera and one at ISO 6400, each denoised whole (512 x 512) the
way benchmarks/real_noise.py measures it, then cut to a fixed 128 x 128 crop shown at 2x (nearest
neighbour). Columns: the noisy shot; ``denoise run``'s defaults before denoise.calibrate (the level
read by estimate_level); the defaults now (color-photo with its luma blended with gray-large's, told
calibrate.level_for's level); CBM3D told the image's RMS of
real - mean; the mean of about 500 shots (the truth). Each panel is titled with its PSNR against
the truth on that crop (and the level told).

  python benchmarks/real_noise_figure.py --datasets ../shared/datasets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import real_noise  # noqa: E402

# (image, top, left) of each 128 x 128 crop: leaf veins, an eye, a ruler on black, print on blue at ISO 6400
CROPS = (("5dmark3_iso3200_2", 200, 40), ("d600_iso3200_1", 20, 170), ("d800_iso1600_2", 200, 100),
         ("d800_iso6400_1", 100, 80))
SIZE = 128
SCALE = 2
COLUMNS = ("noisy input", "defaults before\n(estimate_level)", "defaults now\n(color-photo+gray-large)",
           "CBM3D told the RMS\nof real - mean", "mean of ~500 shots\n(the truth)")


def crop(image: np.ndarray, top: int, left: int) -> np.ndarray:
    return image[top: top + SIZE, left: left + SIZE]


def enlarge(image: np.ndarray) -> np.ndarray:
    """``SCALE`` x nearest neighbour: each pixel a block."""
    return np.repeat(np.repeat(image, SCALE, axis=0), SCALE, axis=1)


def panels(folder: Path) -> list[list[tuple[np.ndarray, str]]]:
    """Per crop, the five (crop, title) panels."""
    names = [name for name, _, _ in CROPS]
    noisy = [common.read_uint8(folder / f"{name}_real.png") for name in names]
    clean = [common.read_uint8(folder / f"{name}_mean.png") for name in names]
    denoiser = real_noise.Denoiser()
    with real_noise.before():
        before, before_told = denoiser.run(noisy)
    now, now_told = denoiser.run(noisy)
    truth = [real_noise.rms(n, c) for n, c in zip(noisy, clean)]
    bm3d = [real_noise.cbm3d(image, level) for image, level in zip(noisy, truth)]
    rows = []
    for number, (name, top, left) in enumerate(CROPS):
        reference = crop(clean[number], top, left)

        def panel(image, told=None, what="told"):
            part = crop(image, top, left)
            title = f"{common.psnr(reference, part):.2f} dB"
            return part, title if told is None else f"{title}, {what} {told:.1f}"

        rows.append([panel(noisy[number]), panel(before[number], before_told[number]),
                     panel(now[number], now_told[number]), panel(bm3d[number], truth[number], "RMS"),
                     (reference, "reference")])
    return rows


def draw(rows: list[list[tuple[np.ndarray, str]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    side = SIZE * SCALE / dpi  # inches: one image pixel, SCALE figure pixels
    left, gap, head, title = 1.0, 0.08, 0.55, 0.3
    width = left + len(COLUMNS) * side + (len(COLUMNS) - 1) * gap + 0.1
    height = head + len(rows) * (title + side) + 0.1
    figure = plt.figure(figsize=(width, height), dpi=dpi)
    for column, label in enumerate(COLUMNS):
        figure.text((left + column * (side + gap) + side / 2) / width, 1 - 0.08 / height, label,
                    ha="center", va="top", fontsize=11, fontweight="bold")
    for row, (cells, (name, top, corner)) in enumerate(zip(rows, CROPS)):
        bottom = height - head - row * (title + side) - title - side
        for column, (image, text) in enumerate(cells):
            axes = figure.add_axes(((left + column * (side + gap)) / width, bottom / height, side / width, side / height))
            axes.imshow(enlarge(image), interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(text, fontsize=10, pad=3)
            if column == 0:
                axes.set_ylabel(f"{name.replace('_', ' ')}\ncrop at ({top}, {corner})", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, required=True, help="the folder holding cc15/")
    parser.add_argument("--out", type=Path, default=common.REPO / "docs" / "real_noise_crops.png")
    args = parser.parse_args(argv)
    rows = panels(args.datasets / "cc15")
    for (name, _, _), cells in zip(CROPS, rows):
        print(name, " | ".join(text for _, text in cells), flush=True)
    draw(rows, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
