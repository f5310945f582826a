"""Measure denoising quality on clean images by the project's protocol.

Protocol: clean uint8 image -> add noise with a fixed per-image seed (derived from the file name
and ``--seed``) -> round -> clip -> save as PNG -> ``denoise run`` sees only that file ->
PSNR (peak 255) and SSIM (Gaussian window 11, sigma 1.5, data range 255) of the uint8 output
against the uint8 clean image, averaged over images.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from denoise import io
from denoise.noise import NoiseSpec, add_noise_uint, seed_for
from denoise.settings import Inference


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    clean: tuple[Path, ...]
    noise: NoiseSpec = NoiseSpec("gaussian", 25.0, 25.0)  # the noise added to the clean images
    inference: Inference = Inference()  # how the noisy copies are denoised (its sigma and noise: what the run is told)
    seed: int = 0
    denoised: Path | None = None  # score these outputs instead of running the model


def psnr(clean: np.ndarray, test: np.ndarray) -> float:
    error = np.mean((clean.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim(clean: np.ndarray, test: np.ndarray) -> float:
    import tensorflow as tf

    a = tf.constant(_hwc(clean), tf.float32)
    b = tf.constant(_hwc(test), tf.float32)
    if min(a.shape[0], a.shape[1]) < 11:  # smaller than the SSIM window
        return float("nan")
    return float(tf.image.ssim(a, b, max_val=255.0))


def _hwc(array: np.ndarray) -> np.ndarray:
    return array[..., None] if array.ndim == 2 else array


def load_uint8(path: Path) -> np.ndarray:
    """A clean image as uint8 (H, W) or (H, W, 3), as the protocol scores it."""
    decoded = io.read_image(path)
    array = np.round(decoded.pixels * 255.0).astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array


def make_noisy(clean: list[tuple[Path, Path]], folder: Path, noise: NoiseSpec, seed: int) -> list[dict]:
    """Write the protocol's noisy PNG for each ``(path, relative name)`` into ``folder``; return
    the images that could not be read (``image``, ``reason``), which are left out."""
    from PIL import Image

    failed = []
    for path, relative in clean:
        try:
            array = load_uint8(path)
        except io.ImageError as error:
            failed.append({"image": io.shown(path), "reason": str(error)})
            continue
        noisy = add_noise_uint(array, noise, np.random.default_rng(seed_for(path.name, seed)))
        target = (folder / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(target)
    return failed


def evaluate(options: EvalOptions) -> dict:
    """Score per image and on average: the noisy input and the denoised output."""
    from denoise.pipeline import run_batch
    from denoise.plan import RunOptions

    files = list(io.iter_inputs(list(options.clean)))
    if not files:
        raise ValueError("no clean images found")
    with tempfile.TemporaryDirectory(prefix="denoise-eval-") as scratch:
        noisy_dir = Path(scratch) / "noisy"
        failed = make_noisy(files, noisy_dir, options.noise, options.seed)
        unread = {entry["image"] for entry in failed}
        files = [(path, relative) for path, relative in files if io.shown(path) not in unread]
        if not files:
            raise ValueError(f"none of the {len(unread)} clean images could be read")
        denoised_dir = options.denoised
        if denoised_dir is None:
            denoised_dir = Path(scratch) / "denoised"
            run_batch(RunOptions(inputs=(noisy_dir,), output=denoised_dir, inference=options.inference, quiet=True))
        rows = [_score(path, relative, noisy_dir, denoised_dir) for path, relative in files]
    return {"noise": options.noise.describe(), "seed": options.seed, "images": rows, "mean": _means(rows),
            "failed": failed}


def _score(path: Path, relative: Path, noisy_dir: Path, denoised_dir: Path) -> dict:
    clean = load_uint8(path)
    noisy = load_uint8((noisy_dir / relative).with_suffix(".png"))
    row = {"image": str(relative), "noisy_psnr": psnr(clean, noisy), "noisy_ssim": ssim(clean, noisy)}
    candidates = [denoised_dir / relative, (denoised_dir / relative).with_suffix(".png")]
    output = next((candidate for candidate in candidates if candidate.exists()), None)
    if output is None:
        row["error"] = "no denoised output"
        return row
    denoised = load_uint8(output)
    row.update(psnr=psnr(clean, denoised), ssim=ssim(clean, denoised))
    return row


def _means(rows: list[dict]) -> dict:
    keys = ("noisy_psnr", "noisy_ssim", "psnr", "ssim")
    return {key: float(np.nanmean([row[key] for row in rows if key in row])) for key in keys if any(key in row for row in rows)}
