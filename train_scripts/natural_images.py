"""Train and ship the natural-image models `gray` (Train400) and `color` (BSDS400 colour).

    python train_scripts/natural_images.py train gray --datasets ../shared/datasets
    python train_scripts/natural_images.py ship gray --datasets ../shared/datasets

`train` runs (or, with --resume, continues) the exact `denoise train` command below; its state
lives in OUT.run/ (weights/NAME.keras.run/, committed with the model: checkpoint with optimizer,
state and history), so a run resumes where the last shipped checkpoint stopped, on any machine. `ship` copies the best model
into weights/ without its optimizer, measures it by the protocol (Set12 for gray, McMaster18
for color; sigma 15, 25, 50, with the true sigma and with --sigma auto) and writes its
manifest entry. Validation sets are only ever used for validation, never for training.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The hyperparameters, with why:
MODELS = {
    "gray": dict(train="train400", validation="set12", channels=1, val_count=12),
    "color": dict(train="bsds400_color", validation="mcmaster18", channels=3, val_count=6),
}
COMMON = [
    "--arch", "unet",
    "--filters", "32",  # 32-64-128-256 channels: 2.3M parameters, 9 MB, quality per FLOP
    "--depth", "4",  # four levels after pixel-unshuffle: a receptive field wide enough for sigma 50
    "--blocks", "2",
    "--noise", "gaussian", "--sigma", "0:75",  # one model for every level, told the level
    "--patch-size", "64",  # 64x64 patches keep the 1/16-scale bottleneck 4x4 or larger
    "--batch-size", "16",  # fits the 2-core CPU at about 0.1 s a step
    "--epochs", "200", "--steps-per-epoch", "400",  # 80k steps; an epoch (a checkpoint) every 1-2 minutes
    "--lr", "1e-3", "--schedule", "cosine",  # Adam, cosine decay to 1 % over the whole run
]


def train_command(name: str, datasets: Path, out: Path) -> list[str]:
    spec = MODELS[name]
    return [
        "denoise", "train", "--data", str(datasets / spec["train"]), "--val-data", str(datasets / spec["validation"]),
        "--val-count", str(spec["val_count"]), "--channels", str(spec["channels"]), *COMMON,
        "--name", name, "--out", str(out),
    ]


def ship(name: str, datasets: Path, run_model: Path, weights: Path) -> dict:
    from denoise import registry, runtime
    from denoise.evaluate import EvalOptions, evaluate
    from denoise.noise import NoiseSpec

    runtime.tensorflow()
    import keras

    from denoise.train import _save_inference_model

    target = weights / f"{name}.keras"
    _save_inference_model(keras.saving.load_model(run_model, compile=False), target)
    # The run's checkpoint (with the optimizer) ships too, so `train --resume` continues it anywhere.
    run_dir = Path(f"{target}.run")
    run_dir.mkdir(exist_ok=True)
    for part in ("checkpoint.keras", "state.json", "history.json"):
        if Path(f"{run_model}.run/{part}").resolve() != (run_dir / part).resolve():
            shutil.copyfile(f"{run_model}.run/{part}", run_dir / part)
    state = json.loads((run_dir / "state.json").read_text())["state"]
    spec = MODELS[name]
    metrics = {}
    for sigma in (15, 25, 50):
        for told in (str(sigma), "auto"):
            result = evaluate(EvalOptions(
                clean=(datasets / spec["validation"],), noise=NoiseSpec("gaussian", sigma, sigma),
                model=str(target), sigma=told,
            ))["mean"]
            suffix = "" if told != "auto" else "_auto"
            metrics[f"{spec['validation']}_psnr_sigma{sigma}{suffix}"] = round(result["psnr"], 3)
            metrics[f"{spec['validation']}_ssim_sigma{sigma}{suffix}"] = round(result["ssim"], 4)
            metrics[f"{spec['validation']}_noisy_psnr_sigma{sigma}"] = round(result["noisy_psnr"], 3)
            print(name, sigma, told, metrics[f"{spec['validation']}_psnr_sigma{sigma}{suffix}"], flush=True)
    loaded = registry.load(str(target))
    manifest = registry.load_manifest(weights)
    entry = {
        "name": name, "file": target.name, "sha256": registry.sha256_of(target),
        "size_bytes": target.stat().st_size, "architecture": "unet",
        "model_args": {"filters": 32, "depth": 4, "blocks": 2}, "channels": spec["channels"],
        "noise": {"type": "gaussian", "low": 0.0, "high": 75.0, "clip": True},
        "data": f"../shared/datasets/{spec['train']}",
        "validation_data": f"../shared/datasets/{spec['validation']} (validation only)",
        "command": shlex.join(train_command(name, Path("../shared/datasets"), Path(f"weights/{name}.keras"))),
        "rebuild": f"python train_scripts/natural_images.py train {name} --datasets ../shared/datasets",
        "parameters": int(loaded.model.count_params()),
        "training": {"epochs": state["epoch"], "of_epochs": 200, "seconds": round(state["seconds"], 1),
                     "best_val_psnr": round(state["best_psnr"], 3)},
        "metrics": metrics,
        "metrics_protocol": f"{spec['validation']}: Gaussian noise with per-image seeds (seed 0), rounded and "
                            "clipped to uint8 PNG; denoise run with the true sigma, or --sigma auto (_auto); "
                            "PSNR (peak 255) and SSIM (window 11, sigma 1.5, range 255); means over images",
        "default_for": [name],
    }
    for other in manifest["models"]:  # one default per role
        if name in other.get("default_for", []):
            other["default_for"] = [role for role in other["default_for"] if role != name]
    manifest["models"] = [model for model in manifest["models"] if model["name"] != name] + [entry]
    registry.write_manifest(manifest, weights)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["train", "ship"])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--datasets", type=Path, required=True, help="Folder holding the data sets.")
    parser.add_argument("--out", type=Path, help="Training output (default weights/NAME.keras).")
    parser.add_argument("--resume", action="store_true", help="Continue the run saved beside --out.")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="Registry folder to ship into.")
    args = parser.parse_args()
    out = args.out or ROOT / "weights" / f"{args.model}.keras"
    if args.action == "train":
        command = train_command(args.model, args.datasets, out) + (["--resume"] if args.resume else [])
        sys.exit(subprocess.call(command))
    print(json.dumps(ship(args.model, args.datasets, out, args.weights)["metrics"], indent=2))


if __name__ == "__main__":
    main()
