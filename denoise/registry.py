"""The model registry: ``weights/manifest.json``, sha256 checks, loading models by name or path.

Each manifest entry names a ``.keras`` file beside the manifest and records what it is for
(architecture and its arguments, channels, noise type and level range, data set), the exact
command that rebuilds it, and its measured metrics. A model is only loaded after its sha256
matches the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def weights_dir() -> Path:
    """The registry folder: ``$DENOISE_WEIGHTS`` if set; else the models installed inside the
    package (``denoise/weights/`` of a wheel or ``pip install .``); else the checkout's
    ``weights/`` beside the package (clones and editable installs, where training records)."""
    if os.environ.get("DENOISE_WEIGHTS"):
        return Path(os.environ["DENOISE_WEIGHTS"])
    installed = PACKAGE / "weights"
    return installed if installed.is_dir() else PACKAGE.parent / "weights"


class WeightsError(ValueError):
    """A weights file that is missing, does not match its sha256, or cannot be loaded."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference and what the pipeline needs to know about it."""

    model: object  # keras.Model
    name: str
    channels: int  # 1 or 3
    noise_level_input: bool
    tile_size: int | None  # fixed input size (dense models), else None
    multiple: int  # input sizes must be multiples of this
    passes: int = 1  # network evaluations per tile (a mean runs each member, grey ones per channel)
    ensemble: int | None = None  # the self-ensemble its manifest entry asks for under --ensemble auto


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(folder: Path | None = None) -> dict:
    path = Path(folder or weights_dir()) / "manifest.json"
    if not path.exists():
        return {"models": []}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("models"), list):
            raise ValueError("no 'models' list")
    except (OSError, ValueError, AttributeError) as error:
        raise WeightsError(f"{path}: not a readable manifest ({str(error).splitlines()[0][:200]})") from None
    for index, entry in enumerate(manifest["models"]):
        if problem := _entry_problem(index, entry, path.parent):
            raise WeightsError(f"{path}: {problem}")
    return manifest


def _entry_problem(index: int, entry, folder: Path) -> str | None:
    """What is wrong with a manifest entry: it must be an object with a name and either a weights
    ``file`` (not a folder) and its ``sha256``, or ``members`` (the names of other entries)."""
    if not isinstance(entry, dict):
        return f"models[{index}] is not an object ({json.dumps(entry)[:60]})"
    if not isinstance(entry.get("name"), str) or not entry["name"]:
        return f"models[{index}] has no 'name' ({json.dumps(entry)[:60]})"
    if "members" in entry:
        members = entry["members"]
        ok = isinstance(members, list) and all(isinstance(member, str) for member in members)
        if not ok:
            return f"model {entry['name']!r}: 'members' is not a list of model names"
        if "luma" in entry:
            blend = entry["luma"]
            numbers = isinstance(blend, dict) and "weight" in blend and all(
                isinstance(blend.get(key, 1.0), (int, float)) for key in ("weight", "level"))
            if len(members) != 2 or not numbers:
                return (f"model {entry['name']!r}: 'luma' takes two members (colour, grey) and "
                        '{"weight": number, "level": number}')
        return None
    missing = [key for key in ("file", "sha256") if not isinstance(entry.get(key), str) or not entry[key]]
    if missing:
        return f"model {entry['name']!r} has no {' or '.join(repr(key) for key in missing)}"
    if (folder / entry["file"]).is_dir():
        return f"model {entry['name']!r}: {folder / entry['file']} is a folder, not a weights file"
    if "ensemble" in entry and entry["ensemble"] not in (1, 2, 4, 8):
        return f"model {entry['name']!r}: 'ensemble' must be 1, 2, 4 or 8, not {json.dumps(entry['ensemble'])}"
    return None


def entries(folder: Path | None = None) -> list[dict]:
    return load_manifest(folder)["models"]


def find(name: str, folder: Path | None = None) -> dict | None:
    return next((entry for entry in entries(folder) if entry["name"] == name), None)


def default_name(channels: int, folder: Path | None = None, noise: str = "gaussian") -> str:
    """The shipped model for grey (1) or colour (3) images: the entry marked ``default_for``,
    else any grey model (colour images then go through it channel by channel). With ``noise``
    camera or photo, the entry marked for that noise on them (``color-camera``, ``color-photo``)
    comes first."""
    role = "gray" if channels == 1 else "color"
    models = entries(folder)
    for entry in (models if noise in ("camera", "photo") else []):
        if f"{role}-{noise}" in entry.get("default_for", []):
            return entry["name"]
    for entry in models:
        if role in entry.get("default_for", []):
            return entry["name"]
    for entry in models:
        if "gray" in entry.get("default_for", []):
            return entry["name"]
    if not models:
        raise WeightsError(f"no models found in {Path(folder or weights_dir()) / 'manifest.json'}")
    return models[0]["name"]


def load(name_or_path: str, folder: Path | None = None) -> LoadedModel:
    """Load a registry model by name (sha256 checked) or any ``.keras`` file by path."""
    entry = find(name_or_path, folder)
    if entry is not None and "members" in entry:
        return _load_mean(entry, folder)
    if entry is not None:
        verify(entry["name"], folder)
        path = Path(folder or weights_dir()) / entry["file"]
        name = entry["name"]
    else:
        path = Path(name_or_path)
        if path.suffix != ".keras" or not path.is_file():
            known = ", ".join(model["name"] for model in entries(folder)) or "none"
            raise WeightsError(f"{name_or_path}: not a registered model ({known}) nor a .keras file")
        name = path.stem
        entry = _entry_beside(path)
    loaded = describe(_load_keras(path), name)
    return loaded if entry is None or "ensemble" not in entry else dataclasses.replace(loaded, ensemble=entry["ensemble"])


