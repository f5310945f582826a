"""Build and ship `color-photo` and `gray-photo`, the models `denoise run` sends photos whose noise
spans more than a pixel (a camera's demosaiced, processed, JPEG'd noise; noise enlarged with its
image) to.

One command rebuilds each from a shipped white-noise model (`color`, `gray-large`):

    python train_scripts/photo_model.py --datasets ../shared/datasets
    python train_scripts/photo_model.py --datasets ../shared/datasets --model gray-photo

1. ``camera_pairs.py`` makes the training pairs (noisy crops of 128x128, seed 1; clean ones,
   seed 3, which teach the model to leave a photo without noise as it is) and the held-back
   validation pairs (240 crops of 256x256 from the held-back tenth of Urban100 and Sun-Hays80,
   seed 2) in ``--pairs``/NAME (grey ones for ``gray-photo``; kept there, so a rerun skips this step).
2. ``camera_finetune.py`` fine-tunes the start model on them, told the level ``run`` reads, into
   weights/NAME.keras.run/stage1.keras (resumes where it stopped). A later stage fine-tunes the
   best model of the one before on its own pairs, into stage2.keras.
3. The last stage's best model goes to weights/NAME.keras without its optimizer, with its manifest
   entry (each stage's training curve, the held-back PSNR of the start and of the result) and
   ``default_for: NAME`` on it, or for ``color-photo`` on its luma blend with ``gray-large``
   (``color-photo+gray-large``, built at load from the two files). Figures on real camera noise:
   docs/real_noise.md (benchmarks/real_noise.py).

``--ship-only`` does step 3 alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclasses.dataclass(frozen=True)
class Stage:
    """One fine-tuning run: the pair files it learns from and is validated on, its arguments."""

    train: tuple[str, ...]
    val: str
    finetune: tuple[str, ...]  # camera_finetune.py arguments


@dataclasses.dataclass(frozen=True)
class LumaBlend:
    """How ``run`` serves a colour photo model by default: its luma moved ``weight`` of the way to
    a grey white-noise model's denoising of the input's luma, told ``level`` times the level
    (denoise.models.luma_blend), in a self-ensemble of ``ensemble``."""

    grey: str
    weight: float
    level: float
    ensemble: int


@dataclasses.dataclass(frozen=True)
class Variant:
    """What one photo model is made from."""

    start: str  # the shipped white-noise model the first stage is fine-tuned from
    channels: int
    pairs: dict  # file -> camera_pairs.py arguments: the seeds and sizes of the shipped model's pairs
    stages: tuple[Stage, ...]  # each starts from the best model of the one before
    data_note: str
    ensemble: int | None  # the self-ensemble its entry names (None: --ensemble auto's rule, as for white noise)
    blend: LumaBlend | None = None  # the entry run serves it through by default, where not itself


VARIANTS = {
    "color-photo": Variant(
        start="weights/color.keras", channels=3,
        pairs={"train.npz": ["--count", "16000", "--seed", "1"],
               "clean.npz": ["--count", "2800", "--seed", "3", "--clean"],
               "val.npz": ["--count", "240", "--seed", "2", "--held-back", "--size", "256"],
               "edge.npz": ["--count", "8000", "--seed", "4", "--edge-nr"],
               "clean-edge.npz": ["--count", "1400", "--seed", "3", "--clean"],
               "val-edge.npz": ["--count", "240", "--seed", "2", "--held-back", "--size", "256", "--edge-nr"]},
        stages=(
            # 30,000 steps of 4 crops (six passes over the pairs, with turns): 35 minutes on two idle
            # cores; the held-back PSNR rose by 0.25 dB in the first 500 steps and was still rising at 6,000.
            Stage(("train.npz", "clean.npz"), "val.npz", ("--steps", "30000", "--val-every", "1000")),
            # Pairs whose luma noise reduction keeps edges, as many cameras' does (docs/notes.md: it
            # gained 0.23 dB on CC15 over the usual pairs): a short cycle on them, at half the rate so that the
            # first stage's learning stays; clean crops as 15% of the pairs, as in the first. On a
            # two-core machine where a step took 0.3 s (4x the first stage's): 28 minutes of pairs, 31 of steps.
            Stage(("edge.npz", "clean-edge.npz"), "val-edge.npz",
                  ("--steps", "6000", "--lr", "5e-5", "--val-every", "1000"))),
        data_note="camera pipeline (5/6) or blurred or JPEG'd white noise (1/6), and 2,800 clean crops as their own "
                  "target; then 8,000 pairs whose luma noise reduction keeps edges (--edge-nr) and 1,400 clean crops",
        # The four quarter turns: 4 passes of one 2.3M-parameter U-Net a tile, about what the white-noise
        # colour default (color+gray: 4 passes, in its mirror pair) costs. On CC15 they gained 0.2 dB over
        # one pass (float32); all eight added 0.02 dB more for twice the time.
        ensemble=4,
        # On CC15's real noise gray-large, told 1.25 times the level, cleans the luma better than
        # color-photo does (less grain left on flat areas and in texture); color-photo keeps the colour.
        # The luma weight, against color-photo alone (its four turns and gray-large once, level 1.25):
        # 0.25 / 0.5 / 0.75 gain +0.33 / +0.53 / +0.56 dB on CC15 (at 0.5 each camera gains: +0.81 5D Mark
        # III, +0.26 D600, +0.52 D800), +0.08 / +0.04 / -0.12 on McMaster18 with add-noise's camera noise at
        # 200 photons and +0.11 / +0.09 / -0.06 at 50, and cost 0.10 / 0.42 / 0.87 dB on 60 of the held-back
        # --edge-nr pairs color-photo learned that pipeline on (0.06 / 0.37 / 0.83 on the usual ones). 0.5
        # takes most of the real gain and stays ahead on both McMaster18 levels. Level 1.25 against 1.0, at
        # 0.5: +0.08 dB on CC15 and on McMaster18 at 50 photons, 0.00 at 200, -0.15 on the --edge-nr pairs.
        # The mirror pair gains 0.08 dB on CC15 over one pass; on a 12.6 MP photo it took 1.30 times
        # color-photo's four turns (75.5 s against 58.1 s on two cores, float32).
        blend=LumaBlend(grey="gray-large", weight=0.5, level=1.25, ensemble=2)),
    "gray-photo": Variant(
        start="weights/gray-large.keras", channels=1,
        # Half the colour model's pairs: gray-large is twice its size, so a step costs about twice as much.
        pairs={"train.npz": ["--count", "8000", "--seed", "1", "--grey"],
               "clean.npz": ["--count", "1400", "--seed", "3", "--clean", "--grey"],
               "val.npz": ["--count", "240", "--seed", "2", "--held-back", "--size", "256", "--grey"]},
        # 12,000 steps of 4 crops, about five passes over the pairs: 24 minutes on two cores; the
        # held-back PSNR gained 0.5 dB by 6,000 and 0.01 dB over the last 2,000.
        stages=(Stage(("train.npz", "clean.npz"), "val.npz", ("--steps", "12000", "--val-every", "1000")),),
        data_note="camera pipeline (2/3) or blurred or JPEG'd white noise up to sigma 50 (1/3), and 1,400 clean "
                  "crops as their own target, all made grey (--grey)",
        # gray-large's own: the mirror pair where the CPU computes bfloat16, else one pass.
        ensemble=None),
}


def stage_path(name: str, number: int) -> str:
    """Where stage ``number`` (from 1) writes its best model; its log and checkpoint lie beside it."""
    return f"weights/{name}.keras.run/stage{number}.keras"


def commands(name: str, datasets: Path, pairs: Path) -> list[list[str]]:
    variant = VARIANTS[name]
    made = [[sys.executable, "train_scripts/camera_pairs.py", "--data", str(datasets), *arguments,
             "--out", str(pairs / file)] for file, arguments in variant.pairs.items() if not (pairs / file).exists()]
    starts = [variant.start] + [stage_path(name, number) for number in range(1, len(variant.stages))]
    return made + [[sys.executable, "train_scripts/camera_finetune.py", start,
                    "--train", *(str(pairs / file) for file in stage.train), "--val", str(pairs / stage.val),
                    *stage.finetune, "--out", stage_path(name, number)]
                   for number, (start, stage) in enumerate(zip(starts, variant.stages), start=1)]


def summary(log: dict, source: str) -> dict:
    """One stage's training, from camera_finetune.py's log: its start, length, curve and best."""
    return {"source": source, "start": log["args"]["model"], "steps": log["best"]["step"],
            "steps_run": log["curve"][-1]["step"], "seconds": log["curve"][-1]["seconds"],
            "best_val_psnr": round(log["best"]["val_psnr"], 3), "start_val_psnr": round(log["curve"][0]["val_psnr"], 3),
            "curve": [[point["step"], round(point["val_psnr"], 3)] for point in log["curve"]]}


def ship(name: str, datasets: Path) -> dict:
    from denoise import models, registry, runtime

    runtime.tensorflow()
    import keras

    from denoise.train import save_inference_model

    variant = VARIANTS[name]
    weights = ROOT / "weights"
    grey = registry.find(variant.blend.grey, weights) if variant.blend else None
    if variant.blend and grey is None:  # checked before anything is written
        raise SystemExit(f"{variant.blend.grey}: ship it first (train_scripts/natural_images.py)")
    paths = [stage_path(name, number) for number in range(1, len(variant.stages) + 1)]
    target = weights / f"{name}.keras"
    save_inference_model(keras.saving.load_model(ROOT / paths[-1], compile=False), target)
    shipped = (registry.find(name) or {}).get("training", {})
    recorded = shipped.get("stages") or [shipped]  # a stage whose log is gone (another machine) keeps its record
    logs = [(ROOT / path).with_suffix(".json") for path in paths]
    stages = [summary(json.loads(log.read_text()), path) if log.exists() else recorded[index]
              for index, (path, log) in enumerate(zip(paths, logs))]
    loaded = registry.load(str(target))
    model_args = {key: value for key, value in models.unet_args(loaded.model).items()
                  if key not in ("channels", "noise_level_input") and (key != "repeats" or value > 1)}
    rebuild = f"python train_scripts/photo_model.py --datasets {datasets}" + ("" if name == "color-photo" else f" --model {name}")
    entry = {
        "name": name, "file": target.name, "sha256": registry.sha256_of(target), "size_bytes": target.stat().st_size,
        "architecture": "unet", "model_args": model_args, "channels": variant.channels,
        # told the calibrated level (denoise.calibrate), which reads 2-75 on such noise
        "noise": {"type": "photo", "low": 0.0, "high": 75.0, "clip": True},
        "data": f"{datasets}/urban100 + {datasets}/sunhays80 + {datasets}/bsds400_color",
        "data_note": "less the held-back tenth of urban100 and sunhays80; through train_scripts/camera_pairs.py: its "
                     + variant.data_note,
        "validation_data": f"{datasets}/urban100 + sunhays80: the held-back tenth (data.split_files), 240 crops "
                           "of 256x256 through each stage's pipeline (validation only)",
        "command": " && ".join(shlex.join(["python", *command[1:]]) for command in commands(name, Path(datasets), Path("PAIRS"))),
        "rebuild": rebuild,
        "parameters": int(loaded.model.count_params()),
        "training": {**stages[-1], **({"stages": stages} if len(stages) > 1 else {})},
        "metrics": {"heldback_photos_psnr_camera": stages[-1]["best_val_psnr"]},
        "metrics_protocol": "heldback_photos: the last stage's 240 validation pairs; the model told calibrate.level_for's level, float32, one pass; PSNR of the "
                            "uint8 output against the pipeline without noise; real camera noise: docs/real_noise.md",
        **({"ensemble": variant.ensemble} if variant.ensemble else {}),
        "default_for": [] if variant.blend else [name],
    }
    manifest = registry.load_manifest(weights)
    put(manifest, entry)
    if variant.blend:
        put(manifest, blend_entry(entry, variant.blend, grey))
    registry.write_manifest(manifest, weights)
    return entry


def blend_entry(entry: dict, blend: LumaBlend, grey: dict) -> dict:
    """The manifest entry of ``entry``'s model in its luma blend with ``blend.grey`` (built at load)."""
    return {
        "name": f"{entry['name']}+{blend.grey}", "members": [entry["name"], blend.grey],
        "luma": {"weight": blend.weight, "level": blend.level}, "architecture": "luma blend", "channels": 3,
        "noise": entry["noise"], "data": entry["data"],
        "command": f"{entry['command']} && {grey['command']}", "rebuild": entry["rebuild"],
        "parameters": entry["parameters"] + grey["parameters"], "ensemble": blend.ensemble,
        "default_for": [entry["name"]],
    }


