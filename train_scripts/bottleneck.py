"""The tutorial's own question: how does the size of the bottleneck trade reconstruction and
denoising quality against parameters, for the dense and the convolutional autoencoder?

A sweep of short runs on Fashion-MNIST with the tutorial's setup (``tutorial.py``: Adam at 1e-3,
constant, MSE, whole 28x28 images, no augmentation; dense batch 32, conv batch 128):

- the dense autoencoder at latent_dim 16, 32, 64 (the tutorial's), 128 and 256;
- the convolutional autoencoder at 2, 4, 8, 16 and 32 filters, whose bottleneck is the second
  convolution's filters / 2 channels at 7x7 (the tutorial's: 16 filters, 8 channels, 392 numbers);

each trained once for reconstruction (no noise) and once for denoising at the tutorial's noise
(Gaussian sigma 51, clipped), for the same few epochs (3 by default: a sweep, not the tutorial's
10 and 20; the table says how many), and measured on the whole test split by the protocol of
``measure.py``. Writes its table, between markers, into ``docs/tutorial_results.md`` (the rest of
that file is ``tutorial.py``'s) and the figure ``docs/tutorial_bottleneck.png``. The models stay
in ``--workdir`` (default ``out/bottleneck/``), never in ``weights/``.

    python train_scripts/bottleneck.py --data ../shared/datasets/fashion_mnist/fashion_mnist.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure  # noqa: E402
from tutorial import SIGMA, Run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DENSE_SIZES = (16, 32, 64, 128, 256)  # latent_dim; the tutorial's is 64
CONV_SIZES = (2, 4, 8, 16, 32)  # filters of the first convolution; the bottleneck has half as many
BEGIN, END = "<!-- bottleneck sweep: made by train_scripts/bottleneck.py -->", "<!-- end of bottleneck sweep -->"


def bottleneck(arch: str, size: int) -> tuple[str, int]:
    """The bottleneck as the table names it and the numbers it holds for a 28x28 image."""
    if arch == "dense":
        return f"latent_dim {size}", size
    channels = max(1, size // 2)
    return f"{channels} channel{'s' if channels > 1 else ''} at 7x7", channels * 7 * 7


def sweep_runs(dense_sizes, conv_sizes, epochs: int) -> list[tuple[int, Run]]:
    """``(size, run)`` for every size, architecture and task."""
    runs = []
    for arch, sizes, batch, key in (("dense", dense_sizes, 32, "latent_dim"), ("conv", conv_sizes, 128, "filters")):
        for size in sizes:
            for task in ("reconstruction", "denoising"):
                runs.append((size, Run(arch, task, epochs, batch, {key: size})))
    return runs


def train_and_measure(size: int, run: Run, data: str, workdir: Path, clean, seed: int = 0,
                      steps_per_epoch: int | None = None, validation_count: int = 1000) -> dict:
    """Train one run from scratch with ``denoise.train`` and measure it on ``clean``; one table row."""
    import keras

    from denoise.data import DataOptions
    from denoise.noise import NoiseSpec
    from denoise.train import TrainOptions, train

    out = workdir / f"{run.arch}{size}" / f"{run.name}.keras"
    options = TrainOptions(
        data=DataOptions(
            source=data, channels=1, batch_size=run.batch_size, noise=NoiseSpec("gaussian", run.sigma, run.sigma),
            clip=True, seed=seed, validation_sigma=run.sigma, validation_count=validation_count, augment=False,
        ),
        out=str(out), arch=run.arch, model_args=run.model_args, epochs=run.epochs, steps_per_epoch=steps_per_epoch,
        loss="mse", learning_rate=1e-3, schedule="constant",
    )
    summary = train(options, log=lambda message: print(message, flush=True))
    model = keras.saving.load_model(out, compile=False)
    scores = measure.measure(model, clean, [run.sigma], seed)[run.sigma]
    label, numbers = bottleneck(run.arch, size)
    return {**dataclasses.asdict(run), **scores, "size": size, "bottleneck": label, "code_numbers": numbers,
            "parameters": summary["parameters"], "seconds": summary["seconds"]}


def table(rows: list[dict], test_count: int) -> str:
    """The markdown section: one line per architecture and size, reconstruction beside denoising."""
    epochs = sorted({row["epochs"] for row in rows})
    lines = [
        BEGIN,
        "",
        "## The bottleneck: quality against parameters",
        "",
        "Made by `python train_scripts/bottleneck.py` (see its docstring). Each size trained from scratch "
        f"for {'/'.join(map(str, epochs))} epochs (a sweep: shorter than the tutorial's 10 and 20, so the "
        "figures sit below the table above), once for reconstruction and once for denoising at sigma "
        f"{SIGMA:g}; measured on the {test_count:,} test images as above. The code is the numbers the "
        "bottleneck holds per 28x28 image (784 pixels).",
        "",
        "| model | bottleneck | code (numbers) | parameters | reconstruction PSNR (dB) / SSIM | "
        f"denoising PSNR (dB) / SSIM at sigma {SIGMA:g} | training (s), both |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    pairs: dict[tuple[str, int], dict[str, dict]] = {}
    for row in rows:
        pairs.setdefault((row["arch"], row["size"]), {})[row["task"]] = row
    for (arch, size), tasks in pairs.items():
        first = next(iter(tasks.values()))
        cells = [f"{tasks[task]['psnr']:.2f} / {tasks[task]['ssim']:.3f}" if task in tasks else "-"
                 for task in ("reconstruction", "denoising")]
        seconds = sum(row["seconds"] for row in tasks.values())
        tutorial = " (the tutorial's)" if (arch, size) in (("dense", 64), ("conv", 16)) else ""
        lines.append(f"| {arch} | {first['bottleneck']}{tutorial} | {first['code_numbers']:,} | {first['parameters']:,} | "
                     f"{cells[0]} | {cells[1]} | {seconds:.0f} |")
    lines += ["", gains(rows)]
    noisy = next((row for row in rows if "noisy_psnr" in row), None)
    if noisy:
        lines += ["", f"The noisy input at sigma {SIGMA:g}: {noisy['noisy_psnr']:.2f} dB / {noisy['noisy_ssim']:.3f}."]
    lines += ["", "![PSNR against parameters for each bottleneck size](tutorial_bottleneck.png)", "", END]
    return "\n".join(lines)


def gains(rows: list[dict]) -> str:
    """One sentence: the PSNR each doubling of the code buys, smallest to largest size, per task."""
    parts = []
    for arch in ("dense", "conv"):
        tasks = []
        for task in ("reconstruction", "denoising"):
            points = sorted((row["code_numbers"], row["psnr"]) for row in rows if row["arch"] == arch and row["task"] == task)
            if len(points) > 1 and points[-1][0] > points[0][0]:
                doublings = math.log2(points[-1][0] / points[0][0])
                tasks.append(f"{(points[-1][1] - points[0][1]) / doublings:+.2f} dB {task}")
        if tasks:
            parts.append(f"{arch} {' and '.join(tasks)}")
    return ("Each doubling of the code, from the smallest to the largest size, bought on average: "
            + "; ".join(parts) + ".") if parts else ""


def figure(rows: list[dict], path: Path) -> None:
    """Reconstruction and denoising PSNR against parameters, one line per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, task in zip(axes, ("reconstruction", "denoising")):
        for arch, marker in (("dense", "o"), ("conv", "s")):
            points = sorted((row["parameters"], row["psnr"], row["code_numbers"]) for row in rows
                            if row["arch"] == arch and row["task"] == task)
            if not points:
                continue
            axis.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=arch)
            for parameters, psnr, numbers in points:
                axis.annotate(f"{numbers}", (parameters, psnr), textcoords="offset points", xytext=(3, -10), fontsize=7)
        axis.set_xscale("log")
        axis.margins(x=0.08, y=0.1)  # room for the labels of the end points
        axis.set_xlabel("parameters (labels: code size, numbers per image)")
        axis.set_ylabel("test PSNR (dB)")
        axis.set_title(task if task == "reconstruction" else f"denoising, sigma {SIGMA:g}")
        axis.grid(alpha=0.3)
        axis.legend()
    figure_.tight_layout()
    figure_.savefig(path, dpi=80)
    plt.close(figure_)


