"""Small files decoded and written in worker processes: the same bytes and errors as in-process."""

from __future__ import annotations

import os
from pathlib import Path
import signal

import numpy as np
import pytest
from PIL import Image

from denoise import io, offload
from denoise.offload import Offload


def png(path, array: np.ndarray):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def pool():
    workers = Offload(2)
    yield workers
    workers.close()


def test_a_worker_reads_and_writes_what_this_process_would(pool, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8)
    source = png(tmp_path / "in.png", pixels)
    here = io.read_image(source)
    (there,) = pool.read([source], 20)
    assert pool.processes and all(process.pid != os.getpid() and process.is_alive() for process in pool.processes)
    assert np.array_equal(there.pixels, here.pixels) and there.format == "PNG" and there.bits == 8

    outputs = [tmp_path / "sub" / "a.png", tmp_path / "b.png"]
    failures = pool.write([(output, here, here.pixels) for output in outputs], 95)
    assert failures == [None, None]
    assert all(output.read_bytes() == io.encode(here, here.pixels, "PNG", 95) for output in outputs)


def test_errors_come_back_as_this_process_would_raise_them(pool, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad = [tmp_path / "bad.png", tmp_path / "missing.png", tmp_path]
    there = pool.read(bad, 20)
    for path, error in zip(bad, there):
        with pytest.raises(io.ImageError) as here:
            io.read_image(path)
        assert isinstance(error, io.ImageError) and str(error) == str(here.value)
    decoded = io.read_image(png(tmp_path / "zeros.png", np.zeros((4, 4), np.uint8)))
    (tmp_path / "folder.png").mkdir()
    (failure,) = pool.write([(tmp_path / "folder.png", decoded, decoded.pixels)], 95)
    assert failure.startswith("cannot write") and "folder.png" in failure


def test_workers_ignore_ctrl_c_and_a_dead_worker_leaves_the_work_to_this_process(pool, tmp_path):
    source = png(tmp_path / "seven.png", np.full((8, 8), 7, np.uint8))
    pool.read([source], 20)
    for process in pool.processes:
        os.kill(process.pid, signal.SIGINT)  # a Ctrl-C reaches the whole process group
    assert pool.read([source], 20)[0].pixels.shape == (8, 8, 1)
    assert all(process.is_alive() for process in pool.processes)
    for process in pool.processes:
        process.kill()
        process.join()
    for _ in range(3):  # each dead slot is found once, then the work stays here
        assert np.array_equal(pool.read([source], 20)[0].pixels, io.read_image(source).pixels)


def test_only_small_files_go_to_the_processes_and_a_closed_pool_works_here(tmp_path, monkeypatch):
    workers = Offload(1)
    source = png(tmp_path / "zeros.png", np.zeros((16, 16), np.uint8))
    assert workers.takes(source) and workers.takes(tmp_path / "missing.png")
    monkeypatch.setattr(offload, "SMALL", 10)
    assert not workers.takes(source)
    monkeypatch.undo()
    assert not workers.processes  # nothing asked yet: no process started
    workers.read([source], 20)
    (process,) = workers.processes
    workers.close()
    assert not process.is_alive() and not workers.takes(source)
    assert workers.read([source], 20)[0].pixels.shape == (16, 16, 1)


def test_run_writes_the_same_bytes_whether_small_files_go_to_workers_or_not(tmp_path, registry_dir, monkeypatch):
    from click.testing import CliRunner

    from conftest import noisy_array, save, tree_digest
    from denoise.cli import main

    inputs = tmp_path / "in"
    for index in range(6):
        save(inputs / f"grey{index}.png", noisy_array(20 + index, 24, 1, seed=index))
    save(inputs / "colour.jpg", noisy_array(32, 40, 3), quality=90)
    save(inputs / "deep.png", noisy_array(24, 24, 1, dtype=np.uint16))
    save(inputs / "scan.tif", noisy_array(24, 30, 3), dpi=(300, 300))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = tree_digest(inputs)
    results = {}
    for small in (offload.SMALL, -1):
        monkeypatch.setattr(offload, "SMALL", small)
        result = CliRunner().invoke(main, ["run", str(inputs), str(tmp_path / f"out{small}"), "-q"])
        assert result.exit_code == 1
        results[small] = (tree_digest(tmp_path / f"out{small}"), result.output)
    assert results[offload.SMALL] == results[-1]
    assert len(results[-1][0]) == 9 and "broken.png" in results[-1][1]
    assert tree_digest(inputs) == before


def test_workers_that_cannot_start_leave_the_work_to_this_process(tmp_path, monkeypatch):
    import multiprocessing

    def refuse(*args, **kwargs):
        raise OSError("no temporary folder for the fork server")

    context = multiprocessing.get_context("forkserver")
    monkeypatch.setattr(type(context), "Process", property(lambda self: refuse))
    workers = Offload(2)
    source = png(tmp_path / "grey.png", np.full((8, 8), 3, np.uint8))
    assert np.array_equal(workers.read([source], 20)[0].pixels, io.read_image(source).pixels)
    assert not workers.processes and not workers.takes(source)
    workers.close()


def test_one_run_of_small_files_through_workers_and_large_ones_in_threads_writes_and_reports_all(tmp_path, registry_dir):
    import json

    from click.testing import CliRunner

    from conftest import noisy_array, save
    from denoise.cli import main

    sizes = [(20, 24), (300, 320), (18, 30), (290, 260), (24, 24)]  # about 1 KB, then about 250 KB each
    for index, (height, width) in enumerate(sizes):
        save(tmp_path / "in" / f"{index}.png", noisy_array(height, width, 1, seed=index))
    sizes.append((600, 500))  # a blank scan: a small file of many pixels, read in this process
    save(tmp_path / "in" / "5.png", np.full((600, 500), 250, np.uint8))
    assert (tmp_path / "in" / "1.png").stat().st_size > offload.SMALL > (tmp_path / "in" / "0.png").stat().st_size
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q",
                                       "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    files = json.loads((tmp_path / "report.json").read_text())["files"]
    assert sorted(Path(entry["input"]).name for entry in files) == [f"{index}.png" for index in range(6)]
    for index, (height, width) in enumerate(sizes):
        assert Image.open(tmp_path / "out" / f"{index}.png").size == (width, height)


def test_a_small_file_of_many_pixels_is_left_for_this_process_to_read(pool, tmp_path):
    blank = png(tmp_path / "blank-scan.png", np.full((600, 500), 255, np.uint8))  # a few KB, 300,000 values
    small = png(tmp_path / "small.png", np.full((20, 20), 9, np.uint8))
    assert blank.stat().st_size < offload.SMALL < 600 * 500
    missing, decoded = pool.read([blank, small], 20)
    assert missing is None and decoded.pixels.shape == (20, 20, 1)
