"""Hardening: bad inputs, interruption, write faults and broken weights.

Every test hashes the input tree before and after: inputs are never modified. Each bad file
must give one stderr line naming it and the reason (the same reason in --report), no output,
and exit status 1, while every good file beside it is processed correctly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import heeding_ctrl_c
from corpus import Fail, Ok, encoded, gradient, make_corpus, make_unreadable, png_bomb
from denoise import io, offload
from denoise.cli import main

ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Everything about a tree that a run could change: contents, link targets, modes, times."""
    state = {}
    for top, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(top) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                state[str(path.relative_to(folder))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                state[str(path.relative_to(folder))] = ("dir", info.st_mode)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[str(path.relative_to(folder))] = ("file", info.st_mode, info.st_mtime_ns, digest)
    return state


def files_below(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def no_partial_files(folder: Path) -> bool:
    return not [path for path in folder.rglob("*") if path.name.endswith(".part")]


@pytest.fixture(scope="session")
def identity_model(tmp_path_factory) -> Path:
    """A tiny grey U-Net whose last convolution is zero: its residual output is its input.

    With it, every output must equal its input up to rounding (and the output format's own
    loss), so orientation, channel order, bit depth and alpha are checked pixel by pixel."""
    import keras

    from denoise import models

    keras.utils.set_random_seed(0)
    model = models.unet(channels=1, filters=4, depth=2, blocks=1)
    tail = model.get_layer("tail")
    tail.set_weights([np.zeros_like(weight) for weight in tail.get_weights()])
    path = tmp_path_factory.mktemp("identity") / "identity.keras"
    model.save(path)
    return path


LOSSLESS = {"PNG", "TIFF", "BMP"}


def check_output(source: Path, output: Path, expect: Ok, identity: bool = True) -> None:
    """The output exists with the expected size, mode and sample type; with the identity model
    its pixels are the input's (exactly for lossless formats, closely for lossy ones)."""
    assert output.is_file(), f"{output} missing"
    if expect.mode == "cv2":
        import cv2

        array = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
        assert array is not None and array.dtype == np.dtype(expect.dtype), output
        assert array.shape == (expect.size[1], expect.size[0], expect.channels), output
    else:
        with Image.open(output) as image:
            assert image.size == expect.size, output
            assert image.mode == expect.mode, output
            with Image.open(source) as original:
                assert image.format == (expect.format or original.format), output
            assert np.asarray(image).dtype == np.dtype(expect.dtype), output
    if not identity:
        return
    before, after = io.read_image(source), io.read_image(output)
    assert after.pixels.shape == before.pixels.shape, output
    if (before.alpha is None) != (after.alpha is None):
        assert after.format in ("JPEG", "BMP"), output  # formats without alpha
    elif before.alpha is not None:
        np.testing.assert_array_equal(after.alpha, before.alpha)
    difference = np.abs(after.pixels - before.pixels)
    if before.value_range is not None:  # float: the values themselves, in their own range
        raw_before = np.asarray(Image.open(source), np.float32)
        raw_after = np.asarray(Image.open(output), np.float32)
        np.testing.assert_allclose(raw_after, raw_before, rtol=1e-5, atol=1e-5 * np.ptp(raw_before))
    elif after.format in LOSSLESS:
        step = 1 / 65535 if after.bits == 16 else 1 / 255
        assert difference.max() <= step * 1.01, (output, difference.max())
    else:  # JPEG, WebP, GIF (256 colours): the format's own loss only
        assert difference.mean() < 0.03, (output, difference.mean())


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_corpus_each_bad_file_named_once_the_rest_processed(tmp_path, identity_model):
    inputs, output, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    cases = make_corpus(inputs)
    if not ROOT:  # root reads mode-000 files anyway
        cases[make_unreadable(inputs)] = Fail("Permission denied")
    before = snapshot(inputs)

    result = invoke("run", inputs, output, "--model", identity_model, "--report", report, "-q")

    assert result.exit_code == 1, result.output
    assert snapshot(inputs) == before
    failures = {name: expect for name, expect in cases.items() if isinstance(expect, Fail)}
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(failures), result.stderr  # nothing else: no warnings, no traceback
    files = {entry["input"]: entry for entry in json.loads(report.read_text())["files"]}
    for name, expect in failures.items():
        path = inputs / name
        entry = files[str(path)]
        assert entry["status"] == "failed" and expect.reason in entry["reason"], (name, entry)
        assert f"denoise: {path}: {entry['reason']}" in lines, name  # the same reason in both
        assert "\n" not in entry["reason"]
        assert not os.path.lexists(output / name), name
    for name, expect in cases.items():
        if isinstance(expect, Ok):
            check_output(inputs / name, output / name, expect)
            assert files[str(inputs / name)]["status"] == "ok"
    assert "notes.txt" not in {Path(key).name for key in files}  # not an image name: not an input
    written = {str(path.relative_to(output)) for path in output.rglob("*") if path.is_file()}
    assert written == {name for name, expect in cases.items() if isinstance(expect, Ok)}
    umask = os.umask(0o022)
    os.umask(umask)
    assert all(stat.S_IMODE(os.stat(output / name).st_mode) == 0o666 & ~umask for name in written)

    again = invoke("run", inputs, output, "--model", identity_model, "-q")  # a rerun: skips, same failures
    assert again.exit_code == 1 and again.stderr == result.stderr
    assert snapshot(inputs) == before


def test_add_noise_over_the_corpus(tmp_path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    cases = make_corpus(inputs)
    before = snapshot(inputs)
    result = invoke("add-noise", inputs, output, "-q")
    assert result.exit_code == 1
    assert snapshot(inputs) == before
    lines = result.stderr.strip().splitlines()
    failures = [name for name, expect in cases.items() if isinstance(expect, Fail)]
    assert len(lines) == len(failures), result.stderr
    for name in failures:
        assert any(line.startswith(f"denoise: {inputs / name}: ") for line in lines), name
        assert not os.path.lexists(output / name)
    for name, expect in cases.items():
        if isinstance(expect, Ok):
            check_output(inputs / name, output / name, expect, identity=False)


@pytest.mark.skipif(ROOT, reason="root reads mode-000 files")
def test_unreadable_file(tmp_path, identity_model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    name = make_unreadable(inputs)
    before = snapshot(inputs)
    result = invoke("run", inputs, tmp_path / "out", "--model", identity_model, "-q")
    assert result.exit_code == 1 and f"{inputs / name}: cannot read: Permission denied" in result.stderr
    assert snapshot(inputs) == before


def test_icc_profile_of_another_colour_space_is_dropped(tmp_path, identity_model):
    """A CMYK JPEG becomes an RGB JPEG: its CMYK profile must not be attached to RGB pixels."""
    cmyk_profile = bytes(16) + b"CMYK" + bytes(108)
    rgb_profile = bytes(16) + b"RGB " + bytes(108)
    colour = Image.fromarray(gradient(16, 16, 3))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cmyk.jpg").write_bytes(encoded(colour.convert("CMYK"), "JPEG", icc_profile=cmyk_profile))
    (tmp_path / "in" / "rgb.jpg").write_bytes(encoded(colour, "JPEG", icc_profile=rgb_profile))
    before = snapshot(tmp_path / "in")
    assert invoke("run", tmp_path / "in", tmp_path / "out", "--model", identity_model, "-q").exit_code == 0
    assert "icc_profile" not in Image.open(tmp_path / "out" / "cmyk.jpg").info
    assert Image.open(tmp_path / "out" / "rgb.jpg").info["icc_profile"] == rgb_profile
    assert snapshot(tmp_path / "in") == before


BOMB_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: a bomb's pixels would need more
from pathlib import Path
from denoise import io
for name in sys.argv[1:]:
    try:
        io.read_image(Path(name))
        print(name, "decoded")
    except io.ImageError as error:
        print(name, "refused:", error)
"""


def test_decompression_bombs_refused_from_the_header(tmp_path):
    """50000x50000 (over Pillow's own hard limit) and 20000x20000 (over ours, under Pillow's),
    as PNG and JPEG headers, are refused in a process that cannot allocate 1 GiB."""
    jpeg = bytearray(encoded(Image.fromarray(gradient(8, 8, 3)), "JPEG"))
    frame = jpeg.index(b"\xff\xc0")
    bombs = {"png50k.png": png_bomb(), "png20k.png": png_bomb(20_000, 20_000)}
    for side in (50_000, 20_000):
        jpeg[frame + 5: frame + 9] = side.to_bytes(2, "big") * 2
        bombs[f"jpeg{side // 1000}k.jpg"] = bytes(jpeg)
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
    before = snapshot(tmp_path)
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, *(str(tmp_path / name) for name in bombs)],
                            capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(bombs)
    assert all("pixel limit" in line and "refused" in line for line in lines), lines
    assert snapshot(tmp_path) == before


def test_output_never_replaces_its_own_input(tmp_path, identity_model):
    """`denoise run in/x.png in --overwrite` names the input itself as the output."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "x.png").write_bytes(encoded(Image.fromarray(gradient(16, 16)), "PNG"))
    os.link(inputs / "x.png", tmp_path / "hard.png")  # and a hard link to it: the same file
    (tmp_path / "out").mkdir()
    os.link(inputs / "x.png", tmp_path / "out" / "x.png")
    before = snapshot(tmp_path)
    for source, target in ((inputs / "x.png", inputs), (inputs, tmp_path / "out")):
        result = invoke("run", source, target, "--model", identity_model, "--overwrite", "-q")
        assert result.exit_code == 1 and "is the input itself" in result.stderr
    assert snapshot(tmp_path) == before


def test_a_file_of_another_type_fails_before_the_model_and_format_png_takes_it(tmp_path, identity_model):
    """A file named on the command line with an extension denoise cannot write (TGA here)."""
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "scan.tga"
    Image.fromarray(gradient(16, 16)).save(source)
    before = snapshot(tmp_path / "in")
    result = invoke("run", source, tmp_path / "out", "--model", identity_model, "-q")
    assert result.exit_code == 1
    assert f"{source}: cannot write .tga: denoise writes" in result.stderr and "--format png" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    result = invoke("run", source, tmp_path / "out", "--model", identity_model, "--format", "png", "-q")
    assert result.exit_code == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "scan.png")), gradient(16, 16))
    assert snapshot(tmp_path / "in") == before


# --------------------------------------------------------------------------------------------
# Interruption
# --------------------------------------------------------------------------------------------


def _interrupt_after_first_outputs(command: list[str], output: Path, signum: int, done_before: int) -> tuple[int, str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=heeding_ctrl_c)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and process.poll() is None:
            if output.exists() and sum(1 for _ in output.rglob("*.png")) > done_before:
                break
            time.sleep(0.02)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


def test_sigint_and_sigterm_lose_nothing(tmp_path, tiny_models):
    """2,000 tiny images: SIGINT after the first outputs, then SIGTERM in the resumed run, then
    a third run finishes. Exit 130 and 143, no partial file at any point, and the final tree is
    byte-identical to an uninterrupted run's."""
    inputs = tmp_path / "in"
    rng = np.random.default_rng(0)
    for index in range(2000):
        path = inputs / f"{index // 500}" / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        # 32x32: each run goes on for most of a second after its first output, so that the signal
        # lands before the last one (16x16 images came out within 0.1-0.3 s: a loaded machine missed).
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
    before = snapshot(inputs)
    model = tiny_models["conv"]

    # Small batches (32 of these images), so that outputs appear all along the run and both
    # signals land in the middle of one (batching does not change the results).
    options = ["--model", str(model), "--tile", "64", "--batch-size", "8", "-q"]
    reference = tmp_path / "reference"
    assert invoke("run", inputs, reference, *options).exit_code == 0
    expected = files_below(reference)
    assert len(expected) == 2000

    output = tmp_path / "out"
    command = [sys.executable, "-c", "from denoise.cli import entry; entry()", "run", str(inputs), str(output), *options]
    done = 0
    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        code, stderr = _interrupt_after_first_outputs(command, output, signum, done)
        assert code == status, stderr
        assert "interrupted after" in stderr and "Traceback" not in stderr, stderr
        assert no_partial_files(output), (signum, sorted(path.name for path in output.rglob("*.part")), stderr)
        partial = files_below(output)
        assert done < len(partial) < 2000, f"{len(partial)} outputs after signal {signum} (before: {done}): {stderr}"
        assert all(expected[name] == data for name, data in partial.items())  # whole files only
        done = len(partial)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert files_below(output) == expected
    assert snapshot(inputs) == before


# --------------------------------------------------------------------------------------------
# Write faults
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _noisy_folder(folder: Path, count: int, size: int = 48) -> None:
    for index in range(count):
        path = folder / f"{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded(Image.fromarray(gradient(size, size, 3, seed=index)), "PNG"))


def test_full_file_system(tmp_path, identity_model):
    """Outputs onto a 64 KiB tmpfs: the ones that fit are whole, the rest fail with ENOSPC,
    nothing partial, exit 1; with room made, a rerun writes exactly the missing ones."""
    inputs = tmp_path / "in"
    _noisy_folder(inputs, 12)
    before = snapshot(inputs)
    reference = tmp_path / "reference"
    assert invoke("run", inputs, reference, "--model", identity_model, "-q").exit_code == 0
    with tmpfs(tmp_path / "small", "64k") as output:
        result = invoke("run", inputs, output, "--model", identity_model, "--report", output / "report.json", "-q")
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert lines and all("No space left on device" in line for line in lines), result.stderr
        assert "Traceback" not in result.stderr
        assert no_partial_files(output)
        written = files_below(output)
        assert 0 < len(written) < 12
        assert all(files_below(reference)[name] == data for name, data in written.items())
        subprocess.run(["mount", "-o", "remount,size=1m", str(output)], check=True)
        again = invoke("run", inputs, output, "--model", identity_model, "-q")
        assert again.exit_code == 0, again.stderr
        assert files_below(output) == files_below(reference)
    assert snapshot(inputs) == before


def test_read_only_output(tmp_path, identity_model):
    """A read-only file system stops root too: every file fails with the reason, and so does
    the report, without a traceback."""
    inputs = tmp_path / "in"
    _noisy_folder(inputs, 3)
    before = snapshot(inputs)
    with tmpfs(tmp_path / "ro", "1m") as output:
        (output / "sub").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(output)], check=True)
        result = invoke("run", inputs, output / "sub", "--model", identity_model, "--report", output / "r.json", "-q")
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 4 and all("Read-only file system" in line for line in lines), result.stderr
        assert "cannot write the report" in lines[-1]
        assert files_below(output) == {}
    assert snapshot(inputs) == before


