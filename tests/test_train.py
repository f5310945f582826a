"""`denoise train` end to end on tiny generated data: learning, files, resume, Ctrl-C, the
manifest, tfds (mocked), fast failure without data, the mirrored strategy on two CPUs and the
multi-worker strategy with two worker processes on localhost."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from denoise import data, models, registry
from denoise.cli import main
from denoise.train import TrainOptions, run_dir, train

from conftest import noisy_array, save

TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
TINY = ["--arch", "conv", "--filters", "4", "--patch-size", "32", "--batch-size", "4", "--steps-per-epoch", "2"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Twelve smooth grey 40x40 images: learnable in a few steps."""
    folder = tmp_path_factory.mktemp("clean")
    for index in range(12):
        y, x = np.mgrid[0:40, 0:40]
        pixels = 128 + 90 * np.sin(x / (4 + index % 3) + index) * np.cos(y / 6)
        save(folder / f"img{index:02d}.png", np.clip(pixels, 0, 255).astype(np.uint8))
    return folder


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["train", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def history(out: Path) -> list[dict]:
    return json.loads((run_dir(str(out)) / "history.json").read_text())


def test_training_learns_and_writes_model_figures_logs_and_manifest(images, tmp_path):
    out = tmp_path / "weights" / "tiny.keras"
    logs = ["--logdir", tmp_path / "logs"] if TENSORBOARD else []
    code, output = invoke(
        "--data", images, *TINY, "--epochs", "4", "--lr", "0.01", "--schedule", "constant", "--name", "tiny",
        *logs, "--out", out,
    )
    assert code == 0, output
    rows = history(out)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] and rows[-1]["loss"] < rows[0]["loss"]
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["epochs"] == 4 and summary["best_val_psnr"] == pytest.approx(max(r["val_psnr"] for r in rows), abs=1e-3)

    folder = run_dir(str(out))
    for name in ("checkpoint.keras", "state.json", "loss.png", "comparison.png"):
        assert (folder / name).stat().st_size > 0, name
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*")) or not TENSORBOARD
    # The shipped file carries no optimizer state; the checkpoint does, for --resume.
    assert not any("optimizer" in name for name in zipfile.ZipFile(out).namelist() if name.endswith(".json"))
    assert out.stat().st_size < (folder / "checkpoint.keras").stat().st_size

    entry = registry.find("tiny", out.parent)
    assert entry["sha256"] == registry.sha256_of(out) and entry["file"] == "tiny.keras"
    assert entry["architecture"] == "conv" and entry["model_args"] == {"filters": 4} and entry["channels"] == 1
    assert entry["noise"] == {"type": "gaussian", "low": 0.0, "high": 75.0, "clip": True}
    assert entry["data"] == str(images) and entry["training"]["epochs"] == 4
    assert entry["metrics"]["val_psnr_sigma25"] == summary["best_val_psnr"]
    assert entry["command"].startswith(f"denoise train --data {images} --arch conv --filters 4 --patch-size 32")
    assert "--name tiny" in entry["command"] and "--resume" not in entry["command"]
    loaded = registry.load("tiny", out.parent)
    assert loaded.channels == 1 and loaded.multiple == 4 and not loaded.noise_level_input


def test_resume_continues_from_the_saved_epoch_and_optimizer_state(images, tmp_path):
    out = tmp_path / "run" / "model.keras"
    args = ["--data", images, *TINY, "--out", out]
    assert invoke(*args, "--epochs", "1")[0] == 0
    checkpoint = run_dir(str(out)) / "checkpoint.keras"
    assert int(keras.saving.load_model(checkpoint).optimizer.iterations) == 2

    code, output = invoke(*args, "--epochs", "3", "--resume")
    assert code == 0, output
    assert "resuming" in output and "at epoch 1 of 3" in output
    assert [row["epoch"] for row in history(out)] == [1, 2, 3]
    assert int(keras.saving.load_model(checkpoint).optimizer.iterations) == 6
    state = json.loads((run_dir(str(out)) / "state.json").read_text())
    assert state["state"]["epoch"] == 3 and state["options"]["data"]["patch_size"] == 32


def test_ctrl_c_leaves_a_checkpoint_that_resume_finishes(images, tmp_path):
    out = tmp_path / "model.keras"

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 3:  # in the second epoch
                raise KeyboardInterrupt

    options = TrainOptions(
        data=data.DataOptions(source=str(images), patch_size=32, batch_size=4), out=str(out), arch="conv",
        model_args={"filters": 4}, epochs=2, steps_per_epoch=2,
    )
    with pytest.raises(KeyboardInterrupt):
        train(options, log=lambda message: None, callbacks=[CtrlC()])
    folder = run_dir(str(out))
    assert json.loads((folder / "state.json").read_text())["state"]["epoch"] == 1
    assert int(keras.saving.load_model(folder / "checkpoint.keras").optimizer.iterations) == 3
    assert not list(folder.glob(".*.tmp.keras"))

    summary = train(TrainOptions(**{**options.__dict__, "resume": True}), log=lambda message: None)
    assert summary["epochs"] == 2 and [row["epoch"] for row in history(out)] == [1, 2]


