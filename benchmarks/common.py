"""Helpers shared by the benchmark scripts: the noise protocol, metrics, timed subprocesses, JSON.

The scripts import this module as a sibling (``python benchmarks/quality.py`` puts
``benchmarks/`` on ``sys.path``). Nothing here imports TensorFlow: the package's models run in
``denoise run`` subprocesses, so their start-up, memory and time are measured as a user sees them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from denoise.noise import NoiseSpec, add_noise_uint, seed_for
from denoise.runtime import native_bfloat16

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
NOISE_SEED = 0  # the default --seed of `denoise eval`, so both make the same noisy files


# --------------------------------------------------------------------------------------------
# Machine and load
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the numbers were measured on: CPU, cores usable, memory, library versions."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory = None
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "memory_gib": None if memory is None else round(memory, 1),
        # --precision auto's choice: the defaults' figures differ by it (Set12 sigma 25: 30.27 / 30.20 dB)
        "native_bfloat16": native_bfloat16(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in (
            "denoise", "tensorflow", "keras", "numpy", "pillow", "opencv-python-headless",
            "scikit-image", "bm3d")},
    }


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: read timings against them)."""
    return [round(value, 2) for value in os.getloadavg()]


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def gpu_visible() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


# --------------------------------------------------------------------------------------------
# The noise protocol
# --------------------------------------------------------------------------------------------


def parse_noise(text: str) -> NoiseSpec:
    """``25`` (Gaussian sigma), ``gaussian:25``, ``poisson:30``, ``salt-pepper:0.05``, ``camera:100``."""
    if ":" in text:
        kind, level = text.split(":", 1)
    else:
        kind, level = "gaussian", text
    return NoiseSpec.parse(kind, level)


def noise_label(spec: NoiseSpec) -> str:
    if spec.kind == "gaussian":
        return f"sigma {spec.low:g}"
    if spec.kind in ("poisson", "camera"):
        return f"{spec.kind} peak {spec.low:g}"
    if spec.kind == "salt-pepper":
        return f"salt-pepper {spec.low * 100:g}%"
    return spec.describe()


