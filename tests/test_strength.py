"""--strength: 0 leaves the image, more cleans more, 1 is the default to the byte."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import noisy_array, save, tree_digest
from denoise import io, pipeline, strength
from denoise.engine import Engine
from denoise.plan import Job
from denoise.settings import Inference
from denoise.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_the_arithmetic_is_monotonic_and_leaves_1_alone():
    values = [0, 0.25, 0.5, 0.75, 1, 1.5, 2, 4]
    shares = [strength.kept_share(value) for value in values]
    factors = [strength.level_factor(value) for value in values]
    assert shares[0] == 1.0 and all(a > b for a, b in zip(shares[:5], shares[1:5])) and set(shares[4:]) == {0.0}
    assert set(factors[:5]) == {1.0} and all(a < b for a, b in zip(factors[4:], factors[5:]))
    denoised, original = np.full((4, 4, 1), 0.25, np.float32), np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_array_equal(strength.blend(denoised.copy(), original, 0.0), original)  # exactly the input
    assert strength.blend(denoised, original, 1.0) is denoised
    with pytest.raises(ValueError):
        strength.check(4.5)


def test_strength_0_returns_the_input(tmp_path, tiny_models):
    picture = noisy_array(40, 36, 1)
    colour = noisy_array(24, 30, 3)
    save(tmp_path / "in" / "grey.png", picture)
    save(tmp_path / "in" / "colour.png", colour)
    result = invoke("run", tmp_path / "in", tmp_path / "out", "-q", "--strength", "0",
                    "--model", tiny_models["unet-gray"])
    assert result.exit_code == 0, result.output
    for name, array in (("grey.png", picture), ("colour.png", colour)):
        output = np.asarray(Image.open(tmp_path / "out" / name)).astype(int)
        assert np.abs(output - array.astype(int)).max() <= 1, name  # within rounding: 1/255


def test_strength_1_is_the_default_to_the_byte_and_the_report_records_it(tmp_path, registry_dir):
    save(tmp_path / "in" / "grey.png", noisy_array(40, 36, 1))
    save(tmp_path / "in" / "colour.png", noisy_array(24, 30, 3))
    save(tmp_path / "in" / "grey-as-rgb.png", np.repeat(noisy_array(20, 20, 1, seed=3)[..., None], 3, axis=-1))
    for name, extra in (("default", []), ("one", ["--strength", "1"]), ("half", ["--strength", "0.5"])):
        result = invoke("run", tmp_path / "in", tmp_path / name, "-q", "--report", tmp_path / f"{name}.json", *extra)
        assert result.exit_code == 0, result.output
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "default")
    assert tree_digest(tmp_path / "half") != tree_digest(tmp_path / "default")
    assert json.loads((tmp_path / "one.json").read_text())["summary"]["strength"] == 1.0
    assert json.loads((tmp_path / "half.json").read_text())["summary"]["strength"] == 0.5
    replicated = np.asarray(Image.open(tmp_path / "half" / "grey-as-rgb.png"))
    assert replicated.shape[-1] == 3 and (replicated[..., 0] == replicated[..., 2]).all()  # still grey in RGB


def test_more_strength_removes_more_noise():
    """The residual |output - input|^2 grows with the strength, through a shipped model that
    takes a noise level (below 1: less of the input put back; above 1: told a higher level)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    clean = 0.5 + 0.3 * np.sin(x / 6.0) * np.cos(y / 9.0)
    noisy = np.clip(np.round((clean + rng.normal(0, 25 / 255, clean.shape)) * 255) / 255, 0, 1)
    decoded = io.Decoded(pixels=noisy[..., None].astype(np.float32), alpha=None, bits=8, format="PNG", info={})
    engine = Engine(Inference(model="gray", precision="float32", ensemble=1), warn=print)
    energies = []
    for value in (0, 0.25, 0.5, 1, 1.5, 2):
        at_strength = engine.at(dataclasses.replace(engine.inference, strength=value))
        [output] = pipeline.denoise_decoded(at_strength, [(Job(0, Path(), Path()), decoded)])
        energies.append(float(np.sum((output - decoded.pixels) ** 2)))
    assert energies[0] == 0.0
    assert all(a < b for a, b in zip(energies, energies[1:])), energies


def test_a_model_without_a_level_input_warns_that_more_than_1_acts_as_1(tmp_path, tiny_models):
    save(tmp_path / "in" / "x.png", noisy_array(32, 32, 1))
    outputs = {}
    for value in ("1", "2"):
        result = invoke("run", tmp_path / "in", tmp_path / value, "-q", "--strength", value,
                        "--model", tiny_models["conv"])
        assert result.exit_code == 0, result.output
        outputs[value] = (tmp_path / value / "x.png").read_bytes()
        assert ("--strength above 1 acts as 1" in result.stderr) == (value == "2")
    assert outputs["1"] == outputs["2"]


def test_eval_takes_the_strength_and_refuses_one_out_of_range(tmp_path, tiny_models):
    save(tmp_path / "clean" / "x.png", noisy_array(32, 32, 1, seed=5))
    result = invoke("eval", tmp_path / "clean", "--model", tiny_models["unet-gray"], "--strength", "0", "--json")
    assert result.exit_code == 0, result.output
    mean = json.loads(result.stdout)["mean"]
    assert mean["psnr"] == pytest.approx(mean["noisy_psnr"])  # strength 0: the noisy input scored
    result = invoke("run", tmp_path / "clean", tmp_path / "out", "--strength", "5")
    assert result.exit_code == 2 and "--strength" in result.output
