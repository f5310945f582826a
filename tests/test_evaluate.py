"""`denoise eval`: the quality protocol, scored by the CLI."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import noisy_array, save
from denoise import evaluate
from denoise.cli import main


def test_psnr_and_ssim_of_known_cases():
    clean = noisy_array(32, 32, 1)
    assert evaluate.psnr(clean, clean) == float("inf")
    off_by_one = clean.astype(np.int16) + 1
    off_by_one = np.clip(off_by_one, 0, 255).astype(np.uint8)
    assert abs(evaluate.psnr(clean, off_by_one) - 48.13) < 0.2
    assert evaluate.ssim(clean, clean) > 0.999
    assert evaluate.ssim(clean, np.zeros_like(clean)) < 0.1


def test_eval_adds_protocol_noise_and_scores_the_model(tmp_path, tiny_models):
    for index in range(2):
        save(tmp_path / "clean" / f"{index}.png", noisy_array(48, 48, 1, seed=index))
    args = ["eval", str(tmp_path / "clean"), "--sigma", "25", "--model", str(tiny_models["unet-gray"]), "--json"]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    results = json.loads(first.output)
    assert len(results["images"]) == 2
    assert 19 < results["mean"]["noisy_psnr"] < 23  # sigma 25 on uint8 images: about 20.2 dB
    assert "psnr" in results["mean"] and "ssim" in results["mean"]
    again = json.loads(CliRunner().invoke(main, args, catch_exceptions=False).output)
    assert again == results  # fixed seeds: the same figures every time


def test_eval_scores_outputs_made_elsewhere(tmp_path):
    clean = noisy_array(40, 40, 3)
    save(tmp_path / "clean" / "x.png", clean)
    save(tmp_path / "mine" / "x.png", clean)  # a perfect denoiser
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "clean"), "--denoised", str(tmp_path / "mine"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["mean"]["psnr"] == float("inf")
