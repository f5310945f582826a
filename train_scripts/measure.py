"""Test-split quality of a model on an array of clean uint8 images, by the project's protocol.

Protocol (as ``denoise eval`` and the benchmarks): clean uint8 image -> add N(0, sigma^2) in 0-255
units with a fixed per-image seed -> round -> clip to [0, 255] -> the model sees only that uint8
image (as floats in [0, 1]; a noise-level model is told the true sigma) -> its output is rounded
to uint8 -> PSNR (peak 255) and SSIM (Gaussian window 11, sigma 1.5, data range 255, as
``tf.image.ssim``) against the clean image, averaged over images.

Used by ``fashion_mnist.py`` and ``tutorial.py``; run alone it prints the figures of a model:

    python train_scripts/measure.py weights/fmnist-conv.keras --data PATH/fashion_mnist.npz --sigma 25 50
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from denoise.noise import NoiseSpec, add_noise_uint, seed_for


def noisy_copies(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The protocol's noisy uint8 copy of each image; image ``i`` draws from a seed of ``(i, seed)``."""
    if sigma == 0:
        return clean.copy()
    spec = NoiseSpec("gaussian", sigma, sigma)
    return np.stack([
        add_noise_uint(image, spec, np.random.default_rng(seed_for(str(index), seed)))
        for index, image in enumerate(clean)
    ])


def denoise_arrays(model, noisy: np.ndarray, sigma: float, batch_size: int = 256) -> np.ndarray:
    """Run ``model`` on uint8 images (N, H, W, C) and return its uint8 outputs.

    Images are mirror-padded to the model's size multiple and cropped back; a fixed-size model
    (dense) must get images of its size.
    """
    from denoise import registry

    loaded = registry.describe(model)
    height, width = noisy.shape[1:3]
    if loaded.tile_size and (height, width) != (loaded.tile_size, loaded.tile_size):
        raise ValueError(f"{model.name} takes {loaded.tile_size}x{loaded.tile_size} images, not {height}x{width}")
    pad_h, pad_w = -height % loaded.multiple, -width % loaded.multiple
    images = np.pad(noisy, [(0, 0), (0, pad_h), (0, pad_w), (0, 0)], mode="symmetric").astype(np.float32) / 255.0
    inputs = images
    if loaded.noise_level_input:
        inputs = {"image": images, "sigma": np.full((len(images), 1), sigma / 255.0, np.float32)}
    output = np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))[:, :height, :width]
    return np.clip(np.round(output * 255.0), 0, 255).astype(np.uint8)


def psnr(clean: np.ndarray, test: np.ndarray) -> float:
    error = np.mean((clean.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(error, 1e-10)))


def ssim(clean: np.ndarray, test: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(
        clean[..., 0] if clean.shape[-1] == 1 else clean, test[..., 0] if test.shape[-1] == 1 else test,
        data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=None if clean.shape[-1] == 1 else -1,
    ))


def mean_scores(clean: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """Mean PSNR and SSIM over images."""
    pairs = list(zip(clean, test))
    return float(np.mean([psnr(a, b) for a, b in pairs])), float(np.mean([ssim(a, b) for a, b in pairs]))


def measure(model, clean: np.ndarray, sigmas=(25, 50), seed: int = 0) -> dict:
    """``{sigma: {"psnr", "ssim", "noisy_psnr", "noisy_ssim"}}`` of ``model`` on ``clean`` (N, H, W, C)
    uint8 images; sigma 0 measures plain reconstruction (no noisy baseline)."""
    results = {}
    for sigma in sigmas:
        noisy = noisy_copies(clean, sigma, seed)
        scores = dict(zip(("psnr", "ssim"), mean_scores(clean, denoise_arrays(model, noisy, sigma))))
        if sigma:
            scores.update(zip(("noisy_psnr", "noisy_ssim"), mean_scores(clean, noisy)))
        results[sigma] = {key: round(value, 4 if "ssim" in key else 3) for key, value in scores.items()}
    return results


def load_test_split(path: str, channels: int = 1) -> np.ndarray:
    """``x_test`` of an .npz as uint8 (N, H, W, channels)."""
    from denoise.data import validation_images

    return validation_images(path, channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .keras file")
    parser.add_argument("--data", required=True, help="an .npz with x_test")
    parser.add_argument("--sigma", type=float, nargs="+", default=[25, 50])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras

    from denoise import models  # noqa: F401  registers the custom layers

    model = keras.saving.load_model(args.model, compile=False)
    clean = load_test_split(args.data, int(model.inputs[0].shape[-1]))
    print(json.dumps(measure(model, clean, args.sigma, args.seed), indent=2))


if __name__ == "__main__":
    main()