def noisy_copy(clean: np.ndarray, name: str, spec: NoiseSpec, seed: int = NOISE_SEED) -> np.ndarray:
    """The protocol: add noise with the per-image seed of ``denoise eval``, round, clip (uint8)."""
    return add_noise_uint(clean, spec, np.random.default_rng(seed_for(name, seed)))


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def read_uint8(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG as uint8 (H, W) for grey or (H, W, 3) for colour."""
    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if "A" in image.mode or image.mode == "P" else "L")
        return np.asarray(image)


def load_folder(folder: Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Clean images of a data set folder, sorted by name (the first ``limit``)."""
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    if limit:
        files = files[:limit]
    return [(path.name, read_uint8(path)) for path in files]


def load_held_back(datasets: Path, names: tuple[str, ...], limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The tenth of each training folder that `denoise train` holds back (by a hash of the file
    names), never trained on: named FOLDER_FILE, in that order (the first ``limit``)."""
    from denoise.data import split_files

    files = [(f"{name}_{path.name}", path) for name in names
             for path in split_files(sorted((datasets / name).glob("*.png")))[1]]
    return [(label, read_uint8(path)) for label, path in files[:limit or None]]


def load_fmnist(npz: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """The first ``count`` Fashion-MNIST test images, named ``fmnist_test_00000.png`` ..."""
    with np.load(npz) as data:
        images = data["x_test"][:count]
    return [(f"fmnist_test_{index:05d}.png", image) for index, image in enumerate(images)]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def psnr(clean: np.ndarray, test: np.ndarray) -> float:
    error = np.mean((clean.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def ssim(clean: np.ndarray, test: np.ndarray) -> float:
    """SSIM with the Gaussian window of Wang et al. (11x11, sigma 1.5), data_range 255.

    The same definition as ``tf.image.ssim`` used by ``denoise eval`` (they agree within 1e-5),
    computed without importing TensorFlow. Colour: the mean over the three channels.
    """
    from skimage.metrics import structural_similarity

    if min(clean.shape[:2]) < 11:
        return float("nan")
    return float(structural_similarity(
        clean, test, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=-1 if clean.ndim == 3 else None))


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] to uint8, rounded and clipped (how the peers' outputs are stored)."""
    return np.clip(np.round(np.asarray(unit, np.float64) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Timed subprocesses: wall time, CPU time and peak RSS of the child
# --------------------------------------------------------------------------------------------


def run_timed(command: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``command``; return its exit status, wall seconds, CPU seconds and peak RSS (MiB).

    ``os.wait4`` gives the child's own resource usage, so the peak RSS is that of the measured
    process alone, not of this script.
    """
    started = time.perf_counter()
    load_before = load()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    # Drain the pipes in threads so a chatty child never blocks, then reap it with wait4.
    import threading

    chunks = {"stdout": [], "stderr": []}

    def drain(stream, key):
        for line in iter(stream.readline, b""):
            chunks[key].append(line)
        stream.close()

    threads = [threading.Thread(target=drain, args=(process.stdout, "stdout"), daemon=True),
               threading.Thread(target=drain, args=(process.stderr, "stderr"), daemon=True)]
    for thread in threads:
        thread.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    for thread in threads:
        thread.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": command,
        "returncode": process.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "load_before": load_before,
        "load_after": load(),
        "stdout": b"".join(chunks["stdout"]).decode(errors="replace")[-4000:],
        "stderr": b"".join(chunks["stderr"]).decode(errors="replace")[-4000:],
    }


def denoise_command() -> list[str]:
    """How to call the ``denoise`` CLI: the installed script, else ``python -m``-style via cli."""
    script = shutil.which("denoise")
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from denoise.cli import main; sys.exit(main())"]


# --------------------------------------------------------------------------------------------
# Models: registry names and .keras paths (snapshotted: a training job may rewrite the file)
# --------------------------------------------------------------------------------------------


def resolve_models(requested: list[str], workdir: Path) -> list[dict]:
    """Expand ``all`` to every registry model; copy each .keras path to ``workdir`` first.

    A training run replaces its best model file while it improves, so the benchmark runs a
    copy taken at its start and records the copy's sha256 and the training state next to it.
    """
    from denoise import registry

    models = []
    for item in requested:
        if item == "all":
            for entry in registry.entries():
                models.append({"name": entry["name"], "arg": entry["name"], "source": "registry",
                               "sha256": entry.get("sha256"), "architecture": entry.get("architecture"),
                               "channels": entry.get("channels"), "noise": entry.get("noise"),
                               "training": entry.get("training"), "data": entry.get("data")})
            continue
        if item == "auto":  # what `denoise run` picks per image
            models.append({"name": "auto", "arg": "auto", "source": "registry", "channels": None})
            continue
        path = Path(item)
        if path.suffix != ".keras":
            entry = registry.find(item)
            if entry is None:
                raise SystemExit(f"{item}: not a registry model nor a .keras file")
            models.append({"name": item, "arg": item, "source": "registry", "sha256": entry.get("sha256"),
                           "architecture": entry.get("architecture"), "channels": entry.get("channels"),
                           "noise": entry.get("noise"), "training": entry.get("training"), "data": entry.get("data")})
            continue
        if not path.is_file():
            raise SystemExit(f"{item}: no such model file")
        snapshot = workdir / "models" / f"{path.parent.name}-{path.name}"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, snapshot)
        info = {"name": path.stem, "arg": str(snapshot), "source": str(path.resolve()),
                "sha256": registry.sha256_of(snapshot), "modified": datetime.datetime.fromtimestamp(
                    path.stat().st_mtime).astimezone().isoformat(timespec="seconds")}
        manifest = path.parent / "manifest.json"
        if manifest.exists():  # a training run writes its entry beside the model
            try:
                entry = registry.find(path.stem, path.parent) or {}
            except (ValueError, KeyError, OSError):
                entry = {}
            for key in ("architecture", "model_args", "channels", "noise", "data", "training", "parameters"):
                if key in entry:
                    info[key] = entry[key]
        models.append(info)
    names = [model["name"] for model in models]
    for model in models:  # the same stem from two places: tell them apart
        if names.count(model["name"]) > 1 and model["source"] != "registry":
            model["name"] = f"{model['name']}@{Path(model['source']).parent.name}"
    return models


# --------------------------------------------------------------------------------------------
# JSON results, merged across invocations
# --------------------------------------------------------------------------------------------


def load_json(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def save_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.part")
    temporary.write_text(json.dumps(data, indent=1, default=_plain) + "\n")
    os.replace(temporary, path)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


def merge_rows(old: list[dict], new: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Rows of ``new`` replace rows of ``old`` with the same key; the rest of ``old`` stays."""
    fresh = {tuple(row.get(name) for name in key) for row in new}
    return [row for row in old if tuple(row.get(name) for name in key) not in fresh] + new


def table(rows: list[list[str]]) -> str:
    """A plain text table with aligned columns (the first row is the header)."""
    widths = [max(len(str(row[column])) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(str(cell).ljust(width) if column == 0 else str(cell).rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths))))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
