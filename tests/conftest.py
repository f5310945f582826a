"""Shared fixtures: tiny models saved at test time, a temporary registry, image makers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from denoise import runtime

runtime.tensorflow("cpu")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny models (4 filters): a grey conv autoencoder and grey/colour U-Nets with a
    noise-level input. Untrained is enough: these tests check the plumbing, not the quality."""
    import keras

    from denoise import models

    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    built = {
        "conv": models.conv_autoencoder(filters=4, channels=1),
        "unet-gray": models.unet(channels=1, filters=4, depth=2, blocks=1),
        "unet-color": models.unet(channels=3, filters=4, depth=2, blocks=1),
    }
    paths = {}
    for name, model in built.items():
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])
    return paths


@pytest.fixture()
def registry_dir(tmp_path, tiny_models, monkeypatch) -> Path:
    """A weights folder with a manifest of the tiny U-Nets as the grey and colour defaults."""
    folder = tmp_path / "weights"
    folder.mkdir()
    entries = []
    for name, role in (("unet-gray", "gray"), ("unet-color", "color")):
        data = tiny_models[name].read_bytes()
        (folder / f"{name}.keras").write_bytes(data)
        entries.append({
            "name": name, "file": f"{name}.keras", "sha256": hashlib.sha256(data).hexdigest(),
            "architecture": "unet", "channels": 1 if role == "gray" else 3, "default_for": [role],
            "noise": {"type": "gaussian", "low": 0, "high": 75}, "data": "generated", "parameters": 1,
        })
    (folder / "manifest.json").write_text(json.dumps({"models": entries}))
    monkeypatch.setenv("DENOISE_WEIGHTS", str(folder))
    return folder


def heeding_ctrl_c() -> None:
    """For ``Popen(preexec_fn=...)``: the child takes SIGINT as a terminal's Ctrl-C, even when the
    suite runs as a background job, which starts with SIGINT ignored (and its children inherit that)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def brightness_steps(size: int = 256) -> np.ndarray:
    """Flat steps from dark to bright with gentle shading, in [0, 1]: every brightness band has
    flat blocks, as signal-dependent noise is measured on."""
    y, x = np.mgrid[0:size, 0:size]
    steps = np.floor(x / (size / 8)) / 8 + 0.06
    return np.clip(steps + 0.03 * np.sin(y / 40.0), 0, 1)


def noisy_array(height: int, width: int, channels: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A smooth gradient with noise: something a denoiser has to work on."""
    rng = np.random.default_rng(seed)
    peak = np.iinfo(dtype).max
    y, x = np.mgrid[0:height, 0:width]
    base = (0.5 + 0.4 * np.sin(x / 7.0 + seed) * np.cos(y / 5.0))[..., None] * np.ones(channels)
    noisy = base + rng.normal(0, 0.1, (height, width, channels))
    array = np.clip(np.round(noisy * peak), 0, peak).astype(dtype)
    return array[..., 0] if channels == 1 else array


def save(path: Path, array: np.ndarray, mode: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode and image.mode != mode:
        image = image.convert(mode)
    image.save(path, **options)
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def add_camera_models(folder, kind="camera", channels=(1, 3)):
    """Copies of the tiny U-Nets registered as the models for a camera's noise (``kind`` camera)
    or a photo's (``photo``)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in list(manifest["models"]):
        if entry["channels"] in channels:
            role = f"gray-{kind}" if entry["channels"] == 1 else f"color-{kind}"
            manifest["models"].append({**entry, "name": role, "default_for": [role],
                                       "noise": {**entry["noise"], "type": kind}})
    (folder / "manifest.json").write_text(json.dumps(manifest))


def grainy_array(size: int, channels: int, sigma: float, blur: float, seed: int = 0) -> np.ndarray:
    """A smooth picture with Gaussian noise of ``sigma`` (0-255), blurred over ``blur`` pixels
    (0: white) as a camera's demosaicing and processing spread it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = (120 + 60 * np.sin(x / 11.0) * np.cos(y / 9.0))[..., None] * np.ones(channels)
    noise = rng.normal(0, 1, (size, size, channels))
    if blur:
        import cv2

        noise = cv2.GaussianBlur(noise, (0, 0), blur).reshape(noise.shape)
    noise *= sigma / noise.std()
    array = np.clip(np.round(base + noise), 0, 255).astype(np.uint8)
    return array[..., 0] if channels == 1 else array
