"""The inference pipeline: what the model is told about each image."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import brightness_steps, noisy_array, save
from denoise import models
from denoise.cli import main
from denoise.noise import camera_noise, effective_sigma, estimate_sigma
from denoise.noise import shuffle


def test_a_colour_model_is_told_a_grey_image_has_sqrt3_times_the_noise(tmp_path):
    """A grey image runs through a colour model as three identical channels: the same noise in
    each, which a model trained on independent noise per channel sees as sqrt(3) times weaker."""
    image = keras.Input((None, None, 3), name="image")
    sigma = keras.Input((1,), name="sigma")
    told = models.NoiseLevelMap()(image, sigma)  # outputs the sigma it was given, everywhere
    path = tmp_path / "told.keras"
    keras.Model([image, sigma], keras.layers.Concatenate()([told, told, told])).save(path)
    save(tmp_path / "in" / "grey.png", noisy_array(16, 16, 1))
    save(tmp_path / "in" / "colour.png", noisy_array(16, 16, 3))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--sigma", "25",
                                       "--model", str(path)])
    assert result.exit_code == 0, result.output
    assert np.unique(np.asarray(Image.open(tmp_path / "out" / "grey.png"))).tolist() == [round(25 * 3**0.5)]
    assert np.unique(np.asarray(Image.open(tmp_path / "out" / "colour.png"))).tolist() == [25]


def test_a_grey_picture_stored_as_rgb_is_denoised_as_grey_and_stays_rgb(tmp_path, registry_dir):
    """A grey scan saved as RGB goes through the grey model, exactly as its grey file does, and
    comes back as RGB with R = G = B; a colour image beside it still goes through the colour model."""
    import json

    grey = noisy_array(40, 48, 1)
    save(tmp_path / "in" / "grey.png", grey)
    save(tmp_path / "in" / "grey-as-rgb.png", np.repeat(grey[..., None], 3, axis=-1))
    save(tmp_path / "in" / "colour.png", noisy_array(40, 48, 3))
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--report", str(report)])
    assert result.exit_code == 0, result.output
    as_rgb = Image.open(tmp_path / "out" / "grey-as-rgb.png")
    assert as_rgb.mode == "RGB"
    pixels = np.asarray(as_rgb)
    expected = np.asarray(Image.open(tmp_path / "out" / "grey.png"))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)
    models_used = {Path(row["input"]).name: row["model"] for row in json.loads(report.read_text())["files"]}
    assert models_used == {"grey.png": "unet-gray", "grey-as-rgb.png": "unet-gray", "colour.png": "unet-color"}


def test_a_dark_image_is_denoised_as_the_same_picture_at_full_range(tmp_path):
    """A 16-bit scan that uses a sliver of the range (here 1000-1255 of 65535) gets the result
    the same picture gets stretched to 0-65535, scaled back; the models learned full-range photos."""
    keras.utils.set_random_seed(1)
    model = models.unet(channels=1, filters=4, depth=2, blocks=1)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # untrained but with biases, so not scale-invariant, as trained ones are not
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    model.save(tmp_path / "biased.keras")
    picture = noisy_array(48, 40, 1).astype(np.uint16)
    picture[0, :2] = (0, 255)  # the full 8-bit range, so 257 * picture spans 0-65535 exactly
    save(tmp_path / "in" / "full.png", picture * 257)
    save(tmp_path / "in" / "dark.png", picture + 1000)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q",
                                       "--model", str(tmp_path / "biased.keras"), "--precision", "float32"])
    assert result.exit_code == 0, result.output
    full = np.asarray(Image.open(tmp_path / "out" / "full.png")).astype(np.float64)
    dark = np.asarray(Image.open(tmp_path / "out" / "dark.png")).astype(np.float64)
    assert np.abs(full - picture * 257).mean() > 257  # the model did change the picture
    np.testing.assert_allclose(dark, full / 257 + 1000, atol=1.0)


def test_each_image_gets_the_treatment_its_noise_needs(tmp_path, registry_dir):
    """--noise auto (the default) stabilises noise that grows with brightness and takes the rest
    as Gaussian; --noise impulse fills impulses first; the report says which per file."""
    import json

    from denoise.noise import NoiseSpec, add_noise_uint

    clean = np.round(brightness_steps() * 255).astype(np.uint8)
    for kind, level in (("poisson", 30), ("speckle", 0.2), ("gaussian", 25), ("salt-pepper", 0.05)):
        noisy = add_noise_uint(clean, NoiseSpec(kind, level, level), np.random.default_rng(0))
        save(tmp_path / "in" / f"{kind}.png", noisy)

    def noise_in_report(*extra):
        report = tmp_path / "report.json"
        result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--overwrite",
                                           "--report", str(report), *extra])
        assert result.exit_code == 0, result.output
        return {Path(row["input"]).stem: row["noise"] for row in json.loads(report.read_text())["files"]}

    assert noise_in_report() == {"poisson": "poisson", "speckle": "speckle", "gaussian": "gaussian",
                                 "salt-pepper": "gaussian"}
    assert set(noise_in_report("--noise", "gaussian").values()) == {"gaussian"}
    assert set(noise_in_report("--noise", "impulse").values()) == {"impulse"}
    # Forced, it is used wherever the measured noise grows at all (here not on the Gaussian image).
    # --noise poisson takes any noise that grows with brightness as photon noise, speckle too.
    assert noise_in_report("--noise", "poisson")["poisson"] == "poisson"
    assert noise_in_report("--noise", "poisson")["speckle"] == "poisson"
    assert noise_in_report("--noise", "speckle")["poisson"] == "speckle"
    for kind in ("poisson", "speckle", "impulse"):
        result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "x"), "--noise", kind,
                                           "--sigma", "10"])
        assert result.exit_code == 2 and "leave --sigma auto" in result.output


def test_a_tile_never_holds_more_network_work_than_a_batch(tmp_path):
    """--tile and --batch-size bound memory: a mean model runs several networks per tile, so its
    tiles shrink until their passes fit in what a batch of full tiles holds."""
    from denoise.engine import Engine
    from denoise.registry import LoadedModel
    from denoise.settings import Inference

    runner = Engine(Inference(tile=1024, batch_size=2), print)
    for passes in (1, 2, 4, 7):
        tile = runner.tile_for(LoadedModel(None, "m", 3, True, None, 16, passes=passes))
        assert tile <= 1024 and tile * tile * passes <= 2 * 1024 * 1024
    assert runner.tile_for(LoadedModel(None, "m", 1, True, None, 16, passes=1)) == 1024


def _noise_level_echo(path: Path) -> Path:
    """A grey model whose output is the noise level it is told, everywhere."""
    image = keras.Input((None, None, 1), name="image")
    sigma = keras.Input((1,), name="sigma")
    keras.Model([image, sigma], models.NoiseLevelMap()(image, sigma)).save(path)
    return path


def test_correlated_noise_is_measured_and_denoised_at_half_resolution(tmp_path):
    """Noise in 2x2 grains reads as 6 on the image where it is 20; in the mosaic of the image's
    four phases it is independent again, so --sigma auto reads its level there (estimate_level),
    and --noise correlated also gives the model the mosaic to denoise."""
    echo = _noise_level_echo(tmp_path / "echo.keras")
    grains = np.kron(np.random.default_rng(1).normal(0, 20, (32, 32)), np.ones((2, 2)))
    image = np.clip(np.round(128 + grains), 0, 255).astype(np.uint8)
    image[0, :2] = (0, 255)  # the full range: the model's output reads directly as a level
    save(tmp_path / "in" / "grains.png", image)
    told = {}
    for noise in ("gaussian", "correlated"):
        result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / noise), "-q", "--noise", noise,
                                           "--model", str(echo)])
        assert result.exit_code == 0, result.output
        told[noise] = float(np.median(np.asarray(Image.open(tmp_path / noise / "grains.png"))))
    assert estimate_sigma(image / 255.0) < 0.5 * 20
    assert told["correlated"] == pytest.approx(20, rel=0.15)
    assert told["gaussian"] == pytest.approx(told["correlated"], rel=0.05)


def test_correlated_noise_mode_gives_back_every_pixel_in_place(tmp_path):
    """The mosaic is undone exactly, odd sizes included: an identity model returns the input,
    less only the band of the phases' pattern (shuffle.clear_pattern)."""
    image = keras.Input((None, None, 1), name="image")
    sigma = keras.Input((1,), name="sigma")
    told = models.NoiseLevelMap()(image, sigma)
    identity = keras.layers.Add()([image, keras.layers.Rescaling(0.0)(told)])
    keras.Model([image, sigma], identity).save(tmp_path / "identity.keras")
    picture = noisy_array(37, 45, 1)
    save(tmp_path / "in" / "odd.png", picture)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--noise", "correlated",
                                       "--model", str(tmp_path / "identity.keras")])
    assert result.exit_code == 0, result.output
    expected = shuffle.clear_pattern(picture[..., None].astype(np.float32) / 255.0)[..., 0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "odd.png")),
                                  np.clip(np.round(expected * 255.0), 0, 255).astype(np.uint8))
    refused = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out2"), "--noise", "correlated",
                                        "--sigma", "25", "--model", str(tmp_path / "identity.keras")])
    assert refused.exit_code == 2 and "leave --sigma auto" in refused.output