def put(manifest: dict, entry: dict) -> None:
    """Replace ``entry``'s namesake in its place (the manifest's diff shows what changed), or add it."""
    names = [model["name"] for model in manifest["models"]]
    at = names.index(entry["name"]) if entry["name"] in names else len(names)
    manifest["models"][at:at + 1] = [entry]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, required=True, help="folder holding urban100/, sunhays80/, bsds400_color/")
    parser.add_argument("--model", choices=sorted(VARIANTS), default="color-photo", help="which photo model")
    parser.add_argument("--pairs", type=Path, default=Path("/tmp/denoise-photo-pairs"),
                        help="where the generated pairs are kept, in a folder per model (2 GB for colour)")
    parser.add_argument("--ship-only", action="store_true", help="only write weights/NAME.keras and its entry")
    args = parser.parse_args()
    pairs = args.pairs / args.model
    if not args.ship_only:
        pairs.mkdir(parents=True, exist_ok=True)
        for command in commands(args.model, args.datasets, pairs):
            print("+", shlex.join(command), flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
    entry = ship(args.model, args.datasets)
    print(f"shipped {entry['file']}: held-back {entry['training']['start_val_psnr']} -> "
          f"{entry['training']['best_val_psnr']} dB at step {entry['training']['steps']}")


if __name__ == "__main__":
    main()
