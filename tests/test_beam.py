"""`denoise beam` on the local runner (FnApiRunner, the DirectRunner's batch engine): the same
bytes as `denoise run`, and a dead letter for a bad file. Skipped where Apache Beam is not
installed (the `beam` extra)."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("apache_beam", reason="the beam extra (apache-beam) is not installed")

from conftest import noisy_array, save, tree_digest  # noqa: E402
from denoise import beam as beam_job  # noqa: E402
from denoise.cli import main  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def make_inputs(folder):
    """Grey, 16-bit grey, colour, colour with alpha (in a subfolder), a tiled one, a bad file."""
    save(folder / "grey.png", noisy_array(40, 30, 1))
    cv2.imwrite(str(folder / "deep.png"), noisy_array(25, 35, 1, dtype=np.uint16))
    save(folder / "colour.jpg", noisy_array(33, 47, 3), quality=95)
    save(folder / "sub" / "alpha.png",
         np.dstack([noisy_array(24, 24, 3), np.arange(576, dtype=np.uint8).reshape(24, 24)]))
    save(folder / "wide.tif", noisy_array(40, 150, 1, seed=2))  # three tiles of 64
    (folder / "bad.png").write_bytes(b"this is not a PNG")
    (folder / "notes.txt").write_text("not an image: never matched")


@pytest.mark.parametrize("precision,noise", [("float32", "auto"), ("bfloat16", "auto"), ("float32", "impulse")])
def test_beam_writes_what_run_writes(tmp_path, tiny_models, precision, noise):
    # The tiny U-Net: a noise-level input, so the sigma estimate matters too, and colour images
    # go through this grey model channel by channel. --tile 64 tiles wide.tif.
    model = tiny_models["unet-gray"]
    make_inputs(tmp_path / "in")
    before = tree_digest(tmp_path / "in")
    # One 64x64 tile a batch: wide.tif (6,000 pixels) outweighs a batch and must go alone (Beam's
    # BatchElements would emit an empty batch before it).
    ran = invoke("run", tmp_path / "in", tmp_path / "run", "--model", model, "--tile", 64, "--batch-size", 1, "-q",
                 "--precision", precision, "--noise", noise)
    assert ran.exit_code == 1  # the bad file
    dead_letter = tmp_path / "dead.jsonl"
    args = ("beam", tmp_path / "in", tmp_path / "beam", "--model", model, "--tile", 64, "--batch-size", 1,
            "--precision", precision,
            "--noise", noise, "--dead-letter", dead_letter, "--direct_num_workers", 1)  # a runner option, passed on
    beamed = invoke(*args)
    assert beamed.exit_code == 1, beamed.output
    summary = json.loads(beamed.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (5, 0, 1)

    assert tree_digest(tmp_path / "in") == before  # inputs never modified
    outputs = tree_digest(tmp_path / "beam")
    assert sorted(outputs) == ["colour.jpg", "deep.png", "grey.png", "sub/alpha.png", "wide.tif"]
    assert outputs == tree_digest(tmp_path / "run")  # byte for byte

    records = [json.loads(line) for line in dead_letter.read_text().splitlines()]
    assert records == [{
        "input": str(tmp_path / "in" / "bad.png"), "output": str(tmp_path / "beam" / "bad.png"),
        "stage": "read", "reason": "not an image (unknown or corrupt format)",
    }]
    assert f"bad.png: {records[0]['reason']}" in ran.stderr  # the reason run gives

    # A rerun skips what exists (and so resumes an interrupted job).
    again = invoke(*args)
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (0, 5, 1)
    assert tree_digest(tmp_path / "beam") == outputs

    # --ensemble changes the pixels, and the same way in both.
    invoke("run", tmp_path / "in", tmp_path / "run8", "--model", model, "--tile", 64, "-q", "--ensemble")
    invoke("beam", tmp_path / "in", tmp_path / "beam8", "--model", model, "--tile", 64, "--ensemble",
           "--direct_num_workers", 1)
    assert tree_digest(tmp_path / "beam8") == tree_digest(tmp_path / "run8") != outputs


def test_one_output_per_name():
    # With --format png, a.png and a.jpg would both write a.png: the first in run's order wins.
    options = beam_job.BeamOptions("in", "out", format="png", overwrite=True)
    claims = [(("a.png",), "in/a.png"), (("a.jpg",), "in/a.jpg")]
    results = list(beam_job.Claim(options).process(("out/a.png", claims)))
    assert results[-1] == ("in/a.jpg", "out/a.png")
    dead = json.loads(results[0].value)
    assert dead["input"] == "in/a.png" and dead["reason"] == "another input is also written to out/a.png"
    assert beam_job.target_for("sub/x.jpeg", options) == "out/sub/x.png"


def test_an_input_is_never_its_own_output(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"any")
    options = beam_job.BeamOptions(str(tmp_path), str(tmp_path / "out"), overwrite=True)
    results = list(beam_job.Claim(options).process((str(image), [(("a.png",), str(image))])))
    assert len(results) == 1 and "is the input itself" in json.loads(results[0].value)["reason"]
    assert image.read_bytes() == b"any"


@pytest.mark.parametrize("pattern, root, glob", [
    ("gs://b/in/**/*.png", "gs://b/in/", "gs://b/in/**/*.png"),
    ("gs://b/in/", "gs://b/in/", "gs://b/in/**"),
    ("s3://b/in/x.png", "s3://b/in/", "s3://b/in/x.png"),
    ("in/*.jp*g", "in/", "in/*.jp*g"),
    ("x.png", "", "x.png"),
])
def test_patterns(pattern, root, glob):
    assert beam_job.split_pattern(pattern) == (root, glob)


def test_usage_errors(tmp_path):
    missing = invoke("beam", tmp_path / "nothing", tmp_path / "out")
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr
    (tmp_path / "in").mkdir()
    model = invoke("beam", tmp_path / "in", tmp_path / "out", "--model", tmp_path / "none.keras")
    assert model.exit_code == 2 and "not a registered model" in model.stderr
    noise = invoke("beam", tmp_path / "in", tmp_path / "out", "--noise", "poisson", "--sigma", "10")
    assert noise.exit_code == 2 and "leave --sigma auto" in noise.stderr


def test_a_dead_letter_naming_an_input_is_refused_and_broken_links_reach_it(tmp_path, tiny_models, registry_dir):
    inputs = tmp_path / "in"
    save(inputs / "good.png", noisy_array(24, 24, 1))
    (inputs / "gone.png").symlink_to(inputs / "missing.png")
    before = tree_digest(inputs)
    refused = invoke("beam", inputs, tmp_path / "out", "--dead-letter", inputs / "good.png")
    assert refused.exit_code == 2 and "--dead-letter" in refused.stderr
    assert tree_digest(inputs) == before and not (tmp_path / "out").exists()

    dead_letter = tmp_path / "dead.jsonl"
    ran = invoke("beam", inputs, tmp_path / "out", "--model", tiny_models["unet-gray"], "--dead-letter", dead_letter,
                 "--direct_num_workers", 1)
    assert ran.exit_code == 1, ran.output
    records = [json.loads(line) for line in dead_letter.read_text().splitlines()]
    assert [(record["input"], record["stage"]) for record in records] == [(str(inputs / "gone.png"), "read")]
    assert "broken symlink" in records[0]["reason"]
    assert (tmp_path / "out" / "good.png").is_file()
    assert tree_digest(inputs) == before


def test_a_tampered_default_model_fails_before_the_pipeline_in_one_line(tmp_path, registry_dir):
    save(tmp_path / "in" / "a.png", noisy_array(24, 24, 1))
    (registry_dir / "unet-gray.keras").write_bytes(b"tampered")
    result = invoke("beam", tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]
    assert "does not match the manifest" in result.stderr