def test_noise_camera_tells_a_colour_model_the_level_of_the_fitted_peak_and_needs_sigma_auto(tmp_path):
    """A camera's demosaiced noise reads low on the whole image; --noise camera tells the model
    the mid-grey level of the photon count fitted to the image's green sites, and gives it the
    image whole."""
    image = keras.Input((None, None, 3), name="image")
    sigma = keras.Input((1,), name="sigma")
    told = models.NoiseLevelMap()(image, sigma)
    keras.Model([image, sigma], keras.layers.Concatenate()([told, told, told])).save(tmp_path / "echo.keras")
    flat = np.full((128, 128, 3), 128.0)
    noisy = np.clip(np.round(camera_noise(flat, 100.0, np.random.default_rng(0))), 0, 255).astype(np.uint8)
    noisy[0, 0], noisy[0, 1] = 0, 255  # the full range: the model's output reads directly as a level
    save(tmp_path / "in" / "photo.png", noisy)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--noise", "camera",
                                       "--model", str(tmp_path / "echo.keras"), "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    level = float(np.median(np.asarray(Image.open(tmp_path / "out" / "photo.png"))))
    assert level == pytest.approx(255 * effective_sigma("camera", 100.0), rel=0.15)
    assert json.loads((tmp_path / "r.json").read_text())["files"][0]["sigma"] == pytest.approx(level, abs=0.5)
    assert level > 1.4 * estimate_sigma(noisy / 255.0)
    refused = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out2"), "--noise", "camera",
                                        "--sigma", "10", "--model", str(tmp_path / "echo.keras")])
    assert refused.exit_code == 2 and "leave --sigma auto" in refused.output
