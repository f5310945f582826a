"""train_scripts/gpu_finetune.py: fine-tuning under Keras's JAX backend (the `jax` extra), run on
a tiny U-Net and generated images on the CPU."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train_scripts"))
import gpu_finetune  # noqa: E402


def smooth_image(rng, height: int, width: int) -> np.ndarray:
    """A grey uint8 image with structure a denoiser can learn: a blurred random field."""
    coarse = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1))
    return np.kron(coarse, np.ones((8, 8)))[:height, :width].astype(np.uint8)


def write_images(folder: Path, shapes: list[tuple[int, int]], seed: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index, shape in enumerate(shapes):
        Image.fromarray(smooth_image(rng, *shape)).save(folder / f"{index}.png")


def test_training_images_are_turned_to_landscape_and_cut_to_the_smallest(tmp_path):
    write_images(tmp_path / "data", [(40, 64), (64, 40), (48, 72)], seed=0)
    stack = gpu_finetune.load_training(tmp_path / "data", channels=1, downscale=1, patch=32)
    assert stack.shape == (3, 40, 64, 1) and stack.dtype == np.uint8
    assert gpu_finetune.load_training(tmp_path / "data", channels=3, downscale=2, patch=16).shape == (3, 20, 32, 3)
    with pytest.raises(ValueError, match="smaller than --patch-size 48"):
        gpu_finetune.load_training(tmp_path / "data", channels=1, downscale=1, patch=48)


def test_steps_or_minutes_must_be_given_once(tmp_path, capsys):
    base = ["m.keras", "--data", "d", "--val-data", "v", "--channels", "1", "--out", "o.keras"]
    for extra in ([], ["--steps", "10", "--minutes", "1"]):
        with pytest.raises(SystemExit):
            gpu_finetune.parse([*base, *extra])
        assert "exactly one of --steps and --minutes" in capsys.readouterr().err
    assert gpu_finetune.parse([*base, "--steps", "10"]).steps == 10


def test_fine_tuning_keeps_the_best_validated_model_and_logs_the_command_that_repeats_it(tmp_path):
    pytest.importorskip("jax")
    import keras

    from denoise import models

    write_images(tmp_path / "data", [(48, 48)] * 4, seed=1)
    write_images(tmp_path / "val", [(32, 32), (42, 42)], seed=2)  # 42 is padded to 44 and cut back
    start = tmp_path / "start.keras"
    models.unet(channels=1, filters=4, depth=2, blocks=1).save(start)
    out = tmp_path / "tuned.keras"
    command = [sys.executable, str(ROOT / "train_scripts/gpu_finetune.py"), str(start), "--data", str(tmp_path / "data"),
               "--val-data", str(tmp_path / "val"), "--channels", "1", "--out", str(out), "--patch-size", "32",
               "--batch-size", "2", "--lr", "1e-3", "--steps", "4", "--val-every", "2", "--repeats", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "KERAS_BACKEND": "tensorflow"})  # the script switches to JAX itself
    assert result.returncode == 0, result.stderr[-2000:]

    log = json.loads(Path(f"{out}.json").read_text())
    assert [entry["step"] for entry in log["history"]] == [0, 2, 4]  # step 0 scores the starting model
    means = [np.mean([entry[f"psnr_sigma{sigma}"] for sigma in (15, 25, 50)]) for entry in log["history"]]
    assert log["best_step"] == log["history"][int(np.argmax(means))]["step"]
    assert log["steps"] == 4 and log["history"][1]["loss"] > 0
    repeated = gpu_finetune.parse(shlex.split(log["command"])[2:])
    assert (repeated.steps, repeated.lr, repeated.patch_size, repeated.repeats, repeated.out) == (4, 1e-3, 32, 2, out)

    tuned = keras.saving.load_model(out)  # written under JAX, loaded here under TensorFlow
    assert models.unet_args(tuned)["repeats"] == 2  # grown first; its added blocks start as identities
    noisy = np.random.default_rng(3).uniform(size=(1, 32, 32, 1)).astype("float32")
    denoised = np.asarray(tuned.predict([noisy, np.array([[0.1]], "float32")], verbose=0))
    assert denoised.shape == noisy.shape and np.isfinite(denoised).all()
    if log["best_step"] == 0:  # nothing beat the start: the start, grown, is what was written
        starting = keras.saving.load_model(start).predict([noisy, np.array([[0.1]], "float32")], verbose=0)
        np.testing.assert_allclose(denoised, starting, atol=1e-6)