def _entry_beside(path: Path) -> dict | None:
    """The entry for a .keras file in the manifest.json beside it (``denoise adapt`` writes one),
    read only for what it asks of inference; a file without one, or with an unreadable one, runs as
    any .keras file does."""
    try:
        return next((entry for entry in entries(path.parent) if entry.get("file") == path.name), None)
    except WeightsError:
        return None


def _load_mean(entry: dict, folder: Path | None) -> LoadedModel:
    """An entry with ``members`` (names of entries with files) is the mean of those models,
    built at load: no weights of its own, each member's file checked as usual. With ``luma``
    (``{"weight": w, "level": f}``) it is instead the first (colour) member with its luma moved
    ``w`` of the way to the second (grey) member's on the luma, told ``f`` times the level
    (models.luma_blend)."""
    from denoise import models

    members = []
    for name in entry["members"]:
        member = find(name, folder)
        if member is None or "members" in member:
            raise WeightsError(f"{entry['name']}: member {name!r} is not a model with a weights file in the manifest")
        members.append(load(name, folder))
    channels = int(entry.get("channels", max(member.channels for member in members)))
    blend = entry.get("luma")
    try:
        if blend is None:
            model = models.mean_of([member.model for member in members], channels)
        else:
            model = models.luma_blend(members[0].model, members[1].model, blend["weight"], blend.get("level", 1.0))
    except ValueError as error:
        raise WeightsError(f"{entry['name']}: {error}") from None
    multiple = math.lcm(*(member.multiple for member in members))
    passes = len(members) if blend is not None else sum(channels if member.channels == 1 else 1 for member in members)
    return LoadedModel(model, entry["name"], channels, noise_level_input=True, tile_size=None, multiple=multiple,
                       passes=passes, ensemble=entry.get("ensemble"))


def _load_keras(path: Path):
    import keras

    from denoise import models  # noqa: F401  registers the custom layers

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise WeightsError(f"{path}: cannot load the model ({str(error).splitlines()[0][:200]})") from None


def describe(model, name: str = "model") -> LoadedModel:
    """Read the channels, noise-level input, fixed size and size multiple off a Keras model."""
    image_shape = model.inputs[0].shape
    fixed = image_shape[1] if image_shape[1] is not None else None
    return LoadedModel(
        model=model,
        name=name,
        channels=int(image_shape[-1]),
        noise_level_input=len(model.inputs) > 1,
        tile_size=fixed,
        multiple=size_multiple(model),
    )


def size_multiple(model) -> int:
    """The product of all downsampling factors: input sizes must be multiples of it. The nested
    models of the architectures here (an encoder and its decoder, the network on phases, the
    members of a mean or blend saved as one file) never downsample each other's output, so theirs
    combine by least common multiple (a saved color-photo+gray-large: 16, not 16 x 16)."""
    from denoise.models import PixelUnshuffle, ToPhases

    factor, nested = 1, 1
    for layer in model.layers:
        if hasattr(layer, "layers"):
            nested = math.lcm(nested, size_multiple(layer))
        elif isinstance(layer, PixelUnshuffle):
            factor *= layer.factor
        elif isinstance(layer, ToPhases):
            factor *= 2
        elif type(layer).__name__ in ("Conv2D", "MaxPooling2D", "AveragePooling2D"):
            strides = getattr(layer, "strides", (1, 1))
            factor *= int(strides[0])
    return factor * nested


def record_training(options, summary: dict) -> dict:
    """Add or replace the manifest entry of a model trained into a weights folder."""
    from denoise.data import describe_validation

    out = Path(options.out)
    folder = out.parent
    manifest = load_manifest(folder)
    old = find(options.name, folder) or {}
    data = options.data
    # Metrics measured on an earlier file no longer hold; default_for and notes are kept.
    old.pop("metrics", None)
    noise = f"sigma{data.validation_sigma:g}" if data.noise.kind == "gaussian" else data.noise.kind
    entry = {
        **old,
        "name": options.name,
        "file": out.name,
        "sha256": sha256_of(out),
        "size_bytes": out.stat().st_size,
        "architecture": options.arch,
        "model_args": options.model_args,
        "channels": data.channels,
        "noise": {"type": data.noise.kind, "low": data.noise.low, "high": data.noise.high, "clip": data.clip},
        "data": data.source,
        "validation_data": describe_validation(data),
        "command": options.command,
        "parameters": summary["parameters"],
        "training": {key: summary[key] for key in ("epochs", "seconds", "best_val_psnr")},
        "metrics": {f"val_psnr_{noise}": summary["best_val_psnr"]},
    }
    manifest["models"] = [model for model in manifest["models"] if model["name"] != options.name] + [entry]
    write_manifest(manifest, folder)
    return entry


def write_manifest(manifest: dict, folder: Path | None = None) -> None:
    from denoise.io import write_atomic

    write_atomic(Path(folder or weights_dir()) / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())


def verify(name: str, folder: Path | None = None) -> None:
    """Check that a registry model's files (each member's, for a mean) exist and match their
    sha256, without loading them: a ``WeightsError`` names the first that does not."""
    entry = find(name, folder)
    if entry is None:
        return
    for member in entry.get("members", []):
        verify(member, folder)
    if "members" not in entry:
        path = Path(folder or weights_dir()) / entry["file"]
        if not path.is_file():
            raise WeightsError(f"{path}: weights file missing (expected sha256 {entry['sha256']})")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise WeightsError(f"{path}: sha256 {actual} does not match the manifest's {entry['sha256']}; "
                               "the file is corrupt or was replaced")
