"""Train and ship the natural-image models `gray` (Train400), `gray-large`, `color` (BSDS400 colour), a mean,
and `color-camera` / `gray-camera` for a camera's noise.

    python train_scripts/natural_images.py train gray --datasets ../shared/datasets
    python train_scripts/natural_images.py ship gray --datasets ../shared/datasets

`train` runs the `denoise train` stages, each resuming where it stopped: stage 1 (64x64 patches,
learning rate 1e-3) writes weights/NAME.keras with its run in weights/NAME.keras.run/; stage 2
starts from stage 1's last checkpoint and fine-tunes on 128x128 patches at a lower learning rate,
in weights/NAME.keras.run/stage2.keras(.run/); stage 3 (stage3.keras(.run/)) repeats it, gray at
half the learning rate, color on its photos shrunk by 2; color's stage 4 repeats its stage 3 for
60 epochs at half the learning rate; gray's stage 4 trains 150 epochs on the BSDS photos as grey,
256x256 patches, from a warm restart at 2e-4. Then the GPU stages (gray's 5 and 6, color's 5)
run train_scripts/gpu_finetune.py under JAX, each from the stage before's best model; on a
machine without a GPU, train stops there and prints the command. The run folder of a stage still
in progress (checkpoint with optimizer, state, history; a GPU stage's log) is committed with
`git add -f`, so training continues on any machine; a finished stage's run folder leaves the tree
(its command here rebuilds it), so a clone carries only what a stage still resumes from. `ship` copies the best model of the latest stage (or --source) into weights/ without
its optimizer, measures it by the protocol (Set12 for gray, McMaster18 for color; sigma 15, 25,
50, with the true sigma and with --sigma auto) and writes its manifest entry, then re-measures
every mean the model is part of. `measure` measures a shipped model again and updates its
entry, its file untouched (after a change in how `denoise run` treats its images).
Validation sets are only ever used for validation.

`gray-large`, the grey default, is gray's stage 6 model grown to two residual blocks a level
and fine-tuned on a GPU: `train gray-large` runs gray's stages, then its own.
`color+gray`, the colour default, is the mean of color and gray run channel by channel, built at
load from their files: `train color+gray` trains both, `ship color+gray` measures it on McMaster18.
`color-camera` and `gray-camera` are the shipped color and gray-large fine-tuned on a camera's
noise (`run --noise camera` picks them): `train color-camera` trains and ships color when it is
not shipped yet, then runs the fine-tuning stage from weights/color.keras into
weights/color-camera.keras.run/stage1.keras; `ship` measures it on camera noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The hyperparameters, with why:
MODELS = {
    # gray is also measured on colour McMaster18 channel by channel: it serves colour images
    # until the color model measures better there.
    "gray": dict(train="train400", validation="set12", channels=1, val_count=12, channelwise="mcmaster18"),
    "color": dict(train="bsds400_color", validation="mcmaster18", channels=3, val_count=6),
    # gray grown to two residual blocks a level and fine-tuned: the grey default. It costs 1.45x
    # gray's time, so color+gray keeps gray (through it colour photos would miss 20x CBM3D's speed).
    "gray-large": dict(start="gray", validation="set12", channels=1, channelwise="mcmaster18"),
    # The shipped models fine-tuned on a camera's noise (CAMERA), for `run --noise camera`: on
    # McMaster18 at 200 photons color gives 29.33 dB, fine-tuned 32.79 (CBM3D told the RMS:
    # 30.00), but on white noise of sigma 25 the fine-tuned model falls from 30.96 to 24.35.
    "color-camera": dict(start="color", train="bsds400_color", validation="mcmaster18", channels=3, val_count=6,
                         camera=True),
    "gray-camera": dict(start="gray-large", train="bsds400_color", validation="set12", channels=1, val_count=12,
                        camera=True),
    # color fine-tuned on lossless photos with colour at full resolution (BSDS's are 4:2:0 JPEGs),
    # validated on their held-back tenth (13 photos, never trained on) and the first 6 of McMaster18.
    "color-photos": dict(start="color", train=["urban100", "sunhays80"], validation="mcmaster18", channels=3,
                         val_count=19, hold_out=True),
}
# Models that are the mean of trained ones, built at load from their members' files: color and
# gray make different errors on colour photos (gray sees one channel at a time, color learned
# from 4:2:0 JPEG colour), so their mean beats both by 0.3-0.7 dB on McMaster18.
MEANS = {"color+gray": ["color", "gray"]}
COLOUR_SET = "mcmaster18"
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
STAGE2 = [
    "--patch-size", "128",  # 4x the context: the 1/16-scale levels see 8x8 instead of 4x4 positions
    "--batch-size", "4",  # the same pixels per step as stage 1, so the same time per step
    "--epochs", "100", "--steps-per-epoch", "400",  # 40k steps
    "--lr", "2e-4", "--schedule", "cosine",  # a fifth of stage 1's start: refine, do not forget
]
DOWNSCALED = [
    *STAGE2,  # the same refinement again, on cleaner targets:
    # BSDS photos are 4:2:0 JPEGs, so at full size their colour is blurred at every edge and the
    # model learned to blur it (McMaster18 chroma error at sigma 15 twice gray-per-channel's);
    # a block mean over 2x2 brings the colour back to full resolution and averages the artefacts.
    "--downscale", "2",
]
SETTLE = [
    *STAGE2,
    "--lr", "1e-4",  # a second, gentler cosine cycle: stage 2 still gained in its last tenth
]
DOWNSCALED_SETTLE = [
    *DOWNSCALED,
    "--epochs", "60",  # color's third stage gained 0.13 dB of validation PSNR, most of it late
    "--lr", "1e-4",  # as gray's third stage: a gentler second cycle
]
GRAY_PHOTOS = [
    "--data", "bsds400_color",  # the 400 BSDS photos whole, as grey: 4.8x Train400's pixels
    "--patch-size", "256",  # 256x256 fits their 481x321: the 1/16-scale levels see 16x16 positions
    "--batch-size", "1",  # the same pixels per step as stages 2 and 3
    "--epochs", "150", "--steps-per-epoch", "400",  # 60k steps, 68 minutes on 2 idle cores
    "--lr", "2e-4", "--schedule", "cosine",  # a warm restart at stage 2's rate
]
CAMERA = [  # on the BSDS photos, as colour or as grey
    "--noise", "camera", "--sigma", "25:400",  # photons for white: dim indoor light to daylight's shadows
    "--patch-size", "128", "--batch-size", "4",  # as stage 2: the same pixels per step
    "--downscale", "2",  # cleaner targets: the photos' own noise and JPEG artefacts averaged out
    "--epochs", "40", "--steps-per-epoch", "400",  # 16k steps; color gained 0.05 dB after its 11th epoch
    "--lr", "1e-4", "--warmup", "500",  # fine-tuning: a fresh Adam, eased in so the first steps do no harm
]
PHOTOS = [
    "--noise", "gaussian", "--sigma", "0:75",  # as the start model: one model for every level
    "--patch-size", "128", "--batch-size", "4",  # as stage 2: the same pixels per step
    "--epochs", "60", "--steps-per-epoch", "400",  # 24k steps: 96k patches from 167 photos, with turns
    "--lr", "1e-4", "--warmup", "500", "--schedule", "cosine",  # fine-tuning, eased in, as CAMERA
]
# Each model's stages after the first; stage k starts from stage k-1's last checkpoint. A model
# that starts from a shipped one (camera=True) has these stages alone, the first from its file.
LATER_STAGES = {"gray": [STAGE2, SETTLE, GRAY_PHOTOS], "color": [STAGE2, DOWNSCALED, DOWNSCALED_SETTLE],
                "color-camera": [CAMERA], "gray-camera": [CAMERA], "color-photos": [PHOTOS]}
# Then the stages that need a GPU: train_scripts/gpu_finetune.py under Keras's JAX backend, two
# million pixels a step (32 patches of 256x256, or 128 of 128x128), about 17 ms a step on an
# H200; each starts from the previous stage's best model with a fresh, warmed-up Adam at 2e-4.
GPU_STAGES = {
    "gray": [
        ["--data", "bsds400_color", "--steps", "20000"],  # 4 minutes: as many pixels as stages 1-4 saw three times
        ["--data", "bsds400_color", "--steps", "14000"],  # a second cosine cycle: stage 5 still gained at its end
    ],
    # gray's stage 6 gained only 0.02 dB: capacity, not steps, was the limit. Two residual
    # blocks a level (4.3M parameters, 17 MB), the added ones starting as identities; twice the
    # rate, since the new blocks start from zero while the old ones are already trained.
    "gray-large": [
        ["--data", "bsds400_color", "--repeats", "2", "--lr", "0.0004", "--steps", "9000", "--val-every", "3000"],
    ],
    "color": [
        # as its stages 3 and 4: the photos shrunk by 2, 128x128 patches (their 160x240 fits no 256)
        ["--data", "bsds400_color", "--downscale", "2", "--patch-size", "128", "--batch-size", "128",
         "--steps", "13000"],
    ],
}
GPU_SCRIPT = "train_scripts/gpu_finetune.py"
THIS_SCRIPT = "train_scripts/natural_images.py"


def stage_outputs(out: Path, name: str) -> list[Path]:
    """The model each stage of ``name`` writes; a stage's run state lives beside it in MODEL.run/
    (a GPU stage's log in MODEL.json). A model that starts from another lists that one's stages
    first, then its own GPU stages from stage1."""
    spec = MODELS[name]
    if "start" in spec:
        own = len(LATER_STAGES.get(name, [])) + len(GPU_STAGES.get(name, []))
        return [*stage_outputs(out.parent / f"{spec['start']}.keras", spec["start"]),
                *(Path(f"{out}.run") / f"stage{index}.keras" for index in range(1, own + 1))]
    stages = len(LATER_STAGES[name]) + len(GPU_STAGES[name])
    return [out, *(Path(f"{out}.run") / f"stage{index}.keras" for index in range(2, stages + 2))]


def train_commands(name: str, datasets: Path, out: Path) -> list[list[str]]:
    """The command of each stage, in order (those of the model it starts from first)."""
    spec = MODELS[name]
    outputs = stage_outputs(out, name)
    if "train" in spec and "start" in spec:  # fine-tuned from the shipped start model: shipped first, if not yet
        start = out.parent / f"{spec['start']}.keras"
        commands = [*train_commands(spec["start"], datasets, start),
                    ["python", THIS_SCRIPT, "ship", spec["start"], "--datasets", str(datasets)]]
        sets = spec["train"] if isinstance(spec["train"], list) else [spec["train"]]
        commands.append(["denoise", "train", *(word for name in sets for word in ("--data", str(datasets / name))),
                         "--val-data", str(datasets / spec["validation"]), *(["--hold-out"] if spec.get("hold_out") else []),
                         "--val-count", str(spec["val_count"]), "--channels", str(spec["channels"]),
                         *LATER_STAGES[name][0], "--init-from", str(start), "--out", str(outputs[-1])])
        return commands
    if "start" in spec:
        commands = train_commands(spec["start"], datasets, out.parent / f"{spec['start']}.keras")
    else:
        base = [
            "denoise", "train", "--data", str(datasets / spec["train"]), "--val-data",
            str(datasets / spec["validation"]), "--val-count", str(spec["val_count"]),
            "--channels", str(spec["channels"]), *COMMON,
        ]
        commands = [[*base, "--name", name, "--out", str(outputs[0])]]
        for options, previous, output in zip(LATER_STAGES[name], outputs, outputs[1:]):
            commands.append([*_override(base, _data_sets(options, datasets)), "--init-from",
                             f"{previous}.run/checkpoint.keras", "--out", str(output)])
    first = len(commands)
    for options, previous, output in zip(GPU_STAGES[name], outputs[first - 1:], outputs[first:]):
        commands.append(["python", GPU_SCRIPT, str(previous), *_data_sets(options, datasets),
                         "--val-data", str(datasets / spec["validation"]), "--channels", str(spec["channels"]),
                         "--out", str(output)])
    return commands


def _data_sets(options: list[str], datasets: Path) -> list[str]:
    """``options`` with the value of --data, a data set's name, made a folder of ``datasets``."""
    return [str(datasets / value) if flag == "--data" else value for flag, value in zip(["", *options], options)]


def _override(command: list[str], options: list[str]) -> list[str]:
    """``command`` with the values of ``options`` (pairs of flag and value) in place of its own,
    or added where it has none."""
    command = list(command)
    for flag, value in zip(options[::2], options[1::2]):
        if flag in command:
            command[command.index(flag) + 1] = value
        else:
            command += [flag, value]
    return command


def latest_model(out: Path, name: str) -> Path:
    """The best model of the latest stage that has run; its checkpoint when the best model is
    not kept (later stages' best models are not committed: the shipped file is their copy)."""
    for model in reversed(stage_outputs(out, name)):
        for candidate in (model, Path(f"{model}.run") / "checkpoint.keras"):
            if candidate.exists():
                return candidate
    raise SystemExit(f"nothing to ship: no model at {out} and no run beside it")


def _stage_of(source: Path, outputs: list[Path]) -> int:
    """Which stage ``source`` comes from: its best model, or a file in its run folder."""
    for index in reversed(range(len(outputs))):
        if source.resolve() in (outputs[index].resolve(), *Path(f"{outputs[index]}.run").resolve().glob("*.keras")):
            return index
    return len(outputs) - 1


def ship(name: str, datasets: Path, source: Path, weights: Path) -> dict:
    from denoise import models, registry, runtime

    runtime.tensorflow()
    import keras

    from denoise.train import save_inference_model

    target = weights / f"{name}.keras"
    save_inference_model(keras.saving.load_model(source, compile=False), target)
    outputs = stage_outputs(target, name)
    stages = [stage for model in outputs[:_stage_of(source, outputs) + 1] if (stage := _stage_record(model))]
    spec = MODELS[name]
    commands = train_commands(name, Path("../shared/datasets"), Path(f"weights/{name}.keras"))
    metrics = measure(name, target, datasets)
    loaded = registry.load(str(target))
    model_args = {key: value for key, value in models.unet_args(loaded.model).items()
                  if key not in ("channels", "noise_level_input") and (key != "repeats" or value > 1)}
    manifest = registry.load_manifest(weights)
    entry = {
        "name": name, "file": target.name, "sha256": registry.sha256_of(target),
        "size_bytes": target.stat().st_size, "architecture": "unet",
        "model_args": model_args, "channels": spec["channels"],
        "noise": ({"type": "camera", "low": 25.0, "high": 400.0, "clip": True} if spec.get("camera")
                  else {"type": "gaussian", "low": 0.0, "high": 75.0, "clip": True}),
        "data": " + ".join(dict.fromkeys(command[command.index("--data") + 1] for command in commands
                                         if "--data" in command)),
        "validation_data": f"../shared/datasets/{spec['validation']} (validation only)",
        "command": " && ".join(shlex.join(command) for command in commands),
        "rebuild": f"python train_scripts/natural_images.py train {name} --datasets ../shared/datasets",
        "parameters": int(loaded.model.count_params()),
        "training": {"source": str(source.resolve().relative_to(ROOT)) if source.resolve().is_relative_to(ROOT)
                     else str(source), "epochs": sum(stage.get("epochs", 0) for stage in stages),
                     "seconds": round(sum(stage["seconds"] for stage in stages), 1),
                     "gpu_seconds": round(sum(stage["seconds"] for stage in stages if "device" in stage), 1),
                     "best_val_psnr": stages[-1]["best_val_psnr"], "stages": stages},
        "metrics": metrics,
        "metrics_protocol": (_camera_protocol(spec["validation"]) if spec.get("camera") else
                             _protocol(spec["validation"], "; *_channelwise: colour images through this grey model "
                                       "channel by channel" if spec.get("channelwise") else "")),
    }
    manifest["models"] = [model for model in manifest["models"] if model["name"] != name] + [entry]
    _assign_defaults(manifest["models"])
    registry.write_manifest(manifest, weights)
    return entry


def measure(name: str, target: Path, datasets: Path) -> dict:
    """The metrics of a model by the protocol: on its validation set (camera noise for the camera
    models), and channel by channel on colour images for the grey ones."""
    spec = MODELS[name]
    metrics = (_measure_camera if spec.get("camera") else _measure)(target, datasets / spec["validation"],
                                                                    spec["validation"])
    if spec.get("channelwise"):
        metrics.update(_measure(target, datasets / spec["channelwise"], f"{spec['channelwise']}_channelwise"))
    return metrics


def remeasure(name: str, datasets: Path, weights: Path) -> dict:
    """Measure a shipped model again (after a change in how `denoise run` treats its images) and
    update its manifest entry; its file is left as it is."""
    from denoise import registry

    manifest = registry.load_manifest(weights)
    entry = next((model for model in manifest["models"] if model["name"] == name), None)
    if entry is None:
        raise SystemExit(f"{name}: not shipped in {weights}; ship it first")
    if registry.sha256_of(weights / entry["file"]) != entry["sha256"]:
        raise SystemExit(f"{name}: {entry['file']} does not match its manifest entry; ship it again")
    entry["metrics"] = measure(name, weights / entry["file"], datasets)
    _assign_defaults(manifest["models"])
    registry.write_manifest(manifest, weights)
    return entry


def _stage_record(model: Path) -> dict | None:
    """What a stage's run left beside ``model``: epochs (or steps and device), seconds and best
    validation PSNR at sigma 25; None for a stage that has not run."""
    state, log = Path(f"{model}.run/state.json"), Path(f"{model}.json")
    if state.exists():
        stage = json.loads(state.read_text())["state"]
        return {"epochs": stage["epoch"], "seconds": round(stage["seconds"], 1),
                "best_val_psnr": round(stage["best_psnr"], 3)}
    if log.exists():
        record = json.loads(log.read_text())
        best = next(entry for entry in record["history"] if entry["step"] == record["best_step"])
        return {"steps": record["steps"], "device": record["device"], "seconds": round(record["minutes"] * 60, 1),
                "best_val_psnr": best["psnr_sigma25"]}
    return None


def ship_mean(name: str, datasets: Path, weights: Path) -> dict:
    """Write the manifest entry of a mean of shipped models, measured by the protocol."""
    from denoise import registry

    manifest = registry.load_manifest(weights)
    members = [registry.find(member, weights) for member in MEANS[name]]
    if None in members:
        raise SystemExit(f"{name}: ship its members first ({', '.join(MEANS[name])})")
    entry = {
        "name": name, "members": MEANS[name], "architecture": "mean", "channels": 3,
        "noise": members[0]["noise"], "data": " + ".join(dict.fromkeys(data for member in members for data in member["data"].split(" + "))),
        "validation_data": f"../shared/datasets/{COLOUR_SET} (validation only)",
        "command": " && ".join(member["command"] for member in members),
        "rebuild": f"python train_scripts/natural_images.py train {shlex.quote(name)} --datasets ../shared/datasets",
        "parameters": sum(member["parameters"] for member in members),
        "training": {"seconds": round(sum(member["training"]["seconds"] for member in members), 1),
                     "members": {member["name"]: member["sha256"] for member in members}},
    }
    manifest["models"] = [model for model in manifest["models"] if model["name"] != name] + [entry]
    registry.write_manifest(manifest, weights)  # measured through the registry, so it must be listed
    os.environ["DENOISE_WEIGHTS"] = str(weights)
    entry["metrics"] = _measure(name, datasets / COLOUR_SET, COLOUR_SET)
    entry["metrics_protocol"] = _protocol(COLOUR_SET)
    _assign_defaults(manifest["models"])
    registry.write_manifest(manifest, weights)
    return entry


def _protocol(data_set: str, extra: str = "") -> str:
    return (f"{data_set}: Gaussian noise with per-image seeds (seed 0), rounded and clipped to uint8 PNG; denoise "
            "run with the true sigma, or --sigma auto (_auto); PSNR (peak 255) and SSIM (window 11, sigma 1.5, "
            "range 255); means over images" + extra)


def _camera_protocol(data_set: str) -> str:
    return (f"{data_set}: a camera's noise (denoise.noise.camera_noise) at 200 and 50 photons for white, with "
            "per-image seeds (seed 0), rounded and clipped to uint8 PNG; denoise run --noise camera (sigma auto); "
            "*_gaussian_sigma25_auto: Gaussian noise of sigma 25 through the same model, --noise gaussian --sigma "
            "auto; PSNR (peak 255) and SSIM (window 11, sigma 1.5, range 255); means over images")


# A manifest's figures are the model's own: one float32 pass, whatever `denoise run` defaults to here.
MODEL_ITSELF = dict(precision="float32", ensemble=1)


def _inference(**fields):
    """The settings a manifest figure is measured with: the model itself, as MODEL_ITSELF."""
    from denoise.settings import Inference

    return Inference(**MODEL_ITSELF, **fields)


def _measure_camera(model: Path, folder: Path, prefix: str) -> dict:
    """PSNR / SSIM by the protocol on a camera's noise at 200 and 50 photons, and on Gaussian
    noise of sigma 25, which these models are not for."""
    from denoise.evaluate import EvalOptions, evaluate
    from denoise.noise import NoiseSpec

    metrics = {}
    for kind, level, treatment, key in (("camera", 200, "camera", "camera200"), ("camera", 50, "camera", "camera50"),
                                        ("gaussian", 25, "gaussian", "gaussian_sigma25_auto")):
        result = evaluate(EvalOptions(clean=(folder,), noise=NoiseSpec(kind, level, level),
                                      inference=_inference(model=str(model), noise=treatment)))["mean"]
        metrics[f"{prefix}_psnr_{key}"] = round(result["psnr"], 3)
        metrics[f"{prefix}_ssim_{key}"] = round(result["ssim"], 4)
        metrics[f"{prefix}_noisy_psnr_{key}"] = round(result["noisy_psnr"], 3)
        print(prefix, key, metrics[f"{prefix}_psnr_{key}"], flush=True)
    return metrics


def _measure(model: Path | str, folder: Path, prefix: str) -> dict:
    """PSNR / SSIM by the protocol at sigma 15, 25 and 50, told the true sigma and with auto."""
    from denoise.evaluate import EvalOptions, evaluate
    from denoise.noise import NoiseSpec

    metrics = {}
    for sigma in (15, 25, 50):
        for told in (str(sigma), "auto"):
            result = evaluate(EvalOptions(clean=(folder,), noise=NoiseSpec("gaussian", sigma, sigma),
                                          inference=_inference(model=str(model),
                                                               sigma=None if told == "auto" else float(told))))["mean"]
            suffix = "" if told != "auto" else "_auto"
            metrics[f"{prefix}_psnr_sigma{sigma}{suffix}"] = round(result["psnr"], 3)
            metrics[f"{prefix}_ssim_sigma{sigma}{suffix}"] = round(result["ssim"], 4)
            metrics[f"{prefix}_noisy_psnr_sigma{sigma}"] = round(result["noisy_psnr"], 3)
            print(prefix, sigma, told, metrics[f"{prefix}_psnr_sigma{sigma}{suffix}"], flush=True)
    return metrics


def _assign_defaults(entries: list[dict]) -> None:
    """Grey images go to the grey model that measures best on Set12 at sigma 25; colour images to
    whichever of color, the means and the grey models run channel by channel measures best on
    McMaster18 at sigma 25; a camera's noise to the camera models."""
    for entry in entries:
        entry["default_for"] = [role for role in entry.get("default_for", []) if role not in ("gray", "color")]
        spec = MODELS.get(entry["name"], {})
        if spec.get("camera"):  # the one model of its kind: for a camera's noise on grey or colour images
            entry["default_for"] = ["gray-camera" if spec["channels"] == 1 else "color-camera"]
    greys = [entry for entry in entries
             if MODELS.get(entry["name"], {}).get("channels") == 1 and not MODELS[entry["name"]].get("camera")]
    key = f"{COLOUR_SET}_psnr_sigma25"
    candidates = [(entry.get("metrics", {}).get(key, float("-inf")), entry, entry["name"])
                  for entry in entries if entry["name"] == "color" or "members" in entry]
    candidates += [(entry.get("metrics", {}).get(f"{COLOUR_SET}_channelwise_psnr_sigma25", float("-inf")), entry,
                    f"{entry['name']} run channel by channel") for entry in greys]
    if greys:
        max(greys, key=lambda entry: entry.get("metrics", {}).get("set12_psnr_sigma25", float("-inf")))[
            "default_for"].append("gray")
    if not candidates:
        return
    best, winner, label = max(candidates, key=lambda candidate: candidate[0])
    winner["default_for"].append("color")
    for psnr, entry, _ in candidates:
        if entry in greys:
            continue
        if entry is winner:
            entry.pop("note", None)
        else:
            entry["note"] = (f"Not the colour default: on {COLOUR_SET} at sigma 25 it measures {psnr:.2f} dB against "
                             f"{best:.2f} for {label}; ship makes it the default when it is better.")


def train(name: str, datasets: Path, weights: Path) -> None:
    """Run the stages in order; a finished GPU stage is skipped, and the first unfinished one
    stops the run with its command when this machine has no GPU that JAX can use."""
    from denoise import registry

    def shipped(model: str) -> bool:
        return bool(registry.find(model, weights)) and (weights / f"{model}.keras").exists()

    commands = train_commands(name, datasets, weights / f"{name}.keras")
    starts = [index for index, command in enumerate(commands) if command[1] == THIS_SCRIPT and shipped(command[3])]
    for command in commands[starts[-1] + 1:] if starts else commands:  # a shipped start's stages are done
        if command[1] == THIS_SCRIPT:  # ship the model the next stage starts from
            code = subprocess.call([sys.executable, str(ROOT / THIS_SCRIPT), *command[2:], "--weights", str(weights)])
        elif command[1] != GPU_SCRIPT:
            code = subprocess.call([*command, "--resume"])  # --resume: each stage continues where it stopped
        elif gpu_stage_finished(Path(command[command.index("--out") + 1])):
            continue
        elif not _jax_has_gpu():
            sys.exit(f"{name}: the next stage needs a GPU that JAX can use (pip install 'jax[cuda12]'): "
                     f"{shlex.join(command)}")
        elif not Path(command[2]).exists():
            sys.exit(f"{name}: the next stage starts from {command[2]}, which is missing: rerun the stage "
                     f"that writes it, or start from the shipped model: {shlex.join(command)}")
        else:
            code = subprocess.call([sys.executable, str(ROOT / GPU_SCRIPT), *command[2:]])
        if code:
            sys.exit(code)


def gpu_stage_finished(output: Path) -> bool:
    """Whether a GPU stage's log reached its last step. Its model file is not committed (the
    shipped weights are the last stage's copy), so a fresh clone has the log alone."""
    log = Path(f"{output}.json")
    if not log.exists():
        return False
    record = json.loads(log.read_text())
    return bool(record["history"]) and record["history"][-1]["step"] == record["steps"]


def _jax_has_gpu() -> bool:
    probe = "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"
    return subprocess.call([sys.executable, "-c", probe], stderr=subprocess.DEVNULL) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["train", "ship", "measure"])
    parser.add_argument("model", choices=sorted(MODELS) + sorted(MEANS))
    parser.add_argument("--datasets", type=Path, required=True, help="Folder holding the data sets.")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="Registry folder: training and shipping.")
    parser.add_argument("--source", type=Path,
                        help="ship: the model to ship (default: the best model of the latest stage that has one).")
    args = parser.parse_args()
    from denoise import registry

    if args.model in MEANS:  # a mean trains its members and ships once they are shipped
        if args.action == "train":
            for member in MEANS[args.model]:
                train(member, args.datasets, args.weights)
        else:  # ship and measure alike: a mean has no file of its own
            print(json.dumps(ship_mean(args.model, args.datasets, args.weights)["metrics"], indent=2))
        return
    out = args.weights / f"{args.model}.keras"
    if args.action == "train":
        train(args.model, args.datasets, args.weights)
        return
    if args.action == "measure":
        print(json.dumps(remeasure(args.model, args.datasets, args.weights)["metrics"], indent=2))
        return
    source = args.source or latest_model(out, args.model)
    print(json.dumps(ship(args.model, args.datasets, source, args.weights)["metrics"], indent=2))
    for mean, members in MEANS.items():  # a mean of the new model measures differently now
        if args.model in members and all(registry.find(member, args.weights) for member in members):
            print(mean, json.dumps(ship_mean(mean, args.datasets, args.weights)["metrics"], indent=2))


if __name__ == "__main__":
    main()