def test_init_from_starts_a_new_run_from_a_trained_model(images, tmp_path):
    first = tmp_path / "first.keras"
    assert invoke("--data", images, *TINY, "--epochs", "3", "--lr", "0.01", "--out", first)[0] == 0
    second = tmp_path / "second.keras"
    code, output = invoke("--data", images, *TINY, "--epochs", "1", "--lr", "1e-9", "--init-from", first,
                          "--out", second)
    assert code == 0, output
    # At a negligible learning rate the fine-tuned run validates as well as the model it started from.
    assert history(second)[0]["val_psnr"] == pytest.approx(max(row["val_psnr"] for row in history(first)), abs=0.05)

    code, output = invoke("--data", images, *TINY, "--filters", "8", "--init-from", first, "--out", tmp_path / "x.keras")
    assert code == 2 and "--init-from" in output and "do not match" in output
    code, output = invoke("--data", images, *TINY, "--init-from", tmp_path / "none.keras", "--out", tmp_path / "y.keras")
    assert code == 2 and "not a registered model" in output and "nor a .keras file" in output


def test_several_folders_train_together_and_hold_out_keeps_their_tenth_beside_the_validation_folder(images, tmp_path):
    more = tmp_path / "more"
    for index in range(6):
        save(more / f"extra{index}.png", np.full((40, 40), 40 * index, np.uint8))
    validation = tmp_path / "validation"
    save(validation / "v.png", np.full((40, 40), 128, np.uint8))
    out = tmp_path / "weights" / "both.keras"
    code, output = invoke("--data", images, "--data", more, "--val-data", validation, "--hold-out", *TINY,
                          "--epochs", "1", "--name", "both", "--out", out)
    assert code == 0, output
    train_files, held = data.split_files([*data._folder_files(str(images)), *data._folder_files(str(more))])
    assert f"{len(train_files)} training and {len(held) + 1} validation images" in output
    entry = registry.find("both", out.parent)
    assert entry["data"] == f"{images}{data.SEVERAL}{more}"
    assert f"--data {images} --data {more}" in entry["command"] and "--hold-out" in entry["command"]
    assert "held out by a hash" in entry["validation_data"]

    np.savez(tmp_path / "arrays.npz", x_train=np.zeros((4, 32, 32), np.uint8), x_test=np.zeros((2, 32, 32), np.uint8))
    code, output = invoke("--data", tmp_path / "arrays.npz", "--val-data", validation, "--hold-out", *TINY,
                          "--out", tmp_path / "arrays.keras")
    assert code == 2 and "--hold-out: only folders hold out a tenth" in output


def test_average_of_the_weights_is_validated_and_kept_when_it_does_better(images, tmp_path):
    first = tmp_path / "first.keras"
    assert invoke("--data", images, *TINY, "--epochs", "3", "--lr", "0.01", "--out", first)[0] == 0
    # A rate that wrecks the weights after a first step at rate 0 (the average starts from the
    # weights after the first step), and an average that barely moves from there.
    second = tmp_path / "second.keras"
    code, output = invoke("--data", images, *TINY, "--epochs", "2", "--lr", "0.5", "--schedule", "constant",
                          "--warmup", "1", "--average", "0.999999", "--init-from", first, "--out", second)
    assert code == 0, output
    rows = history(second)
    assert all(row["average_val_psnr"] > row["val_psnr"] + 1 for row in rows)
    assert rows[0]["average_val_psnr"] == pytest.approx(max(row["val_psnr"] for row in history(first)), abs=0.05)
    kept = keras.saving.load_model(second, compile=False).get_weights()
    started = keras.saving.load_model(first, compile=False).get_weights()
    wrecked = keras.saving.load_model(run_dir(str(second)) / "checkpoint.keras", compile=False).get_weights()
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(kept, started))
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(kept, wrecked))


