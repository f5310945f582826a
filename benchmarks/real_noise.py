"""Real camera noise (CC15) and white noise: the level the default is told, and what it gives.

CC15 (``--datasets``/cc15, real-noise protocol of ``../shared/datasets/README.md``): each
``NAME_real.png`` is denoised as it is, with no level told, and its uint8 output scored against
``NAME_mean.png`` (PSNR peak 255; SSIM 11x11 Gaussian window sigma 1.5, data range 255, channel
mean, borders of 5 pixels left out). Methods, all with the default model and arithmetic of
``denoise run`` (``--model auto --precision auto --ensemble auto``):

  defaults        today's ``denoise run`` defaults (--sigma auto --noise auto)
  level N         the model told N for every image (--sigma N): a fixed level, as a user would set it
  calibrated      the defaults with :func:`denoise.calibrate.level_for` in place of estimate_level
                  where the image's reading begins (treatments.read), as the pipeline would call it
  oracle          per image the best of the fixed levels, chosen by looking at the truth (a bound)

White noise (``--datasets``/set12, mcmaster18, the benchmark protocol of benchmarks/common.py at
sigma 15 / 25 / 50): defaults against calibrated, with the mean level each told. And the
project's synthetic camera noise (``add-noise --noise camera``, peak 200 and 50) on McMaster18.

Speed: the seconds of ``level_for`` and of ``estimate_level`` per CC15 image, and the default's
whole in-process denoising of one 12 MP colour photo (a CC15 image repeated 8 x 6 times, 4096 x 3072)
with and without the calibration.

  python benchmarks/real_noise.py --datasets ../shared/datasets

Writes benchmarks/results/real_noise.json and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FIXED_LEVELS = (3, 6, 9, 12, 15, 18, 24)
WHITE_SIGMAS = (15, 25, 50)
CAMERA_PEAKS = (200, 50)  # the project's own camera noise (add-noise --noise camera) on McMaster18


def ssim(clean: np.ndarray, test: np.ndarray) -> float:
    """SSIM (Wang et al.): 11x11 Gaussian window of sigma 1.5, data range 255, mean over channels."""
    import cv2

    a, b = clean.astype(np.float64), test.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for channel in range(a.shape[-1]):
        x, y = a[..., channel], b[..., channel]
        blur = lambda image: cv2.GaussianBlur(image, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(index[5:-5, 5:-5].mean())
    return float(np.mean(scores))


class Denoiser:
    """The default model of ``denoise run``, in process, told per image what a method says."""

    def __init__(self):
        from denoise.engine import Engine
        from denoise.settings import Inference

        self.engine = Engine(Inference(), lambda message: print(message, file=sys.stderr))

    def run(self, images: list[np.ndarray], levels: list[float] | None = None) -> tuple[list[np.ndarray], list]:
        """uint8 images -> uint8 outputs, and the level each was told (None: the defaults' own reading)."""
        from denoise import io, pipeline, treatments
        from denoise.plan import Job

        jobs, readings = [], []
        for number, image in enumerate(images):
            pixels = image.astype(np.float32) / 255.0
            pixels = pixels[..., None] if pixels.ndim == 2 else pixels
            jobs.append((Job(number, Path(), Path()), io.Decoded(pixels=pixels, alpha=None, bits=8, format="PNG", info={})))
            if levels is not None:
                low, span = treatments.stretch(pixels)
                readings.append(treatments.Reading(sigma=float(levels[number]), noise="gaussian", level=float(levels[number]),
                                                   stabilizer=None, low=low, span=span,
                                                   bounds=(float(pixels.min()), float(pixels.max()))))
        outputs = pipeline.denoise_decoded(self.engine, jobs, readings if levels is not None else None)
        shaped = [common.to_uint8(out[..., 0] if image.ndim == 2 else out) for out, image in zip(outputs, images)]
        return shaped, [job.sigma for job, _ in jobs]


@contextlib.contextmanager
def calibrated():
    """The defaults with calibrate.level_for where the reading calls estimate_level."""
    from denoise import calibrate, treatments

    before = treatments.estimate_level
    treatments.estimate_level = calibrate.level_for
    try:
        yield
    finally:
        treatments.estimate_level = before


def scores(outputs, cleans) -> dict:
    psnrs = [common.psnr(clean, out) for out, clean in zip(outputs, cleans)]
    ssims = [ssim(clean, out) for out, clean in zip(outputs, cleans)]
    return {"psnr": round(float(np.mean(psnrs)), 3), "ssim": round(float(np.mean(ssims)), 4),
            "psnr_each": [round(value, 2) for value in psnrs]}


def cc15(denoiser: Denoiser, folder: Path) -> dict:
    names = sorted(path.name[: -len("_real.png")] for path in folder.glob("*_real.png"))
    noisy = [common.read_uint8(folder / f"{name}_real.png") for name in names]
    clean = [common.read_uint8(folder / f"{name}_mean.png") for name in names]
    rows = {"images": names, "rms_noise": [round(float(np.sqrt(np.mean((n.astype(float) - c) ** 2))), 2)
                                           for n, c in zip(noisy, clean)]}
    rows["noisy"] = scores(noisy, clean)
    outputs, told = denoiser.run(noisy)
    rows["defaults"] = {**scores(outputs, clean), "told": [round(value, 2) for value in told]}
    each = {}
    for level in FIXED_LEVELS:
        outputs, _ = denoiser.run(noisy, [level] * len(noisy))
        rows[f"level {level}"] = result = scores(outputs, clean)
        each[level] = result["psnr_each"]
    best = [max(each[level][i] for level in FIXED_LEVELS) for i in range(len(names))]
    rows["oracle (best fixed level per image, by the truth)"] = {
        "psnr": round(float(np.mean(best)), 3),
        "levels": [max(FIXED_LEVELS, key=lambda level: each[level][i]) for i in range(len(names))]}
    with calibrated():
        outputs, told = denoiser.run(noisy)
    rows["calibrated"] = {**scores(outputs, clean), "told": [round(value, 2) for value in told]}
    return rows


def white(denoiser: Denoiser, datasets: Path) -> dict:
    from denoise.noise import NoiseSpec

    rows = {}
    cases = [(folder, NoiseSpec("gaussian", sigma, sigma)) for folder in ("set12", "mcmaster18") for sigma in WHITE_SIGMAS]
    cases += [("mcmaster18", NoiseSpec("camera", peak, peak)) for peak in CAMERA_PEAKS]
    for folder, spec in cases:
        images = common.load_folder(datasets / folder)
        cleans = [image for _, image in images]
        noisy = [common.noisy_copy(image, name, spec) for name, image in images]
        outputs, told = denoiser.run(noisy)
        entry = {"defaults": {**scores(outputs, cleans), "mean_told": round(float(np.mean(told)), 3)}}
        with calibrated():
            outputs, told = denoiser.run(noisy)
        entry["calibrated"] = {**scores(outputs, cleans), "mean_told": round(float(np.mean(told)), 3)}
        for method in entry.values():
            method.pop("psnr_each")
        label = f"{folder} sigma {spec.low:g}" if spec.kind == "gaussian" else f"{folder} {spec.describe()}"
        rows[label] = entry
        print(label, entry, flush=True)
    return rows


def speed(denoiser: Denoiser, folder: Path) -> dict:
    from denoise import calibrate
    from denoise.noise import estimate_level

    paths = sorted(folder.glob("*_real.png"))
    pixels = [common.read_uint8(path).astype(np.float32) / 255.0 for path in paths]
    timed = {}
    for name, function in (("estimate_level", estimate_level), ("level_for", calibrate.level_for)):
        began = time.process_time()
        for image in pixels:
            function(image)
        timed[f"{name} CPU s per CC15 image"] = round((time.process_time() - began) / len(pixels), 3)
    photo = np.tile(common.read_uint8(paths[0]), (6, 8, 1))  # 3072 x 4096: 12.6 MP
    for name, level in (("estimate_level", estimate_level), ("level_for", calibrate.level_for)):
        began = time.process_time()
        level(photo.astype(np.float32) / 255.0)
        timed[f"{name} CPU s on 12.6 MP"] = round(time.process_time() - began, 2)
    denoiser.run([photo[:64, :64]])  # warm: trace the function outside the timing
    for label, context in (("defaults", contextlib.nullcontext), ("calibrated", calibrated)):
        with context():
            began, cpu = time.time(), time.process_time()
            denoiser.run([photo])
            timed[f"{label} 12.6 MP wall s"] = round(time.time() - began, 2)
            timed[f"{label} 12.6 MP CPU s"] = round(time.process_time() - cpu, 2)
    return timed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, required=True, help="the folder holding cc15/, set12/, mcmaster18/")
    parser.add_argument("--skip-white", action="store_true", help="no white (nor synthetic camera) noise")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "real_noise.json")
    args = parser.parse_args(argv)
    denoiser = Denoiser()
    result = {"machine": common.machine(), "load_before": common.load()}
    result["cc15"] = cc15(denoiser, args.datasets / "cc15")
    for method, row in result["cc15"].items():
        if isinstance(row, dict) and "psnr" in row:
            print(f"CC15 {method:50s} {row['psnr']:.2f} dB  {row.get('ssim', '')}", flush=True)
    if not args.skip_white:
        result["white"] = white(denoiser, args.datasets)
    if not args.skip_speed:
        result["speed"] = speed(denoiser, args.datasets / "cc15")
        print(result["speed"])
    result["load_after"] = common.load()
    common.save_json(args.out, result)


if __name__ == "__main__":
    main()
