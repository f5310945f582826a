"""benchmarks/real_noise.py and the page report.py writes from its JSON (docs/real_noise.md), on
made-up results: no data set needed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import real_noise  # noqa: E402
import report  # noqa: E402

IMAGES = ["a_iso3200_1", "b_iso6400_1"]


def results() -> dict:
    def row(psnr, told=None, ssim=0.9):
        entry = {"psnr": psnr, "ssim": ssim, "psnr_each": [psnr - 0.5, psnr + 0.5]}
        return {**entry, "told": told} if told else entry

    return {
        "machine": {"cpu": "Some CPU", "cores": 2},
        "cc15": {"images": IMAGES, "rms_noise": [4.0, 8.0],
                 "noisy": row(30.0), "before": row(31.0, [2.0, 4.0]),
                 "level 6": row(32.0), "level 12": row(33.5), "level 24": row(33.0),
                 report.ORACLE: {"psnr": 34.0, "levels": [12, 24]},
                 "calibrated": row(33.0, [7.0, 9.0]), "noise camera": row(31.5, [3.0, 5.0]),
                 "noise correlated": row(32.5, [2.5, 4.5]), "cbm3d": row(32.8, [4.0, 8.0])},
        "white": {"set12 sigma 25": {"before": {"psnr": 30.0, "mean_told": 25.0},
                                     "calibrated": {"psnr": 30.0, "mean_told": 25.0}}},
        "speed": {"estimate_level CPU s per CC15 image": 0.2, "level_for CPU s per CC15 image": 0.5,
                  "before 12.6 MP CPU s": 10.0, "calibrated 12.6 MP CPU s": 11.0},
    }


def test_the_page_has_every_row_in_order_with_figures_from_the_json():
    page = "\n".join(report.real_noise_page(results(), "crops.png"))
    order = ["| noisy input |", "| defaults before", "| **defaults now**", "| `--noise camera`",
             "| `--noise correlated`", "| CBM3D told each image's RMS", "| one fixed level", "| per image, the best"]
    positions = [page.index(label) for label in order]
    assert positions == sorted(positions)
    assert "(`--sigma 12`)" in page  # the best fixed level by mean PSNR
    assert "| 33.00 | 0.900 | +3.00 dB |" in page  # defaults now against the noisy input
    assert "| 34.00 |  | +4.00 dB |" in page  # the oracle has no SSIM
    assert "7.0-9.0" in page and "2.0-4.0" in page
    assert "a median of 2.0 times below the RMS" in page  # RMS 4 / 2 and 8 / 4
    assert "0.5 CPU seconds per 512 x 512 CC15 image against the 0.2" in page
    assert "(1.10x)" in page
    assert "![CC15 crops" in page and "(crops.png)" in page
    assert "set12 sigma 25" in page


def test_the_page_leaves_out_what_was_not_measured():
    data = results()
    for key in ("noise camera", "noise correlated", "cbm3d"):
        del data["cc15"][key]
    page = "\n".join(report.real_noise_page(data))
    assert "--noise camera`" not in page and "CBM3D told" not in page
    assert "![" not in page  # no picture
    assert report.real_noise_page({}) == []


def test_best_fixed_level_prefers_the_lower_level_on_a_tie():
    assert report.best_fixed_level({"level 9": {"psnr": 36.0}, "level 12": {"psnr": 36.0}, "calibrated": {}}) == "level 9"
    assert report.best_fixed_level({"calibrated": {"psnr": 1.0}}) is None


def test_merge_replaces_only_the_rows_measured():
    old = results()
    merged = real_noise.merge_cc15(old, {"images": IMAGES, "rms_noise": [4.0, 8.0], "cbm3d": {"psnr": 1.0},
                                         "noise gaussian": {"psnr": 2.0}})
    assert merged["cc15"]["cbm3d"] == {"psnr": 1.0} and merged["cc15"]["noise gaussian"] == {"psnr": 2.0}
    assert merged["cc15"]["before"] == old["cc15"]["before"] and merged["white"] == old["white"]
    assert old["cc15"]["cbm3d"]["psnr"] == 32.8  # the old result is not changed
    with pytest.raises(SystemExit):
        real_noise.merge_cc15(old, {"images": ["other"], "rms_noise": [1.0]})


def test_the_page_says_in_what_arithmetic_each_measurement_ran_where_it_was_recorded():
    measured = results()
    measured["machine"]["native_bfloat16"] = True
    measured["updates"] = [{"rows": ["calibrated"], "machine": {"cpu": "Other CPU", "cores": 2, "native_bfloat16": False}},
                           {"rows": ["grey"], "machine": {"cpu": "Old record", "cores": 2}}]
    line = report.measured_on(measured)
    assert line.startswith("Measured on Some CPU, 2 cores (bfloat16, natively);")
    assert "calibrated measured again or added later on Other CPU, 2 cores (float32: no native bfloat16)" in line
    assert line.endswith("grey measured again or added later on Old record, 2 cores.")


def test_before_reads_the_level_with_estimate_level_sends_nothing_to_the_photo_model_and_puts_read_back():
    import cv2

    from denoise import calibrate
    from denoise.noise import estimate_level

    rng = np.random.default_rng(0)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (96, 96, 3)), (0, 0), 1.0)
    pixels = np.clip(0.5 + grain / grain.std() * 12 / 255, 0, 1).astype(np.float32)
    now = calibrate.read(pixels)
    assert now[1]  # noise blurred over a pixel spans more than one
    with real_noise.before():
        assert calibrate.read(pixels) == (estimate_level(pixels), False)
    assert calibrate.read(pixels) == now


def test_the_grey_section_marks_the_best_method_and_reports_the_clean_photos():
    def method(psnr, lowest=30.0):
        return {"psnr": psnr, "ssim": 0.8, "min_psnr": lowest}

    grey = {"Set12 correlated sigma 25": {"images": 12, "photo route": 12, "defaults": method(27.1),
                                          "before gray-photo": method(23.8), "noise correlated": method(26.5)},
            "clean: some grey photos": {"images": 48, "photo route": 3, "defaults": method(50.0, 41.2),
                                        "before gray-photo": method(48.0, 33.3), "noise correlated": method(40.0)}}
    page = "\n".join(report.real_noise_page({**results(), "grey": grey}))
    assert "## Grey photos" in page
    assert "| Set12 correlated sigma 25 | 12 | 12 | **27.10 / 0.800** | 23.80 / 0.800 | 26.50 / 0.800 |" in page
    assert "50.00 dB now (lowest image 41.20), 48.00 before (lowest 33.30)" in page
    assert page.index("## Grey photos") < page.index("Reproduce")
    assert "## Grey photos" not in "\n".join(report.real_noise_page(results()))
