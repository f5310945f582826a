"""Rebuild the shipped model ``fmnist-conv`` from scratch and measure it.

The TensorFlow tutorial's convolutional autoencoder (arch conv: 16 and 8 filters, 3,217
parameters) trained on Fashion-MNIST with Gaussian noise of sigma drawn per image from 0:75
(0-255 units), so it covers a range of levels, then measured on the test split at sigma 25 and 50
by the protocol of ``measure.py``. The figures go into the model's manifest entry under
``metrics``; the entry is marked ``default_for: ["gray"]``.

    python train_scripts/fashion_mnist.py --data ../shared/datasets/fashion_mnist/fashion_mnist.npz

The data: an .npz with x_train (60000, 28, 28) and x_test (10000, 28, 28) uint8, e.g. built from
``tfds.load("fashion_mnist")`` or Keras's ``fashion_mnist.load_data()``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def train_command(args) -> list[str]:
    """The ``denoise train`` arguments that build the model."""
    return [
        "train", "--data", args.data, "--arch", "conv", "--noise", "gaussian", "--sigma", "0:75",
        "--no-augment",  # garments are never upside down in Fashion-MNIST
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
        "--name", args.name, "--out", str(args.out),
    ]


def record_metrics(out: Path, name: str, data: str, seed: int, rebuild: str, sigmas=(25, 50)) -> dict:
    """Measure the trained file on the test split and write the figures into its manifest entry."""
    import keras

    from denoise import models, registry  # noqa: F401  models registers the custom layers

    model = keras.saving.load_model(out, compile=False)
    clean = measure.load_test_split(data)
    results = measure.measure(model, clean, sigmas, seed)
    manifest = registry.load_manifest(out.parent)
    entry = next(entry for entry in manifest["models"] if entry["name"] == name)
    if entry["sha256"] != registry.sha256_of(out):
        raise SystemExit(f"{out} is not the file of the manifest entry {name!r}")
    measured = {
        f"fashion_mnist_test_{key}_sigma{sigma:g}": value for sigma, scores in results.items() for key, value in scores.items()
    }
    entry["metrics"] = {**measured, **entry.get("metrics", {})}  # test figures first: `denoise models` shows those
    entry["metrics_protocol"] = (
        f"Fashion-MNIST test split ({len(clean)} images of {Path(data).name}); Gaussian noise with per-image seeds "
        f"(seed {seed}), rounded and clipped to uint8; PSNR (peak 255) and SSIM (Gaussian window 11, sigma 1.5, "
        "data range 255) of the uint8 output; means over images"
    )
    entry["rebuild"] = rebuild
    entry["default_for"] = ["gray"]
    registry.write_manifest(manifest, out.parent)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fashion_mnist.npz (x_train, x_test)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="fmnist-conv")
    parser.add_argument("--out", type=Path, default=Path(os.path.relpath(ROOT / "weights" / "fmnist-conv.keras")))
    parser.add_argument("--measure-only", action="store_true", help="only measure the existing --out")
    args = parser.parse_args()

    from denoise.cli import main as denoise

    if not args.measure_only:
        try:
            denoise(train_command(args), standalone_mode=False)
        except SystemExit as exit:
            if exit.code:
                raise
    rebuild = shlex.join(["python", "train_scripts/fashion_mnist.py", "--data", args.data, "--epochs", str(args.epochs)])
    results = record_metrics(args.out, args.name, args.data, args.seed, rebuild)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