def test_init_from_a_shipped_model_by_name_takes_its_architecture(images, tmp_path, registry_dir):
    """`--init-from NAME` fine-tunes a registry model with no architecture flags: channels,
    filters, depth, blocks and repeats come from it. A mean of models has no weights to start from."""
    steps = ["--patch-size", "32", "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--lr", "1e-9"]
    for name, channels in (("unet-gray", 1), ("unet-color", 3)):
        out = tmp_path / f"{name}-tuned.keras"
        code, output = invoke("--data", images, *steps, "--init-from", name, "--out", out)
        assert code == 0, output
        source, tuned = registry.load(name).model, keras.saving.load_model(out, compile=False)
        assert models.unet_args(tuned) == models.unet_args(source)
        assert models.unet_args(tuned)["channels"] == channels
        for before, after in zip(source.get_weights(), tuned.get_weights()):
            np.testing.assert_allclose(after, before, atol=1e-5)  # a negligible rate keeps what it starts from
    manifest = json.loads((registry_dir / "manifest.json").read_text())
    manifest["models"].append({"name": "both", "members": ["unet-gray", "unet-color"], "channels": 3})
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    code, output = invoke("--data", images, *steps, "--init-from", "both", "--out", tmp_path / "z.keras")
    assert code == 2 and "the mean of unet-gray, unet-color has no weights of its own" in output


def test_init_from_a_unet_with_fewer_repeats_grows_it_without_losing_what_it_learned(images, tmp_path):
    unet = ["--arch", "unet", "--filters", "4", "--depth", "2", *TINY[4:]]
    first, deeper = tmp_path / "first.keras", tmp_path / "deeper.keras"
    assert invoke("--data", images, *unet, "--epochs", "2", "--lr", "0.01", "--out", first)[0] == 0
    code, output = invoke("--data", images, *unet, "--repeats", "2", "--epochs", "1", "--lr", "1e-9",
                          "--init-from", first, "--out", deeper)
    assert code == 0, output
    # The added blocks start as identities: at a negligible rate it validates as its source did.
    assert history(deeper)[0]["val_psnr"] == pytest.approx(max(row["val_psnr"] for row in history(first)), abs=0.05)
    assert len(keras.saving.load_model(deeper).weights) > len(keras.saving.load_model(first).weights)


@pytest.mark.parametrize("extra", [
    ["--loss", "l1", "--noise", "poisson", "--early-stopping", "1", "--lr", "1e-9", "--epochs", "4"],
    ["--loss", "bce", "--noise", "salt-pepper", "--schedule", "constant", "--reduce-lr-on-plateau", "1", "--epochs", "1",
     "--downscale", "2"],
    ["--noise", "mixture", "--channels", "3", "--arch", "unet", "--depth", "2", "--blocks", "1", "--epochs", "1"],
    ["--noise", "camera", "--channels", "3", "--arch", "unet", "--depth", "2", "--blocks", "1", "--epochs", "1"],
])
def test_losses_noise_types_and_callbacks(images, tmp_path, extra):
    out = tmp_path / "model.keras"
    code, output = invoke("--data", images, *TINY, *extra, "--out", out)
    assert code == 0, output
    if "--early-stopping" in extra:  # the LR is too small to change an 8-bit output: stops after 2
        assert len(history(out)) == 2
    if "--downscale" in extra:  # recorded, so --resume and the manifest know what the model saw
        assert json.loads((run_dir(str(out)) / "state.json").read_text())["options"]["data"]["downscale"] == 2


def test_dense_trains_on_whole_28x28_tfds_images(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "_can_download", lambda: True)  # the mocked download is a no-op
    out = tmp_path / "dense.keras"
    with tfds.testing.mock_data(num_examples=8):
        code, output = invoke(
            "--data", "tfds:fashion_mnist", "--arch", "dense", "--latent-dim", "8", "--batch-size", "4",
            "--epochs", "1", "--no-augment", "--out", out,
        )
    assert code == 0, output
    loaded = registry.load(str(out))
    assert loaded.tile_size == 28 and loaded.model.inputs[0].shape[1:] == (28, 28, 1)


def test_an_absent_tfds_data_set_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_can_download", lambda: False)  # what an offline machine sees
    started = time.monotonic()
    code, output = invoke("--data", "tfds:mnist", "--data-dir", tmp_path / "tfds", "--out", tmp_path / "m.keras")
    assert time.monotonic() - started < 15
    assert code == 2
    assert "tfds data set 'mnist' is not in" in output and "cannot be downloaded" in output
    assert "--data-dir DIR" in output and ".npz" in output


@pytest.mark.parametrize("args, message", [
    (["--arch", "dense", "--filters", "4"], "dense takes no filters"),
    (["--reduce-lr-on-plateau", "2"], "use it with --schedule constant"),
    (["--schedule", "constant", "--reduce-lr-on-plateau", "2", "--warmup", "10"], "and no --warmup"),
    (["--noise", "poisson", "--sigma", "0:10"], "above 0"),
    (["--out", "model.h5"], "must end in .keras"),
])
def test_bad_option_combinations_fail_before_training(images, tmp_path, args, message):
    out = ["--out", tmp_path / "m.keras"] if "--out" not in args else []
    code, output = invoke("--data", images, *args, *out)
    assert code == 2 and message in output


