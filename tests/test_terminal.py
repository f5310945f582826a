"""The command in a real terminal: a pseudo-terminal, so the progress bar is on, as a user sees it.

CliRunner and pipes leave the bar off; these runs go through the console script's entry point in
a subprocess whose stderr is a pty (of 0 columns, as a fresh pty reports), over the failure paths.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import heeding_ctrl_c, noisy_array, save, tree_digest

COMMAND = [sys.executable, "-c", "from denoise.cli import entry; entry()"]


def in_terminal(*args, interrupt_when=None, timeout: float = 240) -> tuple[int, str]:
    """Run ``denoise ARGS`` with stdin, stdout and stderr on a pty; return (exit status, screen text).
    ``interrupt_when``: a function called as the run goes; when it returns True, Ctrl-C is sent."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([*COMMAND, *map(str, args)], stdin=follower, stdout=follower, stderr=follower,
                               env={**os.environ, "TERM": "xterm"}, start_new_session=True,
                               preexec_fn=heeding_ctrl_c)
    os.close(follower)
    screen, deadline, interrupted = b"", time.time() + timeout, False
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the other end closed
                    chunk = b""
                if not chunk and process.poll() is not None:
                    break
                screen += chunk
            elif process.poll() is not None:
                break
            if interrupt_when is not None and not interrupted and interrupt_when():
                os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
                interrupted = True
            if time.time() > deadline:
                process.kill()
                pytest.fail(f"no end after {timeout} s: {screen.decode(errors='replace')[-2000:]}")
    finally:
        os.close(leader)
    return process.wait(), screen.decode(errors="replace")


def lines_of(screen: str) -> list[str]:
    """What stays on the screen: the bar redraws itself after carriage returns."""
    return [line.rsplit("\r", 1)[-1].strip() for line in screen.replace("\r\n", "\n").split("\n") if line.strip()]


@pytest.fixture()
def folder(tmp_path):
    inputs = tmp_path / "in"
    for name in ("a", "b"):
        save(inputs / f"{name}.png", noisy_array(40, 48, 1, seed=ord(name)))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return inputs


def test_a_bad_file_in_a_terminal_is_one_line_and_the_rest_is_written(tmp_path, folder, registry_dir):
    before = tree_digest(folder)
    code, screen = in_terminal("run", folder, tmp_path / "out")
    assert code == 1, screen
    assert "Traceback" not in screen, screen
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    named = [line for line in lines_of(screen) if "broken.png" in line]
    assert len(named) == 1 and "not an image" in named[0], screen
    assert "3/3" in screen  # the bar knows the total
    assert "denoise: 2 done, 0 skipped, 1 failed in" in screen
    assert tree_digest(folder) == before

    code, screen = in_terminal("run", folder, tmp_path / "out")  # a rerun: the outputs exist
    assert code == 1 and "Traceback" not in screen, screen
    assert "2 skipped (their outputs exist; --overwrite redoes them), 1 failed" in screen
    assert tree_digest(folder) == before


def test_add_noise_in_a_terminal(tmp_path, folder):
    before = tree_digest(folder)
    code, screen = in_terminal("add-noise", folder, tmp_path / "noisy")
    assert code == 1 and "Traceback" not in screen, screen
    assert [line for line in lines_of(screen) if "broken.png" in line], screen
    assert sorted(path.name for path in (tmp_path / "noisy").iterdir()) == ["a.png", "b.png"]
    assert tree_digest(folder) == before


def test_ctrl_c_in_a_terminal_leaves_whole_files_and_a_rerun_finishes(tmp_path, tiny_models):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    # 64x64: the run goes on for about a second after its first output, time enough for Ctrl-C to
    # land before the last (16x16 images all came out within 0.1 s of the first).
    for index in range(600):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(inputs / f"{index:03d}.png")
    before = tree_digest(inputs)
    output = tmp_path / "out"
    options = ["--model", tiny_models["conv"], "--tile", 64, "--batch-size", 4]
    started = lambda: output.is_dir() and any(output.glob("*.png"))  # noqa: E731
    code, screen = in_terminal("run", inputs, output, *options, interrupt_when=started)
    assert code == 130, screen
    assert "interrupted after" in screen and "Traceback" not in screen, screen
    assert not list(output.rglob("*.part"))
    written = len(list(output.glob("*.png")))
    assert 0 < written < 600
    for path in output.glob("*.png"):  # every file there is whole
        with Image.open(path) as image:
            image.load()
    code, screen = in_terminal("run", inputs, output, *options)
    assert code == 0, screen
    assert f"{600 - written} done, {written} skipped" in screen
    assert tree_digest(inputs) == before


def test_a_full_disk_in_a_terminal(tmp_path, folder, registry_dir):
    from test_hardening import tmpfs

    (folder / "broken.png").unlink()
    with tmpfs(tmp_path / "small", "4k") as small:
        code, screen = in_terminal("run", folder, small / "out")
        assert code == 1 and "Traceback" not in screen, screen
        assert "No space left on device" in screen
        assert not list(Path(small).rglob("*.part"))
