"""The registry: models by name, sha256 checks, and entries that are the mean of other models."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import add_camera_models, grainy_array, noisy_array, save
from denoise import registry
from denoise.cli import main


def add_mean(folder, members=("unet-color", "unet-gray"), default=True):
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["models"]:
        if default:
            entry["default_for"] = [role for role in entry["default_for"] if role != "color"]
    manifest["models"].append({"name": "color+gray", "members": list(members), "channels": 3,
                               "architecture": "mean", "default_for": ["color"] if default else []})
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_mean_entry_averages_its_members_grey_ones_channel_by_channel(registry_dir):
    add_mean(registry_dir)
    mean = registry.load("color+gray")
    color, gray = registry.load("unet-color"), registry.load("unet-gray")
    assert (mean.channels, mean.noise_level_input, mean.tile_size, mean.multiple) == (3, True, None, 4)
    assert mean.passes == 4  # color once, gray on each channel: batches hold a quarter of the tiles
    rng = np.random.default_rng(0)
    images = rng.random((2, 16, 24, 3)).astype(np.float32)
    sigmas = np.array([[0.1], [0.2]], np.float32)
    by_colour = np.asarray(color.model({"image": images, "sigma": sigmas}))
    by_channel = np.concatenate([np.asarray(gray.model({"image": images[..., c : c + 1], "sigma": sigmas}))
                                 for c in range(3)], axis=-1)
    got = np.asarray(mean.model({"image": images, "sigma": sigmas}))
    np.testing.assert_allclose(got, (by_colour + by_channel) / 2, atol=1e-5)


def add_luma_blend(folder, luma):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["models"].append({"name": "color+luma", "members": ["unet-color", "unet-gray"], "luma": luma,
                               "channels": 3, "architecture": "luma blend", "ensemble": 2, "default_for": []})
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_luma_blend_entry_moves_the_colour_models_luma_toward_the_grey_models(registry_dir):
    add_luma_blend(registry_dir, {"weight": 0.5, "level": 1.25})
    blend = registry.load("color+luma")
    color, gray = registry.load("unet-color"), registry.load("unet-gray")
    assert (blend.channels, blend.passes, blend.ensemble, blend.multiple) == (3, 2, 2, 4)
    rng = np.random.default_rng(0)
    images = rng.random((2, 16, 24, 3)).astype(np.float32)
    sigmas = np.array([[0.1], [0.2]], np.float32)
    luma = images @ np.float32([0.299, 0.587, 0.114])
    by_colour = np.asarray(color.model({"image": images, "sigma": sigmas}))
    by_grey = np.asarray(gray.model({"image": luma[..., None], "sigma": sigmas * 1.25}))  # told 1.25 times the level
    got = np.asarray(blend.model({"image": images, "sigma": sigmas}))
    wanted = by_colour + 0.5 * (by_grey - (by_colour @ np.float32([0.299, 0.587, 0.114]))[..., None])
    np.testing.assert_allclose(got, wanted, atol=1e-5)


@pytest.mark.parametrize("luma", [{"level": 1.0}, {"weight": "half"}, [0.5]])
def test_a_malformed_luma_blend_entry_is_refused_with_its_name(registry_dir, luma):
    add_luma_blend(registry_dir, luma)
    with pytest.raises(registry.WeightsError, match="'color\\+luma': 'luma' takes two members"):
        registry.load("color+luma")


def test_a_mean_checks_each_members_file(registry_dir):
    add_mean(registry_dir)
    (registry_dir / "unet-gray.keras").write_bytes(b"tampered")
    with pytest.raises(registry.WeightsError, match="unet-gray.keras.*sha256"):
        registry.load("color+gray")


def test_a_mean_of_an_unknown_model_is_refused_with_its_name(registry_dir):
    add_mean(registry_dir, members=("unet-color", "missing"))
    with pytest.raises(registry.WeightsError, match="color\\+gray: member 'missing'"):
        registry.load("color+gray")


def test_colour_images_go_to_the_mean_when_it_is_the_colour_default(tmp_path, registry_dir):
    save(tmp_path / "in" / "photo.png", noisy_array(20, 28, 3))
    save(tmp_path / "in" / "scan.png", noisy_array(20, 28, 1))
    add_mean(registry_dir)
    runner = CliRunner()
    outputs = {}
    for label, extra in (("auto", []), ("named", ["--model", "color+gray"]), ("color", ["--model", "unet-color"])):
        result = runner.invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / label), "-q", "--sigma", "25",
                                      "--report", str(tmp_path / f"{label}.json"), *extra])
        assert result.exit_code == 0, result.output
        outputs[label] = {path.name: np.asarray(Image.open(path))
                          for path in (tmp_path / label).iterdir()}
    np.testing.assert_array_equal(outputs["auto"]["photo.png"], outputs["named"]["photo.png"])
    assert not np.array_equal(outputs["auto"]["photo.png"], outputs["color"]["photo.png"])
    assert outputs["auto"]["scan.png"].ndim == 2  # grey stays grey, through the grey default
    report = json.loads((tmp_path / "auto.json").read_text())
    assert {Path(row["input"]).name: row["model"] for row in report["files"]} == {
        "photo.png": "color+gray", "scan.png": "unet-gray"}


def test_a_models_own_ensemble_replaces_the_machines_rule_under_auto_only(tmp_path, registry_dir):
    save(tmp_path / "in" / "scan.png", noisy_array(20, 28, 1))
    manifest = json.loads((registry_dir / "manifest.json").read_text())
    manifest["models"][0]["ensemble"] = 4
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    assert registry.load("unet-gray").ensemble == 4 and registry.load("unet-color").ensemble is None
    add_mean(registry_dir, default=False)
    assert registry.load("color+gray").ensemble is None
    manifest = json.loads((registry_dir / "manifest.json").read_text())
    manifest["models"][-1]["ensemble"] = 2
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    assert registry.load("color+gray").ensemble == 2  # a mean's entry names its own, as a file's does
    for index, (extra, expected) in enumerate((([], 4), (["--ensemble", "1"], 1), (["--ensemble", "auto"], 4))):
        report = tmp_path / f"{index}.json"
        result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / f"out{index}"), "-q",
                                           "--report", str(report), *extra])
        assert result.exit_code == 0, result.output
        assert json.loads(report.read_text())["files"][0]["ensemble"] == expected


def test_noise_that_spans_pixels_goes_to_the_photo_model_and_white_noise_does_not(tmp_path, registry_dir):
    save(tmp_path / "in" / "grain.png", grainy_array(128, 3, 12, 1.0))
    save(tmp_path / "in" / "white.png", grainy_array(128, 3, 12, 0, seed=1))
    save(tmp_path / "in" / "grey-grain.png", grainy_array(128, 1, 12, 1.0, seed=2))

    def used(noise):
        report = tmp_path / f"{noise}.json"
        result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / f"out-{noise}"), "-q", "--overwrite",
                                           "--noise", noise, "--report", str(report)])
        assert result.exit_code == 0, result.output
        return {Path(row["input"]).name: (row["model"], row["noise"]) for row in json.loads(report.read_text())["files"]}

    before = used("auto")  # no photo model shipped: the defaults, told the calibrated level as before
    assert before == {"grain.png": ("unet-color", "photo"), "white.png": ("unet-color", "gaussian"),
                      "grey-grain.png": ("unet-gray", "photo")}
    add_camera_models(registry_dir, "photo", channels=(3,))
    assert used("auto") == {"grain.png": ("color-photo", "photo"), "white.png": ("unet-color", "gaussian"),
                            "grey-grain.png": ("unet-gray", "photo")}
    assert used("photo") == {"grain.png": ("color-photo", "photo"), "white.png": ("color-photo", "photo"),
                             "grey-grain.png": ("unet-gray", "photo")}
    assert used("gaussian")["grain.png"] == ("unet-color", "gaussian")
    add_camera_models(registry_dir, "photo", channels=(1,))  # a grey photo model shipped too
    assert used("auto") == {"grain.png": ("color-photo", "photo"), "white.png": ("unet-color", "gaussian"),
                            "grey-grain.png": ("gray-photo", "photo")}


def test_noise_camera_routes_each_image_to_the_camera_model_for_its_channels(tmp_path, registry_dir):
    save(tmp_path / "in" / "photo.png", noisy_array(20, 28, 3))
    save(tmp_path / "in" / "scan.png", noisy_array(20, 28, 1))
    add_camera_models(registry_dir)
    used = {}
    for noise in ("auto", "camera"):
        report = tmp_path / f"{noise}.json"
        result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / noise), "-q", "--noise", noise,
                                           "--report", str(report)])
        assert result.exit_code == 0, result.output
        used[noise] = {Path(row["input"]).name: (row["model"], row["noise"])
                       for row in json.loads(report.read_text())["files"]}
    assert used["camera"] == {"photo.png": ("color-camera", "camera"), "scan.png": ("gray-camera", "camera")}
    assert {name: model for name, (model, _) in used["auto"].items()} == {"photo.png": "unet-color",
                                                                          "scan.png": "unet-gray"}


def test_without_camera_models_noise_camera_falls_back_to_the_defaults(registry_dir):
    assert registry.default_name(3, noise="camera") == "unet-color"
    assert registry.default_name(1, noise="camera") == "unet-gray"
    add_camera_models(registry_dir)
    assert registry.default_name(3, noise="camera") == "color-camera"
    assert registry.default_name(3) == "unet-color"


@pytest.mark.parametrize("manifest", [None, '{"models": []}'])
def test_models_without_any_model_is_a_one_line_error(tmp_path, monkeypatch, manifest):
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    monkeypatch.setenv("DENOISE_WEIGHTS", str(tmp_path))
    for args in (["models"], ["models", "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith(f"denoise: error: no models found in {tmp_path / 'manifest.json'}")


def _break_entry(folder, case):
    """Spoil the manifest (or the grey model's file) of a registry folder in one way."""
    manifest = json.loads((folder / "manifest.json").read_text())
    gray = manifest["models"][0]
    if case in ("file", "sha256"):
        del gray[case]
    elif case == "name":
        manifest["models"].insert(0, {"file": "unet-gray.keras", "sha256": gray["sha256"]})
    elif case == "folder":
        (folder / "unet-gray.keras").unlink()
        (folder / "unet-gray.keras").mkdir()
    elif case == "ensemble":
        gray["ensemble"] = 3
    else:  # an entry that is not an object
        manifest["models"].insert(0, case)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case, problem", [
    ("file", "model 'unet-gray' has no 'file'"),
    ("sha256", "model 'unet-gray' has no 'sha256'"),
    ("name", "models[0] has no 'name'"),
    ("gray", "models[0] is not an object"),
    (3, "models[0] is not an object"),
    ("folder", "unet-gray.keras is a folder, not a weights file"),
    ("ensemble", "model 'unet-gray': 'ensemble' must be 1, 2, 4 or 8, not 3"),
])
def test_a_malformed_manifest_entry_is_a_one_line_error_naming_it(tmp_path, registry_dir, case, problem):
    _break_entry(registry_dir, case)
    save(tmp_path / "in" / "scan.png", noisy_array(16, 16, 1))
    for args in (["models"], ["models", "--json"], ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q"],
                 ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--model", "unet-gray"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"denoise: error: {registry_dir / 'manifest.json'}: ") and problem in line, line
    with pytest.raises(registry.WeightsError, match="manifest.json: "):
        registry.load("unet-gray")


def test_a_keras_file_takes_the_ensemble_of_its_entry_beside_it_and_ignores_a_broken_manifest(tmp_path, tiny_models):
    folder = tmp_path / "mine"
    folder.mkdir()
    model = folder / "mine.keras"
    model.write_bytes(tiny_models["unet-gray"].read_bytes())
    assert registry.load(str(model)).ensemble is None  # no manifest beside it
    (folder / "manifest.json").write_text(json.dumps({"models": [{
        "name": "mine", "file": "mine.keras", "sha256": registry.sha256_of(model), "ensemble": 4}]}))
    assert registry.load(str(model)).ensemble == 4
    (folder / "manifest.json").write_text("{not json")
    assert registry.load(str(model)).ensemble is None
