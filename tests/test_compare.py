"""`denoise compare`: the sheet's crops, layout and labels."""

import json
import re

import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import brightness_steps, noisy_array, save
from denoise.cli import main
from denoise.compare import pick_crops, sample_of


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def half_textured(height=120, width=200, seed=0) -> np.ndarray:
    """Texture (stripes and checks) in the left half, a flat grey in the right, noise on both."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    picture = np.where(x < width // 2, 0.5 + 0.35 * np.sign(np.sin(x / 2.0) * np.sin(y / 3.0)), 0.5)
    return np.clip(picture + rng.normal(0, 0.05, picture.shape), 0, 1)[..., None].astype(np.float32)


def test_the_crops_are_the_most_detailed_and_the_flattest_area():
    pixels = half_textured()
    crops = dict(pick_crops(pixels, 48))
    assert set(crops) == {"most detailed", "flattest"}
    top, left, tall, wide = crops["most detailed"]
    assert (tall, wide) == (48, 48) and left + wide <= 100  # in the textured half
    top, left, tall, wide = crops["flattest"]
    assert left >= 100 and top + tall <= 120  # in the flat half
    assert pick_crops(pixels[:40, :40], 48) == [("whole", (0, 0, 40, 40))]  # no larger than a crop: whole
    assert sample_of(10, 4) == [0, 3, 6, 9] and sample_of(3, 4) == [0, 1, 2]


def test_the_sheet_has_a_column_per_strength_a_row_per_crop_and_says_what_each_was_told(tmp_path, registry_dir):
    grey = np.round(half_textured(96, 160) * 255).astype(np.uint8)[..., 0]
    save(tmp_path / "in" / "a-grey.png", grey)
    save(tmp_path / "in" / "b-colour.png", noisy_array(80, 120, 3))
    save(tmp_path / "in" / "c-small.png", noisy_array(30, 40, 1))
    sheet = tmp_path / "sheet.png"
    result = invoke("compare", tmp_path / "in", "--out", sheet, "--strengths", "0.5,1,2", "--crop", "48", "--json")
    assert result.exit_code == 0, result.output
    layout = json.loads(result.stdout)
    assert layout["columns"] == [["input"], ["--strength 0.5"], ["--strength 1"], ["--strength 2"]]
    assert [(row["image"], row["crop"]) for row in layout["rows"]] == [
        ("a-grey.png", "most detailed"), ("a-grey.png", "flattest"),
        ("b-colour.png", "most detailed"), ("b-colour.png", "flattest"), ("c-small.png", "whole")]
    image = np.asarray(Image.open(sheet).convert("RGB"))
    assert list(image.shape[1::-1]) == layout["size"]
    # Each crop is told the level `run` reads on the whole image, not the crop's own.
    report = tmp_path / "report.json"
    assert invoke("run", tmp_path / "in", tmp_path / "out", "-q", "--report", report).exit_code == 0
    levels = {entry["input"].rsplit("/", 1)[-1]: entry["sigma"] for entry in json.loads(report.read_text())["files"]}
    for row in layout["rows"]:
        assert len(row["cells"]) == 4
        labels = [cell["label"] for cell in row["cells"]]
        told = [float(re.search(r"told ([\d.]+)", label[-1]).group(1)) for label in labels[1:]]
        assert told[0] == told[1] == round(levels[row["image"]], 1)  # up to 1: the same level, blended
        assert told[2] == round(levels[row["image"]] * 1.75, 1)
        assert "kept" in labels[1][-1] and "kept" not in labels[2][-1]
        # At 100%: the input cell holds the input's pixels themselves.
        x, y, wide, tall = row["cells"][0]["rect"]
        top, left, crop_tall, crop_wide = row["box"]
        assert (wide, tall) == (crop_wide, crop_tall)
        source = np.asarray(Image.open(tmp_path / "in" / row["image"]).convert("RGB"))
        np.testing.assert_array_equal(image[y : y + tall, x : x + wide], source[top : top + tall, left : left + wide])
    assert "would take" not in result.stdout  # --json: the layout only
    assert layout["images"] == 3 and layout["sample"] == 3 and layout["estimate_s"] > 0


def test_compare_samples_a_folder_writes_html_and_refuses_other_names(tmp_path, registry_dir):
    for index in range(6):
        save(tmp_path / "in" / f"{index}.png", noisy_array(48, 96, 1, seed=index))
    page = tmp_path / "sheet.html"
    result = invoke("compare", tmp_path / "in", "--out", page, "--sample", "2", "--crop", "32", "--strengths", "1,1.5")
    assert result.exit_code == 0, result.output
    # The estimate scales the sample's own time, which a loaded machine makes longer.
    assert "2 of 6 images" in result.stdout and re.search(r"would take (under a second|about \d+ \w+) here", result.stdout)
    text = page.read_text()
    assert text.count("<img") == 2 * 2 * 3  # 2 images, 2 crops each, the input and 2 strengths
    assert "--strength 1.5" in text and "0.png" in text and "5.png" in text
    result = invoke("compare", tmp_path / "in", "--out", tmp_path / "sheet.jpg")
    assert result.exit_code == 2 and ".png or an .html" in result.stderr


def test_noise_stabilised_first_is_labelled_with_the_level_the_model_sees(tmp_path, registry_dir):
    """Speckle goes through a transform before the model; the label gives the level in 0-255
    units of what the model sees, not of the transformed values (which read several hundred)."""
    from denoise.noise import NoiseSpec, add_noise_uint

    clean = np.round(brightness_steps() * 255).astype(np.uint8)
    save(tmp_path / "in" / "speckle.png", add_noise_uint(clean, NoiseSpec("speckle", 0.3, 0.3), np.random.default_rng(0)))
    result = invoke("compare", tmp_path / "in", "--out", tmp_path / "sheet.png", "--strengths", "1", "--json")
    assert result.exit_code == 0, result.output
    label = json.loads(result.stdout)["rows"][0]["cells"][1]["label"][-1]
    assert "after the transform" in label, label
    assert 5 < float(re.search(r"told ([\d.]+)", label).group(1)) < 100, label