@pytest.mark.parametrize("schedule, last", [("cosine", 0.01), ("constant", 1.0)])
def test_warmup_raises_the_rate_from_zero_then_follows_the_schedule(schedule, last):
    from denoise.train import _learning_rate

    options = TrainOptions(data=data.DataOptions(source="x"), out="m.keras", epochs=2, learning_rate=1e-3,
                           schedule=schedule, warmup=50)
    rate = _learning_rate(options, steps=100)  # 200 steps in all
    at = [float(rate(step)) for step in (0, 25, 50, 199)]
    assert at[0] == 0.0 and at[1] == pytest.approx(5e-4) and at[2] == pytest.approx(1e-3)
    assert at[3] == pytest.approx(1e-3 * last, rel=0.05)
    assert _learning_rate(TrainOptions(data=data.DataOptions(source="x"), out="m.keras", schedule="constant"), 100) == 1e-3


def test_logdir_without_tensorboard_says_what_to_install(images, tmp_path, monkeypatch):
    import denoise.train

    monkeypatch.setattr(denoise.train, "_has_tensorboard", lambda: False)
    code, output = invoke("--data", images, "--logdir", tmp_path / "logs", "--out", tmp_path / "m.keras")
    assert code == 2 and "pip install tensorboard" in output


MIRRORED = """
import sys
from denoise import runtime
tf = runtime.tensorflow("cpu")
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from denoise.cli import main
arguments = sys.argv[1:]
for extra in (["--epochs", "1"], ["--epochs", "2", "--resume"]):
    try:
        main([*arguments, *extra])
    except SystemExit as exit:
        if exit.code:
            raise
"""


def test_mirrored_strategy_trains_on_two_logical_cpus(images, tmp_path):
    # A fresh process: logical devices must be set before TensorFlow starts, and the resumed
    # checkpoint's custom layers must load without a test having imported them.
    out = tmp_path / "mirrored.keras"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, "train", "--data", str(images), *TINY, "--arch", "unet", "--depth", "2",
         "--blocks", "1", "--strategy", "mirrored", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("2 replica(s) (MirroredStrategy)") == 2
    assert "resuming" in result.stderr
    assert [row["epoch"] for row in history(out)] == [1, 2]
    assert registry.load(str(out)).noise_level_input


def free_ports(count: int) -> list[int]:
    """Ports free on localhost now (the workers bind them a moment later); skip when none can be bound."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.socket())
            sockets[-1].bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    except OSError as error:
        pytest.skip(f"cannot bind a localhost port: {error}")
    finally:
        for sock in sockets:
            sock.close()


def test_multiworker_strategy_trains_with_two_worker_processes(images, tmp_path):
    workers = [f"localhost:{port}" for port in free_ports(2)]
    out = tmp_path / "multiworker.keras"
    command = [
        sys.executable, "-c", "from denoise.cli import entry; entry()", "train", "--data", str(images), *TINY,
        "--arch", "unet", "--depth", "2", "--blocks", "1", "--epochs", "2", "--strategy", "multiworker",
        "--device", "cpu", "--out", str(out),
    ]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        temporary = tmp_path / f"tmp{index}"  # TMPDIR: where a worker other than the chief keeps its files
        temporary.mkdir()
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(temporary)}
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        )
    deadline = time.monotonic() + 240
    try:
        outputs = [process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for process in processes]
    finally:
        for process in processes:  # a worker whose peer never comes waits for it
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
        assert "2 replica(s) (CollectiveAllReduceStrategy)" in output
    assert [row["epoch"] for row in history(out)] == [1, 2]
    state = json.loads((run_dir(str(out)) / "state.json").read_text())["state"]
    assert state["epoch"] == 2 and state["best_psnr"] == max(row["val_psnr"] for row in history(out))
    assert registry.load(str(out)).noise_level_input
    assert not list((tmp_path / "tmp0").glob("denoise-worker-*"))  # the chief writes only OUT and OUT.run/
    # Worker 1 trained in step with the chief: the same weights and optimizer state, and the
    # same validation lines.
    (other,) = (tmp_path / "tmp1").glob("denoise-worker-*/checkpoint.keras")
    chief = keras.saving.load_model(run_dir(str(out)) / "checkpoint.keras")
    worker = keras.saving.load_model(other)
    assert int(chief.optimizer.iterations) == int(worker.optimizer.iterations) == 4
    for chief_weights, worker_weights in zip(chief.get_weights(), worker.get_weights(), strict=True):
        np.testing.assert_array_equal(chief_weights, worker_weights)
    epochs = [[line for line in output.splitlines() if line.startswith("epoch ")] for output in outputs]
    assert len(epochs[0]) == 2 and epochs[0] == epochs[1]
