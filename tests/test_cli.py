"""`denoise run`, `add-noise` and `models` driven as a user would, through the CLI."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import noisy_array, save, tree_digest
from denoise.cli import main


def invoke(*args):
    result = CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)
    return result


def make_inputs(folder):
    """One image per format and mode the tool promises to handle."""
    save(folder / "grey.png", noisy_array(40, 30, 1))
    save(folder / "grey_alpha.png", np.dstack([noisy_array(20, 20, 1), np.full((20, 20), 200, np.uint8)]), "LA")
    save(folder / "colour.jpg", noisy_array(33, 47, 3), quality=95)
    save(folder / "colour_alpha.png", np.dstack([noisy_array(24, 24, 3), np.arange(576, dtype=np.uint8).reshape(24, 24)]))
    save(folder / "palette.png", noisy_array(16, 16, 3), "P")
    save(folder / "sub" / "bitmap.bmp", noisy_array(17, 19, 3))
    save(folder / "sub" / "scan.tif", noisy_array(30, 20, 1))
    save(folder / "photo.webp", noisy_array(32, 32, 3), quality=95)
    Image.fromarray(noisy_array(25, 35, 1, dtype=np.uint16)).save(folder / "deep.png")
    cv2.imwrite(str(folder / "deep_colour.tif"), noisy_array(21, 23, 3, dtype=np.uint16))


EXPECTED_MODES = {
    "grey.png": "L", "grey_alpha.png": "LA", "colour.jpg": "RGB", "colour_alpha.png": "RGBA",
    "palette.png": "RGB", "sub/bitmap.bmp": "RGB", "sub/scan.tif": "L", "photo.webp": "RGB", "deep.png": "I;16",
}


def test_run_every_format_and_mode(tmp_path, registry_dir):
    make_inputs(tmp_path / "in")
    before = tree_digest(tmp_path / "in")
    report = tmp_path / "report.json"
    result = invoke("run", tmp_path / "in", tmp_path / "out", "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert tree_digest(tmp_path / "in") == before  # inputs never modified
    for name, mode in EXPECTED_MODES.items():
        source, output = Image.open(tmp_path / "in" / name), Image.open(tmp_path / "out" / name)
        assert output.size == source.size, name
        assert output.mode == mode, name
        assert output.format == source.format, name
    deep = cv2.imread(str(tmp_path / "out" / "deep_colour.tif"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (21, 23, 3)
    alpha_in = np.asarray(Image.open(tmp_path / "in" / "colour_alpha.png"))[..., 3]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "colour_alpha.png"))[..., 3], alpha_in)
    files = json.loads(report.read_text())["files"]
    assert len(files) == 10 and all(entry["status"] == "ok" for entry in files)
    assert all(entry["sigma"] is not None and entry["sigma"] > 0 for entry in files)  # auto sigma


def test_denoising_changes_the_pixels(tmp_path, registry_dir):
    save(tmp_path / "in" / "x.png", noisy_array(32, 32, 1))
    assert invoke("run", tmp_path / "in", tmp_path / "out", "-q").exit_code == 0
    before = np.asarray(Image.open(tmp_path / "in" / "x.png"))
    after = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    assert not np.array_equal(before, after)


def test_resume_overwrite_and_dry_run(tmp_path, registry_dir):
    for index in range(3):
        save(tmp_path / "in" / f"{index}.png", noisy_array(16, 16, 1, seed=index))
    out = tmp_path / "out"
    out.mkdir()
    (out / "0.png").write_bytes(b"old")
    dry = invoke("run", tmp_path / "in", out, "--dry-run")
    assert dry.exit_code == 0 and "skip" in dry.output and dry.output.count(": write") == 2
    assert sorted(path.name for path in out.iterdir()) == ["0.png"]  # nothing written
    assert invoke("run", tmp_path / "in", out, "-q").exit_code == 0
    assert (out / "0.png").read_bytes() == b"old"  # existing output skipped
    assert (out / "1.png").exists() and (out / "2.png").exists()
    assert invoke("run", tmp_path / "in", out, "-q", "--overwrite").exit_code == 0
    assert (out / "0.png").read_bytes() != b"old"


def test_bad_file_is_named_the_rest_is_done_and_exit_is_1(tmp_path, registry_dir):
    save(tmp_path / "in" / "good.png", noisy_array(16, 16, 1))
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = invoke("run", tmp_path / "in", tmp_path / "out", "-q")
    assert result.exit_code == 1
    assert "broken.jpg" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out" / "good.png").exists()
    assert not (tmp_path / "out" / "broken.jpg").exists()


def test_usage_errors_exit_2(tmp_path, registry_dir):
    save(tmp_path / "in" / "x.png", noisy_array(16, 16, 1))
    assert invoke("run", tmp_path / "in", tmp_path / "in").exit_code == 2  # output == input
    assert invoke("run", tmp_path / "missing", tmp_path / "out").exit_code == 2
    assert invoke("run", tmp_path / "in", tmp_path / "out", "--sigma", "loud").exit_code == 2
    assert invoke("run", tmp_path / "in", tmp_path / "out", "--model", "no-such-model").exit_code == 2


def test_output_inside_input_is_not_scanned(tmp_path, registry_dir):
    save(tmp_path / "in" / "x.png", noisy_array(16, 16, 1))
    assert invoke("run", tmp_path / "in", tmp_path / "in" / "clean", "-q").exit_code == 0
    assert invoke("run", tmp_path / "in", tmp_path / "in" / "clean", "-q").exit_code == 0
    assert sorted(str(p.relative_to(tmp_path / "in")) for p in (tmp_path / "in").rglob("*.png")) == [
        "clean/x.png", "x.png"]


def test_deterministic_across_runs_and_batch_sizes(tmp_path, registry_dir):
    for index in range(5):
        save(tmp_path / "in" / f"{index}.png", noisy_array(24 + 8 * index, 40, 3, seed=index))
    save(tmp_path / "in" / "big.png", noisy_array(300, 200, 1))
    digests = []
    for batch in (1, 3, 8):
        out = tmp_path / f"out{batch}"
        assert invoke("run", tmp_path / "in", out, "-q", "--batch-size", batch, "--tile", 128).exit_code == 0
        digests.append(tree_digest(out))
    assert digests[0] == digests[1] == digests[2]


def test_tiled_matches_untiled(tmp_path, tiny_models):
    save(tmp_path / "in" / "big.png", noisy_array(1024, 1024, 1))
    for tile in (256, 1024):
        args = ("run", tmp_path / "in", tmp_path / f"t{tile}", "-q", "--tile", tile, "--model", tiny_models["unet-gray"])
        assert invoke(*args).exit_code == 0
    tiled = np.asarray(Image.open(tmp_path / "t256" / "big.png"), np.int16)
    whole = np.asarray(Image.open(tmp_path / "t1024" / "big.png"), np.int16)
    assert np.abs(tiled - whole).max() <= 1


def test_ensemble_makes_the_result_independent_of_the_orientations_it_averages(tmp_path, tiny_models):
    image = noisy_array(64, 64, 1)
    turned = {"x.png": image, "mirrored.png": image[:, ::-1], "turned.png": np.rot90(image)}
    for name, pixels in turned.items():
        save(tmp_path / "in" / name, np.ascontiguousarray(pixels))
    # One model call sees each orientation differently; the mean over a mirror pair does not
    # see the mirror, over the four turns not the turn, over all eight neither.
    for size, invariant in ((("--ensemble", "1"), ()), (("--ensemble", "2"), ("mirrored",)), (("--ensemble", "4"), ("turned",)),
                            (("--ensemble",), ("mirrored", "turned"))):
        out = tmp_path / f"out{'-'.join(size)}"
        args = ("run", tmp_path / "in", out, "-q", "--sigma", "25", "--model", tiny_models["unet-gray"], *size)
        assert invoke(*args).exit_code == 0
        result = {name: np.asarray(Image.open(out / name), np.int16) for name in turned}
        differences = {"mirrored": np.abs(result["mirrored.png"][:, ::-1] - result["x.png"]).max(),
                       "turned": np.abs(np.rot90(result["turned.png"], -1) - result["x.png"]).max()}
        assert {name for name, difference in differences.items() if difference <= 1} == set(invariant), size
    assert invoke("run", tmp_path / "in", tmp_path / "o", "--ensemble", "3").exit_code == 2


def test_bfloat16_gives_nearly_the_float32_result_and_warns_where_the_cpu_lacks_it(tmp_path, tiny_models,
                                                                                     monkeypatch):
    from denoise import runtime

    save(tmp_path / "in" / "x.png", noisy_array(64, 48, 1))
    results = {}
    for precision, native in (("float32", False), ("bfloat16", True), ("emulated", False)):
        monkeypatch.setattr(runtime, "native_bfloat16", lambda: native)
        out = tmp_path / precision
        args = ("run", tmp_path / "in", out, "-q", "--sigma", "25", "--model", tiny_models["unet-gray"],
                "--ensemble", "1", "--precision", "float32" if precision == "float32" else "bfloat16")
        result = invoke(*args)
        assert result.exit_code == 0
        assert ("no native bfloat16" in result.stderr) == (precision == "emulated")
        results[precision] = np.asarray(Image.open(out / "x.png"), np.int16)
    assert results["bfloat16"].shape == (64, 48)
    assert np.abs(results["bfloat16"] - results["float32"]).max() <= 3
    assert np.array_equal(results["bfloat16"], results["emulated"])  # slower, not different
    assert invoke("run", tmp_path / "in", tmp_path / "o", "--precision", "half").exit_code == 2


def test_auto_arithmetic_follows_the_cpu_and_the_report_says_what_it_chose(tmp_path, tiny_models, monkeypatch):
    from denoise import runtime

    save(tmp_path / "in" / "x.png", noisy_array(64, 48, 1))
    base = ("run", tmp_path / "in", "-q", "--sigma", "25", "--model", tiny_models["unet-gray"])

    def output(name, *args):
        assert invoke(*base[:2], tmp_path / name, *base[2:], *args).exit_code == 0
        return np.asarray(Image.open(tmp_path / name / "x.png"))

    for native, named in ((True, ("--precision", "bfloat16", "--ensemble", "2")),
                          (False, ("--precision", "float32", "--ensemble", "1"))):
        monkeypatch.setattr(runtime, "native_bfloat16", lambda: native)
        report = tmp_path / f"report-{native}.json"
        auto = output(f"auto-{native}", "--report", report)
        np.testing.assert_array_equal(auto, output(f"named-{native}", *named))
        written = json.loads(report.read_text())
        assert written["summary"]["precision"] == named[1]
        assert written["files"][0]["ensemble"] == int(named[3])


def test_format_conversion_and_quality(tmp_path, registry_dir):
    save(tmp_path / "in" / "x.png", noisy_array(32, 32, 3))
    assert invoke("run", tmp_path / "in", tmp_path / "hi", "-q", "--format", "jpeg", "--quality", "95").exit_code == 0
    assert invoke("run", tmp_path / "in", tmp_path / "lo", "-q", "--format", "jpeg", "--quality", "20").exit_code == 0
    assert Image.open(tmp_path / "hi" / "x.jpg").format == "JPEG"
    assert (tmp_path / "lo" / "x.jpg").stat().st_size < (tmp_path / "hi" / "x.jpg").stat().st_size


def test_sigma_is_used_by_noise_level_models_and_ignored_with_a_warning_otherwise(tmp_path, tiny_models):
    save(tmp_path / "in" / "x.png", noisy_array(32, 32, 1))
    outputs = []
    for sigma in ("5", "50"):
        out = tmp_path / f"s{sigma}"
        assert invoke("run", tmp_path / "in", out, "-q", "--sigma", sigma, "--model", tiny_models["unet-gray"]).exit_code == 0
        outputs.append((out / "x.png").read_bytes())
    assert outputs[0] != outputs[1]
    result = invoke("run", tmp_path / "in", tmp_path / "c", "-q", "--sigma", "25", "--model", tiny_models["conv"])
    assert result.exit_code == 0 and "no noise-level input" in result.stderr


def test_tampered_weights_fail_with_the_file_and_expected_hash(tmp_path, registry_dir):
    save(tmp_path / "in" / "x.png", noisy_array(16, 16, 1))
    (registry_dir / "unet-gray.keras").write_bytes(b"tampered")
    result = invoke("run", tmp_path / "in", tmp_path / "out", "-q")
    assert result.exit_code == 2
    assert "unet-gray.keras" in result.stderr and "sha256" in result.stderr
    assert not (tmp_path / "out" / "x.png").exists()


def test_models_lists_the_registry(registry_dir):
    table = invoke("models")
    assert table.exit_code == 0 and "unet-gray" in table.output and "unet-color" in table.output
    listed = json.loads(invoke("models", "--json").output)
    assert [entry["name"] for entry in listed["models"]] == ["unet-gray", "unet-color"]


def test_models_shows_the_headline_psnr_per_data_set(registry_dir):
    manifest = json.loads((registry_dir / "manifest.json").read_text())
    manifest["models"][0]["metrics"] = {
        "set12_psnr_sigma25": 29.93, "set12_psnr_sigma25_auto": 29.9, "set12_noisy_psnr_sigma25": 20.3,
        "set12_psnr_sigma50": 26.9, "mcmaster18_channelwise_psnr_sigma25": 30.94,
    }
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    row = next(line for line in invoke("models").output.splitlines() if line.startswith("unet-gray"))
    assert row.endswith("set12: sigma25 29.93, sigma50 26.90 dB; mcmaster18_channelwise: sigma25 30.94 dB")
    manifest["models"][1]["metrics"] = {"mcmaster18_psnr_camera200": 32.48, "mcmaster18_noisy_psnr_camera200": 27.1,
                                        "mcmaster18_psnr_gaussian_sigma25_auto": 24.35}
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    row = next(line for line in invoke("models").output.splitlines() if line.startswith("unet-color"))
    assert row.endswith("mcmaster18: camera200 32.48 dB")


def test_models_with_a_corrupt_manifest_is_a_one_line_error(registry_dir):
    (registry_dir / "manifest.json").write_text('{"models": [')
    for args in (["models"], ["models", "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2
        assert "manifest.json: not a readable manifest" in result.output
        assert "Traceback" not in result.output


def test_add_noise_is_deterministic_and_has_the_asked_strength(tmp_path):
    clean = np.full((64, 64), 128, np.uint8)
    save(tmp_path / "in" / "flat.png", clean)
    for out in ("a", "b"):
        assert invoke("add-noise", tmp_path / "in", tmp_path / out, "--level", "20", "--seed", "3", "-q").exit_code == 0
    assert (tmp_path / "a" / "flat.png").read_bytes() == (tmp_path / "b" / "flat.png").read_bytes()
    noisy = np.asarray(Image.open(tmp_path / "a" / "flat.png"), np.float64)
    assert abs(noisy.std() - 20) < 1.5 and abs(noisy.mean() - 128) < 1.5
    assert invoke("add-noise", tmp_path / "in", tmp_path / "sp", "--noise", "salt-pepper", "--level", "0.1", "-q").exit_code == 0
    salt_pepper = np.asarray(Image.open(tmp_path / "sp" / "flat.png"))
    assert abs(np.isin(salt_pepper, (0, 255)).mean() - 0.1) < 0.02
    save(tmp_path / "colour" / "flat.png", np.full((64, 64, 3), 128, np.uint8))
    assert invoke("add-noise", tmp_path / "colour", tmp_path / "cam", "--noise", "camera", "--level", "100", "-q").exit_code == 0
    camera = np.asarray(Image.open(tmp_path / "cam" / "flat.png"), np.float64).std(axis=(0, 1))
    assert camera[0] > 1.2 * camera[1] < camera[2] and camera[1] > 5  # white balance: red and blue noisier


def test_the_console_script_keeps_exit_codes_and_output(tmp_path, tiny_models):
    """`denoise` skips the interpreter's slow teardown after a command: nothing may be lost."""
    save(tmp_path / "in" / "good.png", noisy_array(32, 32, 1))
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    script = [sys.executable, "-c", "from denoise.cli import entry; entry()"]
    model = ["--model", str(tiny_models["unet-gray"])]
    result = subprocess.run([*script, "run", tmp_path / "in", tmp_path / "out", *model, "-q"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "bad.png" in result.stderr
    assert Image.open(tmp_path / "out" / "good.png").size == (32, 32)
    result = subprocess.run([*script, "eval", tmp_path / "out", *model], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.splitlines()[-1].startswith("mean"), result.stderr
    result = subprocess.run([*script, "run", tmp_path / "in", tmp_path / "in"], capture_output=True, text=True)
    assert result.returncode == 2 and "error" in result.stderr


def test_help_is_fast_and_documents_every_command():
    result = invoke("--help")
    for command in ("run", "add-noise", "train", "models"):
        assert command in result.output
    assert "--sigma" in invoke("run", "--help").output


def test_the_noise_kinds_offered_are_the_ones_the_pipeline_handles():
    from denoise import cli, settings

    assert cli.NOISE_KINDS == settings.NOISE_KINDS
