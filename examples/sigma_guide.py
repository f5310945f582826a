"""Draw docs/sigma_guide.png: what noise of sigma 5, 15, 25 and 50 looks like, and the result.

    python examples/sigma_guide.py

A crop of the synthetic example scene (examples/clean/), noisy by the protocol at each sigma
(top row) and denoised by the shipped grey model with --sigma auto (bottom row).
"""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from denoise.noise import NoiseSpec, add_noise_uint, seed_for

HERE = Path(__file__).resolve().parent
SIGMAS = (5, 15, 25, 50)


def main() -> None:
    clean = np.asarray(Image.open(HERE / "clean" / "shapes_grey_sigma25.png"))[40:168, 40:168]
    with tempfile.TemporaryDirectory() as scratch:
        noisy_dir, out_dir = Path(scratch) / "noisy", Path(scratch) / "out"
        noisy_dir.mkdir()
        for sigma in SIGMAS:
            rng = np.random.default_rng(seed_for(f"sigma{sigma}", 0))
            Image.fromarray(add_noise_uint(clean, NoiseSpec("gaussian", sigma, sigma), rng)).save(noisy_dir / f"{sigma:02d}.png")
        subprocess.run(["denoise", "run", str(noisy_dir), str(out_dir), "-q"], check=True)
        rows = [np.hstack([np.asarray(Image.open(folder / f"{sigma:02d}.png")) for sigma in SIGMAS])
                for folder in (noisy_dir, out_dir)]
    Image.fromarray(np.vstack(rows)).save(HERE.parent / "docs" / "sigma_guide.png")


if __name__ == "__main__":
    main()
