"""Packaging: the wheel carries the shipped models (and nothing of their training runs), and
an install from it finds them with no checkout and no DENOISE_WEIGHTS.

The wheel is built from a copy of the project in a temporary folder (the weights linked, not
copied), so the build leaves nothing in the checkout and no stale ``build/`` of an earlier one
can slip into it. About 20-40 s: a 60 MB wheel, then TensorFlow loads the grey default once.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _source_copy(folder: Path) -> Path:
    """What the build reads: pyproject.toml, README.md, the package and weights/ (its
    ``*.keras.run`` training folders included, to show they stay out)."""
    folder.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "denoise", folder / "denoise", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "weights").mkdir()
    for path in (ROOT / "weights").iterdir():
        (folder / "weights" / path.name).symlink_to(path)
    return folder


def _pip(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_the_wheel_carries_the_shipped_models_and_an_install_from_it_finds_them(tmp_path):
    source = _source_copy(tmp_path / "source")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), ".", cwd=source)
    [wheel] = (tmp_path / "dist").glob("denoise_images-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    manifest = json.loads((ROOT / "weights" / "manifest.json").read_text())
    files = {f"denoise/weights/{entry['file']}" for entry in manifest["models"] if "file" in entry}
    assert files and files | {"denoise/weights/manifest.json", "denoise/registry.py"} <= names
    modules = {path.relative_to(source).as_posix() for path in (source / "denoise").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert not [name for name in names if ".keras.run" in name or name.startswith("weights/")]
    assert {name for name in names if name.startswith("denoise/weights/")} == files | {"denoise/weights/manifest.json"}

    target = tmp_path / "site"
    _pip("install", "--no-deps", "--no-build-isolation", "-q", "--target", str(target), str(wheel), cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "DENOISE_WEIGHTS"}
    env.update(PYTHONPATH=str(target), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")

    def python(code, *args):
        result = subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    listing = python("from denoise.cli import main; main(prog_name='denoise')", "models")
    assert {entry["name"] for entry in manifest["models"]} <= {line.split()[0] for line in listing.splitlines()[1:]}
    found = python(
        "import denoise; from denoise import registry; "
        "model = registry.load(registry.default_name(1)); "
        "print(denoise.__file__, registry.weights_dir(), model.name, model.channels)"
    ).split()
    gray = next(entry["name"] for entry in manifest["models"] if "gray" in entry.get("default_for", []))
    assert found == [str(target / "denoise" / "__init__.py"), str(target / "denoise" / "weights"), gray, "1"]

    # and it cleans a folder, as a user's first command would
    noisy = np.clip(96 + np.random.default_rng(0).normal(0, 20, (48, 40)), 0, 255).astype(np.uint8)
    (work / "in").mkdir()
    Image.fromarray(noisy).save(work / "in" / "scan.png")
    python("from denoise.cli import main; main(prog_name='denoise')", "run", "in", "out", "-q")
    assert np.asarray(Image.open(work / "out" / "scan.png")).shape == noisy.shape
