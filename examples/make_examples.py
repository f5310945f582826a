"""Make the bundled example images: synthetic scenes drawn here, with noise added by the protocol.

    python examples/make_examples.py        # rewrites examples/clean/ and examples/noisy/

Nothing is copied from elsewhere: every image is drawn from shapes, gradients and text with
Pillow, then corrupted with `denoise.noise` (fixed seeds, so the files are reproducible).
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from denoise.noise import NoiseSpec, add_noise_uint, seed_for

HERE = Path(__file__).resolve().parent


def scene(size: tuple[int, int], seed: int, colour: bool) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    background = np.stack([0.3 + 0.4 * x, 0.5 + 0.3 * y, 0.7 - 0.4 * x * y], axis=-1) * 255
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        left, top = rng.integers(0, width - 20), rng.integers(0, height - 20)
        box = (left, top, left + rng.integers(15, width // 3), top + rng.integers(15, height // 3))
        fill = tuple(int(value) for value in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill, outline=(0, 0, 0))
    for row in range(3):
        draw.text((8, 8 + 14 * row), f"denoise example {seed}.{row}", fill=(255, 255, 255))
    return image if colour else image.convert("L")


EXAMPLES = [
    ("shapes_grey_sigma15.png", (256, 192), False, 15),
    ("shapes_grey_sigma25.png", (256, 256), False, 25),
    ("shapes_colour_sigma25.png", (320, 240), True, 25),
    ("shapes_colour_sigma50.png", (240, 240), True, 50),
]


def main() -> None:
    for name, size, colour, sigma in EXAMPLES:
        clean = scene(size, seed=len(name) + sigma, colour=colour)
        (HERE / "clean").mkdir(exist_ok=True)
        (HERE / "noisy").mkdir(exist_ok=True)
        clean.save(HERE / "clean" / name)
        rng = np.random.default_rng(seed_for(name, 0))
        noisy = add_noise_uint(np.asarray(clean), NoiseSpec("gaussian", sigma, sigma), rng)
        Image.fromarray(noisy).save(HERE / "noisy" / name)


if __name__ == "__main__":
    main()
