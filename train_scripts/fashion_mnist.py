"""Rebuild the shipped Fashion-MNIST models ``fmnist`` and ``fmnist-conv`` from scratch and measure them.

- ``fmnist-conv``: the TensorFlow tutorial's convolutional autoencoder (arch conv: 16 and 8
  filters, 3,217 parameters), the reproduction the project started from.
- ``fmnist``: the same family at its best, a convolutional encoder-decoder with skips (the
  residual U-Net of ``denoise train --arch unet``, 64 filters, 2 levels; its configuration and
  the reason for each value are in ``MODELS`` below).

Both are trained by ``denoise train`` on Fashion-MNIST with Gaussian noise of sigma drawn per
image from 0:75 (0-255 units), so each covers a range of levels, then measured on the whole
test split at sigma 25 and 50 by the protocol of ``measure.py``. The figures, the total
training time (summed over resumed runs) and the command that rebuilds the model go into its
manifest entry. A rebuild never changes which model is the default for grey images
(``default_for`` is kept as it is, empty for a new entry).

    python train_scripts/fashion_mnist.py fmnist --data ../shared/datasets/fashion_mnist/fashion_mnist.npz
    python train_scripts/fashion_mnist.py fmnist-conv --data ../shared/datasets/fashion_mnist/fashion_mnist.npz

Rerunning the same command resumes an interrupted run (``denoise train --resume``: the run
folder ``weights/NAME.keras.run/`` keeps a checkpoint of every epoch) and only measures once it
has finished; ``--fresh`` starts over. ``--measure-only`` measures the current best model (while
training runs, too) and writes its figures into the entry.

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
MACHINE = "2 CPU cores (AMD EPYC, TensorFlow on CPU) shared with other jobs, training at nice 19"

# What both models run with under `run --ensemble auto`: one pass. A folder of 28x28 images is
# bound by decoding and writing, and the mirror pair that auto picks on CPUs with bfloat16 would
# double the model's share for little: fmnist 28.42 against 28.38 dB at sigma 25 over the test
# split, and 1.25 times the time of the whole run over those 10,000 PNGs.
ENSEMBLE = 1

MODELS = {
    # The tutorial's autoencoder as it was shipped first; kept exactly as it is.
    "fmnist-conv": {
        "arch": "conv", "model_args": {}, "epochs": 12, "batch_size": 128, "options": [],
    },
    "fmnist": {
        # A residual U-Net: the tutorial's conv encoder-decoder plus additive skips, residual blocks and
        # a noise-level input, so one model serves sigma 0-75 and keeps the detail a bottleneck loses.
        "arch": "unet",
        # filters 64: 32 (130,820 parameters) flattened at 27.4 dB validation by epoch 14 and reached
        # 27.57 / 23.89 dB on the test split, short of 28.0 / 24.5; 64 gives 4 times the parameters
        # (515,588, 2 MB) for 1.4 times the step time on the 2 CPU cores (97 against 71 ms a step).
        # depth 2: 28x28 images become 14x14 after the pixel-unshuffle and 7x7 at the second level, whose
        # receptive field already spans a garment; a third level would pad them to 32x32 and take
        # 2.4 times the step time and 4 times the parameters (9 MB) for little more context.
        "model_args": {"filters": 64, "depth": 2},
        # 25 passes over the 60,000 images, 64 minutes on the 2 shared cores; the cosine decay of the
        # learning rate to 1 % is spread over them. Validation gained 0.02 dB over the last 5.
        "epochs": 25,
        # batch 64: 937 steps an epoch; a smaller batch costs more time a step on the CPU and
        # a larger one gives fewer updates in the same time.
        "batch_size": 64,
        "options": [
            # A moving average of the weights, validated each epoch beside them: it smooths the
            # wandering of small batches, for free at inference.
            "--average", "0.999",
        ],
    },
}


def train_command(args) -> list[str]:
    """The ``denoise train`` arguments that build the model ``args.model``."""
    config = MODELS[args.model]
    model_args = []
    for key, value in config["model_args"].items():
        model_args += [f"--{key.replace('_', '-')}", str(value)]
    command = [
        "train", "--data", args.data, "--arch", config["arch"], *model_args, "--noise", "gaussian", "--sigma", "0:75",
        "--no-augment",  # garments are never upside down in Fashion-MNIST
        "--epochs", str(epochs_of(args)), "--batch-size", str(config["batch_size"]), *config["options"],
        "--seed", str(args.seed), "--name", args.name, "--out", str(args.out),
    ]
    if getattr(args, "steps_per_epoch", None):
        command += ["--steps-per-epoch", str(args.steps_per_epoch)]
    return command


def epochs_of(args) -> int:
    return args.epochs or MODELS[args.model]["epochs"]


def run_state(out: Path) -> dict:
    """The ``state`` of the training run beside ``out`` (epoch reached, seconds over all resumed
    runs, best validation PSNR); empty when there is none."""
    path = Path(f"{out}.run") / "state.json"
    return json.loads(path.read_text())["state"] if path.exists() else {}


def rebuild_command(args) -> str:
    words = ["python", "train_scripts/fashion_mnist.py", args.model, "--data", args.data]
    if args.epochs:
        words += ["--epochs", str(args.epochs)]
    return shlex.join(words)


def record_metrics(out: Path, name: str, data: str, seed: int, rebuild: str, sigmas=(25, 50)) -> dict:
    """Measure the trained file on the test split and write the figures into its manifest entry,
    with the training time so far; ``default_for`` stays as it is (empty for a new entry)."""
    import keras

    from denoise import models, registry  # noqa: F401  models registers the custom layers

    measured_sha = registry.sha256_of(out)
    entry = registry.find(name, out.parent)
    if entry is None or entry["sha256"] != measured_sha:
        raise SystemExit(f"{out} is not the file of the manifest entry {name!r}")
    model = keras.saving.load_model(out, compile=False)
    clean = measure.load_test_split(data)
    results = measure.measure(model, clean, sigmas, seed)

    manifest = registry.load_manifest(out.parent)  # again: training may have written it meanwhile
    entry = next((entry for entry in manifest["models"] if entry["name"] == name), None)
    if entry is None or entry["sha256"] != measured_sha or registry.sha256_of(out) != measured_sha:
        print(f"{out} changed while it was measured (training is running): figures not recorded", file=sys.stderr)
        return results
    measured = {
        f"fashion_mnist_test_{key}_sigma{sigma:g}": value for sigma, scores in results.items() for key, value in scores.items()
    }
    # Test figures first (`denoise models` shows those); the new ones replace any earlier ones.
    entry["metrics"] = {**measured, **{key: value for key, value in entry.get("metrics", {}).items() if key not in measured}}
    entry["metrics_protocol"] = (
        f"Fashion-MNIST test split ({len(clean)} images of {Path(data).name}); Gaussian noise with per-image seeds "
        f"(seed {seed}), rounded and clipped to uint8; PSNR (peak 255) and SSIM (Gaussian window 11, sigma 1.5, "
        "data range 255) of the uint8 output; means over images"
    )
    entry["rebuild"] = rebuild
    entry["ensemble"] = ENSEMBLE
    state = run_state(out)
    if state:
        entry.setdefault("training", {}).update(
            epochs_run=state["epoch"], seconds_total=round(state["seconds"], 1), machine=MACHINE)
    entry.setdefault("default_for", [])  # never ["gray"]: the grey default stays gray-large's
    _place_beside_sibling(manifest, name)
    registry.write_manifest(manifest, out.parent)
    return results


def _place_beside_sibling(manifest: dict, name: str) -> None:
    """Put the entries of the Fashion-MNIST models next to each other (fmnist-conv first), so
    `denoise models` lists them side by side."""
    order = list(MODELS)
    if name not in order:
        return
    ours = {entry["name"]: entry for entry in manifest["models"] if entry["name"] in order}
    if len(ours) < 2:
        return
    rest = [entry for entry in manifest["models"] if entry["name"] not in ours]
    first = min(index for index, entry in enumerate(manifest["models"]) if entry["name"] in ours)
    first -= sum(1 for entry in manifest["models"][:first] if entry["name"] in ours)
    manifest["models"] = rest[:first] + [ours[key] for key in order if key in ours] + rest[first:]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="fmnist-conv", choices=list(MODELS),
                        help="which model to rebuild (default fmnist-conv)")
    parser.add_argument("--data", required=True, help="fashion_mnist.npz (x_train, x_test)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's (fmnist 25, fmnist-conv 12)")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass over the images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="registry name (default: the model's)")
    parser.add_argument("--out", type=Path, default=None, help="default weights/NAME.keras")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming the run beside --out")
    parser.add_argument("--measure-only", action="store_true", help="only measure the existing --out")
    args = parser.parse_args(argv)
    args.name = args.name or args.model
    args.out = args.out or Path(os.path.relpath(ROOT / "weights" / f"{args.name}.keras"))

    from denoise.cli import main as denoise

    if not args.measure_only:
        command = train_command(args)
        state = run_state(args.out)
        checkpoint = Path(f"{args.out}.run") / "checkpoint.keras"
        if not args.fresh and checkpoint.exists() and state.get("epoch", 0) >= epochs_of(args):
            print(f"{args.out}: its run finished all {epochs_of(args)} epochs; measuring", file=sys.stderr)
        else:
            if not args.fresh and checkpoint.exists():
                command.append("--resume")
            try:
                denoise(command, standalone_mode=False)
            except SystemExit as exit:
                if exit.code:
                    raise
    results = record_metrics(args.out, args.name, args.data, args.seed, rebuild_command(args))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
