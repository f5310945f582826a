"""Build and ship `color-photo`, the model `denoise run` sends colour photos whose noise spans more
than a pixel (a camera's demosaiced, processed, JPEG'd noise) to.

One command rebuilds it from the shipped `color` model:

    python train_scripts/photo_model.py --datasets ../shared/datasets

1. ``camera_pairs.py`` makes the training pairs (16,000 noisy crops of 128x128, seed 1; 2,800
   clean ones, seed 3, which teach the model to leave a photo without noise as it is) and the held-back
   validation pairs (240 crops of 256x256 from the held-back tenth of Urban100 and Sun-Hays80,
   seed 2) in ``--pairs`` (2 GB; kept there, so a rerun skips this step).
2. ``camera_finetune.py`` fine-tunes weights/color.keras on them, told the level ``run`` reads,
   into weights/color-photo.keras.run/stage1.keras (resumes where it stopped).
3. The best model goes to weights/color-photo.keras without its optimizer, with its manifest entry
   (``default_for: color-photo``, the training curve, the held-back PSNR of the start and of the
   result). Its figures on real camera noise are in docs/real_noise.md (benchmarks/real_noise.py).

``--ship-only`` does step 3 alone.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "color-photo"
START = "weights/color.keras"
STAGE = f"weights/{NAME}.keras.run/stage1.keras"
# (file, camera_pairs.py arguments): the seeds and sizes of the shipped model's pairs
PAIRS = {"train.npz": ["--count", "16000", "--seed", "1"],
         "clean.npz": ["--count", "2800", "--seed", "3", "--clean"],
         "val.npz": ["--count", "240", "--seed", "2", "--held-back", "--size", "256"]}
# 30,000 steps of 4 crops (six passes over the pairs, with turns): 35 minutes on two idle cores;
# the held-back PSNR rose by 0.25 dB in the first 500 steps and was still rising at 6,000.
FINETUNE = ["--steps", "30000", "--val-every", "1000"]

# The four quarter turns: 4 passes of one 2.3M-parameter U-Net a tile, about what the white-noise
# colour default (color+gray: 4 passes, in its mirror pair) costs. On CC15 they gained 0.2 dB over one
# pass (float32); all eight added 0.02 dB more for twice the time.
ENSEMBLE = 4


def commands(datasets: Path, pairs: Path) -> list[list[str]]:
    made = [[sys.executable, "train_scripts/camera_pairs.py", "--data", str(datasets), *arguments,
             "--out", str(pairs / file)] for file, arguments in PAIRS.items() if not (pairs / file).exists()]
    return made + [[sys.executable, "train_scripts/camera_finetune.py", START, "--train", str(pairs / "train.npz"), str(pairs / "clean.npz"),
                    "--val", str(pairs / "val.npz"), *FINETUNE, "--out", STAGE]]


def ship(datasets: Path) -> dict:
    from denoise import models, registry, runtime

    runtime.tensorflow()
    import keras

    from denoise.train import save_inference_model

    weights = ROOT / "weights"
    source, target = ROOT / STAGE, weights / f"{NAME}.keras"
    save_inference_model(keras.saving.load_model(source, compile=False), target)
    log = json.loads(source.with_suffix(".json").read_text())
    loaded = registry.load(str(target))
    model_args = {key: value for key, value in models.unet_args(loaded.model).items()
                  if key not in ("channels", "noise_level_input") and (key != "repeats" or value > 1)}
    rebuild = f"python train_scripts/photo_model.py --datasets {datasets}"
    entry = {
        "name": NAME, "file": target.name, "sha256": registry.sha256_of(target), "size_bytes": target.stat().st_size,
        "architecture": "unet", "model_args": model_args, "channels": 3,
        # told the calibrated level (denoise.calibrate), which reads 2-75 on such noise
        "noise": {"type": "photo", "low": 0.0, "high": 75.0, "clip": True},
        "data": f"{datasets}/urban100 + {datasets}/sunhays80 + {datasets}/bsds400_color",
        "data_note": "less the held-back tenth of urban100 and sunhays80; through train_scripts/camera_pairs.py: its "
                     "camera pipeline (5/6) or blurred or JPEG'd white noise (1/6), and 2,800 clean crops as their own target",
        "validation_data": f"{datasets}/urban100 + sunhays80: the held-back tenth (data.split_files), 240 crops "
                           "of 256x256 through the same pipeline (validation only)",
        "command": " && ".join(shlex.join(["python", *command[1:]]) for command in commands(Path(datasets), Path("PAIRS"))),
        "rebuild": rebuild,
        "parameters": int(loaded.model.count_params()),
        "training": {"source": STAGE, "start": START, "steps": log["best"]["step"],
                     "steps_run": log["curve"][-1]["step"], "seconds": log["curve"][-1]["seconds"],
                     "best_val_psnr": round(log["best"]["val_psnr"], 3),
                     "start_val_psnr": round(log["curve"][0]["val_psnr"], 3),
                     "curve": [[point["step"], round(point["val_psnr"], 3)] for point in log["curve"]]},
        "metrics": {"heldback_photos_psnr_camera": round(log["best"]["val_psnr"], 3)},
        "metrics_protocol": "heldback_photos: the 240 validation pairs (camera pipeline 5/6, blurred or JPEG'd white "
                            "noise 1/6); the model told calibrate.level_for's level, float32, one pass; PSNR of the "
                            "uint8 output against the pipeline without noise; real camera noise: docs/real_noise.md",
        "ensemble": ENSEMBLE,
        "default_for": [NAME],
    }
    manifest = registry.load_manifest(weights)
    manifest["models"] = [model for model in manifest["models"] if model["name"] != NAME] + [entry]
    registry.write_manifest(manifest, weights)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, required=True, help="folder holding urban100/, sunhays80/, bsds400_color/")
    parser.add_argument("--pairs", type=Path, default=Path("/tmp/denoise-photo-pairs"),
                        help="where the generated pairs are kept (2 GB)")
    parser.add_argument("--ship-only", action="store_true", help="only write weights/color-photo.keras and its entry")
    args = parser.parse_args()
    if not args.ship_only:
        args.pairs.mkdir(parents=True, exist_ok=True)
        for command in commands(args.datasets, args.pairs):
            print("+", shlex.join(command), flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
    entry = ship(args.datasets)
    print(f"shipped {entry['file']}: held-back {entry['training']['start_val_psnr']} -> "
          f"{entry['training']['best_val_psnr']} dB at step {entry['training']['steps']}")


if __name__ == "__main__":
    main()
