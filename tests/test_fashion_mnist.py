"""train_scripts/fashion_mnist.py and train_scripts/bottleneck.py on a tiny random .npz: the
commands they run, the manifest entry a rebuild writes, and the sweep's table."""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train_scripts"))
import bottleneck  # noqa: E402
import fashion_mnist  # noqa: E402
from denoise import registry  # noqa: E402


@pytest.fixture()
def tiny_npz(tmp_path) -> Path:
    """16 training and 8 test images of random 28x28 uint8 noise, keyed as fashion_mnist.npz."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (16, 28, 28), dtype=np.uint8),
             x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8))
    return path


def _args(model: str, **overrides) -> argparse.Namespace:
    values = dict(model=model, data="d.npz", epochs=None, steps_per_epoch=None, seed=0, name=model,
                  out=Path(f"weights/{model}.keras"))
    return argparse.Namespace(**{**values, **overrides})


def _value(command: list[str], flag: str) -> str:
    assert command.count(flag) == 1, flag
    return command[command.index(flag) + 1]


def test_fmnist_conv_command_is_the_one_it_was_shipped_with():
    command = fashion_mnist.train_command(_args("fmnist-conv"))
    assert command == ["train", "--data", "d.npz", "--arch", "conv", "--noise", "gaussian", "--sigma", "0:75",
                       "--no-augment", "--epochs", "12", "--batch-size", "128", "--seed", "0",
                       "--name", "fmnist-conv", "--out", "weights/fmnist-conv.keras"]


def test_fmnist_command_trains_the_larger_unet_over_sigma_0_to_75():
    command = fashion_mnist.train_command(_args("fmnist", epochs=3, steps_per_epoch=5))
    assert _value(command, "--arch") == "unet"
    assert (_value(command, "--filters"), _value(command, "--depth")) == ("64", "2")
    assert _value(command, "--sigma") == "0:75" and _value(command, "--noise") == "gaussian"
    assert _value(command, "--epochs") == "3" and _value(command, "--steps-per-epoch") == "5"
    assert _value(command, "--name") == "fmnist" and _value(command, "--out") == "weights/fmnist.keras"
    assert fashion_mnist.train_command(_args("fmnist")).count("--epochs") == 1
    assert _value(fashion_mnist.train_command(_args("fmnist")), "--epochs") == str(fashion_mnist.MODELS["fmnist"]["epochs"])


@pytest.mark.parametrize("model", list(fashion_mnist.MODELS))
def test_each_command_is_one_denoise_train_accepts(model):
    from denoise.cli import main

    command = fashion_mnist.train_command(_args(model))
    context = main.commands["train"].make_context("train", command[1:])
    assert context.params["out"] == f"weights/{model}.keras" and context.params["name"] == model


def test_rebuild_command_names_the_model():
    assert fashion_mnist.rebuild_command(_args("fmnist")) == (
        "python train_scripts/fashion_mnist.py fmnist --data d.npz")


@pytest.mark.parametrize("model", ["fmnist-conv", "fmnist"])
def test_a_rebuild_records_figures_and_time_and_never_takes_the_grey_default(model, tiny_npz, tmp_path,
                                                                                 tiny_models, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    data = tiny_models["unet-gray"].read_bytes()
    (weights / "gray-large.keras").write_bytes(data)
    entries = [{"name": "gray-large", "file": "gray-large.keras", "sha256": hashlib.sha256(data).hexdigest(),
                "channels": 1, "default_for": ["gray"]}]
    (weights / "manifest.json").write_text(json.dumps({"models": entries}))
    monkeypatch.setenv("DENOISE_WEIGHTS", str(weights))
    out = weights / f"{model}.keras"

    fashion_mnist.main([model, "--data", str(tiny_npz), "--epochs", "1", "--steps-per-epoch", "1", "--out", str(out)])

    entry = registry.find(model, weights)
    assert entry["default_for"] == []
    assert registry.default_name(1, weights) == "gray-large"
    assert entry["sha256"] == registry.sha256_of(out)
    assert {"fashion_mnist_test_psnr_sigma25", "fashion_mnist_test_psnr_sigma50",
            "fashion_mnist_test_ssim_sigma25"} <= set(entry["metrics"])
    assert entry["training"]["epochs_run"] == 1 and entry["training"]["seconds_total"] > 0
    assert entry["rebuild"].startswith(f"python train_scripts/fashion_mnist.py {model} --data ")
    assert f"--name {model}" in entry["command"]


def test_rerunning_resumes_and_sums_the_training_time(tiny_npz, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    monkeypatch.setenv("DENOISE_WEIGHTS", str(weights))
    out = weights / "fmnist-conv.keras"
    common = ["fmnist-conv", "--data", str(tiny_npz), "--steps-per-epoch", "1", "--out", str(out)]
    fashion_mnist.main([*common, "--epochs", "1"])
    first = fashion_mnist.run_state(out)["seconds"]
    fashion_mnist.main([*common, "--epochs", "2"])  # continues at epoch 1
    state = fashion_mnist.run_state(out)
    assert state["epoch"] == 2 and state["seconds"] > first
    entry = registry.find("fmnist-conv", weights)
    assert entry["training"]["epochs_run"] == 2 and entry["training"]["seconds_total"] == round(state["seconds"], 1)
    assert entry["default_for"] == []


def test_the_fashion_mnist_models_are_listed_side_by_side():
    manifest = {"models": [{"name": "fmnist-conv"}, {"name": "gray"}, {"name": "gray-large"}, {"name": "fmnist"}]}
    fashion_mnist._place_beside_sibling(manifest, "fmnist")
    assert [entry["name"] for entry in manifest["models"]] == ["fmnist-conv", "fmnist", "gray", "gray-large"]


def test_sweep_makes_a_table_row_per_size_and_keeps_the_tutorial_table(tiny_npz, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tutorial_results.md").write_text("# The tutorial\n\n| model | task |\n")
    bottleneck.main(["--data", str(tiny_npz), "--epochs", "1", "--steps-per-epoch", "1", "--dense-sizes", "4",
                     "--conv-sizes", "2", "4", "--val-count", "4", "--workdir", str(tmp_path / "work"),
                     "--docs", str(docs)])
    text = (docs / "tutorial_results.md").read_text()
    assert text.startswith("# The tutorial\n\n| model | task |\n")
    rows = [line for line in text.splitlines() if line.startswith(("| dense |", "| conv |"))]
    assert [row.split(" | ")[1] for row in rows] == ["latent_dim 4", "1 channel at 7x7", "2 channels at 7x7"]
    assert [row.split(" | ")[2] for row in rows] == ["4", "49", "98"]
    assert all(row.count(" / ") == 2 for row in rows)  # reconstruction and denoising PSNR / SSIM
    assert (docs / "tutorial_bottleneck.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "work" / "rows.json").read_text())) == 6  # 3 sizes x 2 tasks
    assert not list(Path(tmp_path / "work").glob("*.keras"))  # each size in its own folder

    assert "Each doubling of the code" in text and "conv " in text.split("Each doubling of the code")[1]

    (docs / "tutorial_results.md").write_text(text.replace("latent_dim 4", "edited"))
    bottleneck.main(["--data", str(tiny_npz), "--table-only", "--test-count", "8", "--workdir", str(tmp_path / "work"),
                     "--docs", str(docs)])  # no training: the table again from rows.json
    assert (docs / "tutorial_results.md").read_text() == text

    bottleneck.write_section(docs / "tutorial_results.md", f"{bottleneck.BEGIN}\nnew\n{bottleneck.END}")
    text = (docs / "tutorial_results.md").read_text()
    assert text.count(bottleneck.BEGIN) == 1 and "\nnew\n" in text and text.startswith("# The tutorial")
