"""TensorFlow's autoencoder tutorial (tensorflow.org/tutorials/generative/autoencoder), reproduced
on Fashion-MNIST with this package's models and training.

Four runs, as in the tutorial:

- the dense autoencoder (Flatten -> Dense(64, relu) -> Dense(784, sigmoid)), 10 epochs, batch 32;
- the convolutional autoencoder (Conv 16 -> 8, stride 2; Conv2DTranspose 8 -> 16; Conv 1), 20
  epochs, batch 128;

each once for reconstruction (no noise) and once for denoising (the tutorial's noise factor 0.2:
Gaussian sigma 0.2 * 255 = 51 in 0-255 units, clipped to [0, 1]). Adam at 1e-3, MSE loss, whole
28x28 images, no augmentation. One difference: the noise is drawn anew every epoch inside
tf.data, where the tutorial adds it once before training.

Each model is measured on the whole test split by the protocol of ``measure.py`` (denoising at
sigma 51, reconstruction on the clean images). Writes ``docs/tutorial_results.md`` (the table)
and ``docs/tutorial_*.png`` (clean / noisy / output rows for each run, and the loss curves).

    python train_scripts/tutorial.py --data ../shared/datasets/fashion_mnist/fashion_mnist.npz

``--dense-epochs`` and ``--conv-epochs`` shorten the runs (the table says how many were run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIGMA = 51.0  # the tutorial's noise_factor 0.2 of the [0, 1] range


@dataclasses.dataclass(frozen=True)
class Run:
    arch: str
    task: str  # reconstruction or denoising
    epochs: int
    batch_size: int
    model_args: dict

    @property
    def name(self) -> str:
        return f"{self.arch}_{self.task}"

    @property
    def sigma(self) -> float:
        return SIGMA if self.task == "denoising" else 0.0


def runs(dense_epochs: int, conv_epochs: int) -> list[Run]:
    return [
        Run("dense", task, dense_epochs, 32, {"latent_dim": 64}) for task in ("reconstruction", "denoising")
    ] + [
        Run("conv", task, conv_epochs, 128, {"filters": 16}) for task in ("reconstruction", "denoising")
    ]


def train_one(run: Run, data: str, workdir: Path, seed: int) -> dict:
    """Train one run from scratch with ``denoise.train``; return its summary."""
    from denoise.data import DataOptions
    from denoise.noise import NoiseSpec
    from denoise.train import TrainOptions, train

    out = workdir / f"{run.name}.keras"
    options = TrainOptions(
        data=DataOptions(
            source=data, channels=1, batch_size=run.batch_size, noise=NoiseSpec("gaussian", run.sigma, run.sigma),
            clip=True, seed=seed, validation_sigma=run.sigma, augment=False,
        ),
        out=str(out), arch=run.arch, model_args=run.model_args, epochs=run.epochs, loss="mse",
        learning_rate=1e-3, schedule="constant",
    )
    return train(options, log=lambda message: print(message, flush=True))


def figure(run: Run, model, clean: np.ndarray, path: Path, count: int = 10) -> None:
    """The tutorial's figure: the first test images, their noisy copies (denoising) and the outputs."""
    from denoise.train import comparison_grid

    noisy = measure.noisy_copies(clean[:count], run.sigma)
    output = measure.denoise_arrays(model, noisy, run.sigma)
    rows = [clean[:count], noisy, output] if run.sigma else [clean[:count], output]
    labels = ["original", f"noisy (sigma {run.sigma:g})", "denoised"] if run.sigma else ["original", "reconstructed"]
    comparison_grid(path, [[image / 255.0 for image in row] for row in rows], labels)


