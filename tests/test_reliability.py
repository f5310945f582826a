"""What a user meets on everyday trees: writes that would land on inputs, special files, deep and
unreadable folders, long and non-UTF-8 names, bad levels, and what a run says it did.

Every test hashes the inputs before and after: no run may change an input, whatever path leads there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import noisy_array, save, tree_digest
from denoise import io, offload
from denoise.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def error_lines(result) -> list[str]:
    """The lines naming a file or a problem (the closing summary line left out)."""
    return [line for line in result.stderr.splitlines() if line and " done, " not in line]


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "in"
    save(folder / "a.png", noisy_array(32, 40, 1, seed=1))
    save(folder / "good.png", noisy_array(32, 40, 3, seed=2))
    return folder


def test_a_report_or_dead_letter_naming_an_input_is_refused(tmp_path, inputs, registry_dir):
    before = tree_digest(inputs)
    result = invoke("run", inputs, tmp_path / "out", "--report", inputs / "a.png")
    assert result.exit_code == 2 and "--report" in result.stderr and "image name" in result.stderr
    os.symlink(inputs / "a.png", tmp_path / "report.json")  # a report name that links to an input
    result = invoke("run", inputs, tmp_path / "out", "--report", tmp_path / "report.json")
    assert result.exit_code == 2 and "lies among the inputs" in result.stderr
    assert not (tmp_path / "out").exists()
    assert tree_digest(inputs) == before


def test_an_output_subfolder_linked_into_the_input_is_never_written(tmp_path, registry_dir):
    inputs, output = tmp_path / "in", tmp_path / "out"
    save(inputs / "sub" / "x.png", noisy_array(32, 32, 1, seed=3))
    save(inputs / "sub" / "x.jpg", noisy_array(32, 32, 1, seed=4))
    save(inputs / "top.png", noisy_array(32, 32, 1, seed=5))
    output.mkdir()
    os.symlink(Path("..") / "in" / "sub", output / "sub")
    before = tree_digest(inputs)
    result = invoke("run", inputs, output, "--format", "png", "--overwrite")
    assert result.exit_code == 1
    lines = error_lines(result)
    # x.jpg's output would land on the input x.png; x.png then shares its output name.
    assert len(lines) == 2 and "x.jpg: the output" in lines[0] and "lies in the input folder" in lines[0], lines
    assert (output / "top.png").is_file()
    assert tree_digest(inputs) == before


def test_special_files_are_named_and_the_good_ones_written(tmp_path, inputs, registry_dir):
    os.mkfifo(inputs / "pipe.png")
    os.symlink("/dev/zero", inputs / "zero.png")
    before = tree_digest(inputs)  # regular files only: the FIFO and the device are not read
    result = invoke("run", inputs, tmp_path / "out")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 2, result.stderr
    assert any("pipe.png: not a regular file (a FIFO)" in line for line in lines)
    assert any("zero.png: not a regular file (a character device)" in line for line in lines)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "good.png"]
    assert tree_digest(inputs) == before


def test_an_unreadable_folder_is_a_failure_in_the_lines_and_the_report(tmp_path, inputs, registry_dir, monkeypatch):
    locked = inputs / "locked"
    save(locked / "hidden.png", noisy_array(16, 16, 1))
    scandir = os.scandir

    def refusing(path):  # what chmod 000 does for a user other than root
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(io.os, "scandir", refusing)
    before = tree_digest(inputs)
    result = invoke("run", inputs, tmp_path / "out", "--report", tmp_path / "report.json")
    assert result.exit_code == 1
    assert error_lines(result) == [f"denoise: {locked}: cannot list the folder: Permission denied"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["failed"] == 1 and report["summary"]["ok"] == 2
    assert [entry["input"] for entry in report["files"] if entry["status"] == "failed"] == [str(locked)]
    assert tree_digest(inputs) == before


def test_a_file_a_thousand_folders_deep_and_a_name_of_250_bytes(tmp_path, registry_dir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    deep = inputs
    for _ in range(1100):  # os.makedirs itself recurses once a level
        deep = deep / "d"
        os.mkdir(deep)
    save(deep / "x.png", noisy_array(16, 16, 1))
    long_name = "n" * 246 + ".png"
    save(inputs / long_name, noisy_array(16, 16, 1, seed=7))
    try:
        result = invoke("run", inputs, tmp_path / "out", "-q")
        assert result.exit_code == 0, result.stderr
        assert (tmp_path / "out" / deep.relative_to(inputs) / "x.png").is_file()
        assert (tmp_path / "out" / long_name).is_file()
        assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".part")]
    finally:  # pytest's own clean-up (shutil.rmtree) recurses once a level
        for top in (inputs, tmp_path / "out"):
            remove_chain(top / "d")


def remove_chain(folder: Path) -> None:
    """Remove a chain of folders named d, each holding the next, and the files in them, bottom up."""
    chain = []
    while folder.is_dir():
        chain.append(folder)
        folder = folder / "d"
    for each in reversed(chain):
        for entry in os.listdir(each):
            if entry != "d":
                os.unlink(each / entry)
        os.rmdir(each)


@pytest.mark.parametrize("level", ["nan", "inf", "-1", "300", "abc"])
def test_levels_that_are_not_levels_are_refused(tmp_path, inputs, registry_dir, level):
    for command in (["run", inputs, tmp_path / "out", "--sigma", level],
                    ["eval", inputs, "--model-sigma", level], ["eval", inputs, "--sigma", level]):
        if command[0] == "eval" and command[-2] == "--sigma" and level == "300":
            continue  # a noise level of 300 can be added; it is what the model is told that stops at 255
        result = invoke(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "Traceback" not in result.output and "Error: Invalid value for" in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_a_level_above_what_the_model_learned_is_warned_of(tmp_path, inputs, registry_dir):
    result = invoke("run", inputs, tmp_path / "out", "--sigma", "120", "-q")
    assert result.exit_code == 0
    assert "above the levels model unet-gray learned (up to 75)" in result.stderr


def test_eval_skips_an_empty_file_and_scores_the_rest(tmp_path, inputs, registry_dir):
    (inputs / "empty.png").write_bytes(b"")
    result = invoke("eval", inputs, "--sigma", "25", "--json")
    assert result.exit_code == 1
    assert "empty.png: empty file (0 bytes)" in result.stderr
    scored = json.loads(result.stdout)
    assert sorted(row["image"] for row in scored["images"]) == ["a.png", "good.png"]


def test_a_name_that_is_not_utf8_under_dry_run(tmp_path, registry_dir):
    inputs = os.fsencode(tmp_path / "in")
    os.mkdir(inputs)
    Image.fromarray(noisy_array(16, 16, 1)).save(os.fsdecode(inputs + b"/caf\xe9.png"), format="PNG")
    result = invoke("run", tmp_path / "in", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "caf\\xe9.png -> " in result.stdout and ": write" in result.stdout


def test_a_folder_in_the_place_of_an_output_fails(tmp_path, inputs, registry_dir):
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    result = invoke("run", inputs, tmp_path / "out")
    assert result.exit_code == 1
    assert error_lines(result) == [f"denoise: {inputs / 'a.png'}: a folder is in the way of the output "
                                   f"{tmp_path / 'out' / 'a.png'}"]


def test_an_image_too_large_for_the_memory_is_refused_from_its_header(tmp_path, inputs, registry_dir, monkeypatch):
    monkeypatch.setattr(io, "available_memory", lambda: 32 * 40 * 20 * 2)  # room for the grey image only
    monkeypatch.setattr(offload, "SMALL", -1)  # decode here, where the patch is, not in worker processes
    result = invoke("run", inputs, tmp_path / "out")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "good.png: 40x32 needs about" in lines[0] and "memory available" in lines[0]
    assert (tmp_path / "out" / "a.png").is_file()


def test_every_run_ends_with_what_it_did_and_the_report_times_each_file(tmp_path, inputs, registry_dir):
    report = tmp_path / "report.json"
    result = invoke("run", inputs, tmp_path / "out", "--report", report)
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines()[-1].startswith("denoise: 2 done, 0 skipped, 0 failed in ")
    summary = json.loads(report.read_text())
    total = summary["summary"]["seconds"]
    for entry in summary["files"]:  # each file's own work, and when it began
        assert 0 < entry["seconds"] <= total and 0 <= entry["started"] <= total
    rerun = invoke("run", inputs, tmp_path / "out")
    assert rerun.exit_code == 0
    assert "0 done, 2 skipped (their outputs exist; --overwrite redoes them), 0 failed" in rerun.stderr
    assert invoke("run", inputs, tmp_path / "out", "-q").stderr == ""


def test_one_input_file_and_an_image_name_write_that_file(tmp_path, inputs, registry_dir):
    before = tree_digest(inputs)
    result = invoke("run", inputs / "a.png", tmp_path / "clean.png", "-q")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "clean.png").is_file()
    with Image.open(tmp_path / "clean.png") as image:
        assert image.size == (40, 32)
    several = invoke("run", inputs / "a.png", inputs / "good.png", tmp_path / "both.png")
    assert several.exit_code == 2 and "takes one input file" in several.stderr
    assert tree_digest(inputs) == before


@pytest.mark.parametrize("spelling, suffix, format", [("jpg", ".jpg", "JPEG"), ("tif", ".tif", "TIFF"),
                                                       ("JPEG", ".jpg", "JPEG")])
def test_common_spellings_of_formats(tmp_path, inputs, registry_dir, spelling, suffix, format):
    result = invoke("run", inputs, tmp_path / "out", "--format", spelling, "-q")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / f"a{suffix}") as image:
        assert image.format == format


def test_usage_names_input_and_output():
    result = invoke("run", "--help")
    assert "INPUT... OUTPUT" in result.output