class _FailingOS:
    """``os`` as denoise.io sees it, except that writes hit a full disk halfway through."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdopen(handle, mode):
        stream = os.fdopen(handle, mode)

        class HalfWriter:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                stream.close()

            def fileno(self):
                return stream.fileno()

            def write(self, data):
                stream.write(data[: len(data) // 2])
                stream.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return HalfWriter()


@pytest.mark.parametrize("command", ["run", "add-noise"])
def test_simulated_disk_full(tmp_path, identity_model, monkeypatch, command):
    """The same without a tmpfs: half of each file written, then ENOSPC."""
    inputs = tmp_path / "in"
    _noisy_folder(inputs, 3, size=16)
    before = snapshot(inputs)
    monkeypatch.setattr(io, "os", _FailingOS())
    monkeypatch.setattr(offload, "SMALL", -1)  # write here, where the patch is, not in worker processes
    extra = ["--model", identity_model] if command == "run" else []
    result = invoke(command, inputs, tmp_path / "out", *extra, "-q")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all("cannot write" in line and "No space left on device" in line for line in lines)
    assert files_below(tmp_path / "out") == {}  # not even a temporary file
    assert snapshot(inputs) == before


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "truncated", "tampered", "manifest"])
def test_broken_weights_exit_2_naming_the_file(tmp_path, registry_dir, damage):
    inputs = tmp_path / "in"
    _noisy_folder(inputs, 1, size=16)
    before = snapshot(inputs)
    weights = registry_dir / "unet-color.keras"
    expected = json.loads((registry_dir / "manifest.json").read_text())["models"][1]["sha256"]
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "tampered":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        manifest = registry_dir / "manifest.json"
        manifest.write_text(manifest.read_text()[:50])
    result = invoke("run", inputs, tmp_path / "out", "-q")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("denoise: error: "), result.stderr
    if damage == "manifest":
        assert str(registry_dir / "manifest.json") in lines[0]
    else:
        assert str(weights) in lines[0] and expected in lines[0]
    assert not (tmp_path / "out" / "00.png").exists()
    assert snapshot(inputs) == before


def test_broken_model_file_given_by_path(tmp_path, tiny_models):
    inputs = tmp_path / "in"
    _noisy_folder(inputs, 1, size=16)
    model = tmp_path / "model.keras"
    model.write_bytes(tiny_models["conv"].read_bytes()[:2000])
    before = snapshot(inputs)
    result = invoke("run", inputs, tmp_path / "out", "--model", model, "-q")
    assert snapshot(inputs) == before
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(model) in lines[0] and "cannot load" in lines[0], result.stderr