def write_section(results: Path, section: str) -> None:
    """Put ``section`` into ``results`` in place of the previous sweep (or at its end)."""
    text = results.read_text() if results.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    results.write_text(text.rstrip("\n") + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="fashion_mnist.npz (x_train, x_test)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass over the images")
    parser.add_argument("--dense-sizes", type=int, nargs="+", default=list(DENSE_SIZES))
    parser.add_argument("--conv-sizes", type=int, nargs="+", default=list(CONV_SIZES))
    parser.add_argument("--val-count", type=int, default=1000, help="validation images per epoch")
    parser.add_argument("--test-count", type=int, default=10000, help="with --table-only: the test images measured")
    parser.add_argument("--workdir", type=Path, default=ROOT / "out" / "bottleneck", help="models and run folders")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the table and the figure go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-only", action="store_true",
                        help="no training: rewrite the table and the figure from --workdir's rows.json")
    args = parser.parse_args(argv)
    if args.table_only:
        rows = json.loads((args.workdir / "rows.json").read_text())
        section = table(rows, args.test_count)
        figure(rows, args.docs / "tutorial_bottleneck.png")
        write_section(args.docs / "tutorial_results.md", section)
        print(section)
        return

    from denoise import runtime

    runtime.tensorflow()
    args.docs.mkdir(parents=True, exist_ok=True)
    clean = measure.load_test_split(args.data)
    rows = []
    for size, run in sweep_runs(args.dense_sizes, args.conv_sizes, args.epochs):
        started = time.time()
        rows.append(train_and_measure(size, run, args.data, args.workdir, clean, args.seed, args.steps_per_epoch,
                                      args.val_count))
        print(json.dumps(rows[-1]), f"({time.time() - started:.0f} s with measuring)", flush=True)
        (args.workdir / "rows.json").write_text(json.dumps(rows, indent=1))
    section = table(rows, len(clean))
    figure(rows, args.docs / "tutorial_bottleneck.png")
    write_section(args.docs / "tutorial_results.md", section)
    print(section)


if __name__ == "__main__":
    main()