def loss_figure(workdir: Path, all_runs: list[Run], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, task in zip(axes, ("reconstruction", "denoising")):
        for run in (run for run in all_runs if run.task == task):
            history = json.loads((workdir / f"{run.name}.keras.run" / "history.json").read_text())
            epochs = [row["epoch"] for row in history]
            axis.plot(epochs, [row["loss"] for row in history], label=f"{run.arch} train")
            axis.plot(epochs, [row["val_loss"] for row in history], "--", label=f"{run.arch} validation")
        axis.set_title(task)
        axis.set_xlabel("epoch")
        axis.set_ylabel("MSE")
        axis.set_yscale("log")
        axis.legend()
    figure_.tight_layout()
    figure_.savefig(path, dpi=100)
    plt.close(figure_)


def table(rows: list[dict], test_count: int, full: bool) -> str:
    lines = [
        "# TensorFlow autoencoder tutorial, reproduced on Fashion-MNIST",
        "",
        "Made by `python train_scripts/tutorial.py` (see its docstring for the setup). Test split: "
        f"{test_count} images of Fashion-MNIST (this split: see the data set's README). Denoising is "
        f"measured at the tutorial's noise (Gaussian sigma {SIGMA:g} in 0-255 units, per-image seeds, rounded "
        "and clipped to 8 bits); reconstruction on the clean images. PSNR (peak 255) and SSIM (Gaussian "
        "window 11, sigma 1.5) of the 8-bit outputs, means over images. Seconds: training and the "
        "per-epoch validation on 1,000 test images, on the machine and load of the run below.",
        "",
    ]
    if not full:
        lines += ["**Shortened run**: fewer epochs than the tutorial's 10 (dense) and 20 (conv); see the epochs column.", ""]
    lines += [
        "| model | task | parameters | epochs | batch | training (s) | s / epoch | test PSNR (dB) | test SSIM | input PSNR (dB) | input SSIM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arch']} | {row['task']} | {row['parameters']:,} | {row['epochs']} | {row['batch_size']} | "
            f"{row['seconds']:.0f} | {row['seconds'] / row['epochs']:.1f} | {row['psnr']:.2f} | {row['ssim']:.4f} | "
            + (f"{row['noisy_psnr']:.2f} | {row['noisy_ssim']:.4f} |" if "noisy_psnr" in row else "- | - |")
        )
    names = ", ".join(f"`tutorial_{row['arch']}_{row['task']}.png`" for row in rows)
    lines += ["", f"Figures: {names}, `tutorial_loss.png`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fashion_mnist.npz (x_train, x_test)")
    parser.add_argument("--dense-epochs", type=int, default=10, help="the tutorial's: 10")
    parser.add_argument("--conv-epochs", type=int, default=20, help="the tutorial's: 20")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "tutorial", help="models and run folders")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the table and figures go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from denoise import runtime

    runtime.tensorflow()
    import keras

    from denoise import models  # noqa: F401  registers the custom layers

    args.docs.mkdir(parents=True, exist_ok=True)
    clean = measure.load_test_split(args.data)
    all_runs = runs(args.dense_epochs, args.conv_epochs)
    rows = []
    for run in all_runs:
        started = time.time()
        summary = train_one(run, args.data, args.workdir, args.seed)
        model = keras.saving.load_model(args.workdir / f"{run.name}.keras", compile=False)
        scores = measure.measure(model, clean, [run.sigma], args.seed)[run.sigma]
        figure(run, model, clean, args.docs / f"tutorial_{run.name}.png")
        rows.append({**dataclasses.asdict(run), **scores, "parameters": summary["parameters"], "seconds": summary["seconds"]})
        print(json.dumps(rows[-1]), f"({time.time() - started:.0f} s with measuring)", flush=True)
    loss_figure(args.workdir, all_runs, args.docs / "tutorial_loss.png")
    full = args.dense_epochs >= 10 and args.conv_epochs >= 20
    results = args.docs / "tutorial_results.md"
    import bottleneck  # its sweep's section of the file (if any) is kept

    sweep = re.search(re.escape(bottleneck.BEGIN) + ".*?" + re.escape(bottleneck.END), results.read_text(), re.S) \
        if results.exists() else None
    results.write_text(table(rows, len(clean), full))
    if sweep:
        bottleneck.write_section(results, sweep.group(0))
    print(table(rows, len(clean), full))


if __name__ == "__main__":
    main()
