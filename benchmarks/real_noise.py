"""Real camera noise (CC15) and white noise: the level the default is told, and what it gives.

CC15 (``--datasets``/cc15, real-noise protocol of ``../shared/datasets/README.md``): each
``NAME_real.png`` is denoised as it is, with no level told, and its uint8 output scored against
``NAME_mean.png`` (PSNR peak 255; SSIM 11x11 Gaussian window sigma 1.5, data range 255, channel
mean, borders of 5 pixels left out). Methods, all with the model and arithmetic ``denoise run``
chooses by default (``--model auto --precision auto --ensemble auto``):

  calibrated        today's ``denoise run`` defaults (--sigma auto --noise auto): the level is
                    :func:`denoise.calibrate.level_for`'s, and an image whose noise spans more than
                    a pixel goes to the photo route (``color-photo+gray-large``: ``color-photo``
                    with its luma blended with ``gray-large``'s)
  white-model       ``--noise gaussian``: the calibrated level, the white-noise default model (the
                    defaults before the photo model)
  photo-model       ``--model color-photo``: the photo model alone, in its own ensemble (the
                    defaults before the luma blend)
  before            the defaults as they were before denoise.calibrate: the level read by
                    :func:`denoise.noise.estimate_level` where treatments.read now calls level_for
  noise camera      ``--noise camera``, the defaults otherwise (so the camera model, ``color-camera``)
  noise correlated  ``--noise correlated``, the defaults otherwise (the four half-size mosaics)
  cbm3d             CBM3D (``bm3d.bm3d_rgb`` on [0, 1] floats) told each image's RMS of real - mean
                    (0-255 units, / 255): a level taken from the truth
  level N           the model told N for every image (--sigma N): a fixed level, as a user would set it
  oracle            per image the best of the fixed levels, chosen by looking at the truth (a bound)

Each row's ``told`` is the level the model was told per image (what ``treatments.read`` returns as
the reading's level; for ``noise correlated`` that of the half-size mosaics), for cbm3d the RMS;
``cpu_s_per_image`` the CPU seconds of the row's run per image, a model's loading and tracing
included where the row is the first to use it.

White noise (``--datasets``/set12, mcmaster18, the benchmark protocol of benchmarks/common.py at
sigma 15 / 25 / 50): before against calibrated, with the mean level each told. And the
project's synthetic camera noise (``add-noise --noise camera``, peak 200 and 50) on McMaster18. And
the clean images of both, no noise added, scored against themselves: what stays of a clean image.

Speed: the seconds of ``level_for`` and of ``estimate_level`` per CC15 image, and the default's
whole in-process denoising of one 12 MP colour photo (a CC15 image repeated 8 x 6 times, 4096 x 3072)
with today's defaults (``calibrated``: the photo model, its own ensemble) and those before the
calibration (``before``: the white-noise model, its ensemble).

Grey (:func:`grey`): CC15 made grey (Pillow's luma of the shot and of the mean), Set12 with noise
blurred over two pixels (``quality.py``'s ``correlated:SIGMA``) and Set12 with white noise enlarged
1.5 times with its image: the defaults (``gray-photo``), ``--model gray-large`` (the defaults before
it) and ``--noise correlated``; and clean grey photos (the held-back tenth of Urban100 and
Sun-Hays80, Set12, McMaster18), scored against themselves.

  python benchmarks/real_noise.py --datasets ../shared/datasets
  python benchmarks/real_noise.py --datasets ../shared/datasets --only camera correlated cbm3d

Writes benchmarks/results/real_noise.json and prints a summary. With ``--only``, only the named
CC15 rows are measured, and merged into the existing JSON (--also-white, --also-speed, --also-grey:
those too; the other rows are kept as they are).
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
GREY_GRAIN = (15, 25)  # grainy grey noise: Set12 with noise blurred over two pixels, or enlarged with it
# --only NAME: the CC15 row keys each name measures
ROW_GROUPS = {"noisy": ("noisy",), "before": ("before",), "calibrated": ("calibrated",),
              "white-model": ("calibrated, white-noise model",), "photo-model": ("calibrated, photo model alone",),
              "camera": ("noise camera",), "correlated": ("noise correlated",), "cbm3d": ("cbm3d",),
              "levels": tuple(f"level {level}" for level in FIXED_LEVELS) + ("oracle (best fixed level per image, by the truth)",)}


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
    """The model ``denoise run`` chooses by default, in process, told per image what a method says
    (``noise``: ``--noise``, which for camera also chooses the camera model)."""

    def __init__(self, noise: str = "auto", model: str = "auto"):
        from denoise.engine import Engine
        from denoise.settings import Inference

        self.engine = Engine(Inference(noise=noise, model=model), lambda message: print(message, file=sys.stderr))

    def run(self, images: list[np.ndarray], levels: list[float] | None = None) -> tuple[list[np.ndarray], list[float]]:
        """uint8 images -> uint8 outputs, and the level the model was told for each (``levels``
        None: each image's own reading, as ``denoise run`` reads it)."""
        from denoise import io, pipeline, treatments
        from denoise.plan import Job

        jobs, readings = [], []
        for number, image in enumerate(images):
            pixels = image.astype(np.float32) / 255.0
            pixels = pixels[..., None] if pixels.ndim == 2 else pixels
            decoded = io.Decoded(pixels=pixels, alpha=None, bits=8, format="PNG", info={})
            jobs.append((Job(number, Path(), Path()), decoded))
            if levels is None:  # what the pipeline reads on the whole image, kept to say what the model was told
                readings.append(treatments.reading_of(decoded, self.engine))
            else:
                low, span = treatments.stretch(pixels)
                readings.append(treatments.Reading(sigma=float(levels[number]), noise="gaussian", level=float(levels[number]),
                                                   stabilizer=None, low=low, span=span,
                                                   bounds=(float(pixels.min()), float(pixels.max()))))
        outputs = pipeline.denoise_decoded(self.engine, jobs, readings)
        shaped = [common.to_uint8(out[..., 0] if image.ndim == 2 else out) for out, image in zip(outputs, images)]
        return shaped, [reading.level for reading in readings]


@contextlib.contextmanager
def before():
    """The defaults as they were before denoise.calibrate: ``--sigma auto`` read by
    estimate_level where the reading (treatments.read) now calls calibrate.read, and so no image
    sent to the photo model."""
    from denoise import calibrate
    from denoise.noise import estimate_level

    now = calibrate.read
    calibrate.read = lambda pixels: (estimate_level(pixels), False)
    try:
        yield
    finally:
        calibrate.read = now


def rms(noisy: np.ndarray, clean: np.ndarray) -> float:
    """The RMS of noisy - clean, 0-255 units: the noise level the truth shows."""
    return float(np.sqrt(np.mean((noisy.astype(np.float64) - clean.astype(np.float64)) ** 2)))


def cbm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D (grey: BM3D) on [0, 1] floats told ``sigma`` (0-255 units), as benchmarks/quality.py runs it."""
    import bm3d

    unit = noisy.astype(np.float64) / 255.0
    if noisy.ndim == 3:
        return common.to_uint8(bm3d.bm3d_rgb(unit, sigma / 255.0))
    return common.to_uint8(bm3d.bm3d(unit, sigma / 255.0))


def read_cc15(folder: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """CC15's names, noisy shots and means (uint8), sorted by name."""
    names = sorted(path.name[: -len("_real.png")] for path in folder.glob("*_real.png"))
    if not names:
        raise SystemExit(f"no *_real.png in {folder}")
    noisy = [common.read_uint8(folder / f"{name}_real.png") for name in names]
    clean = [common.read_uint8(folder / f"{name}_mean.png") for name in names]
    return names, noisy, clean


def merge_cc15(old: dict, new: dict) -> dict:
    """``old`` (a real_noise.json) with the CC15 rows of ``new`` (cc15's result) in place of its own;
    the images and their noise must be the same."""
    if old.get("cc15", {}).get("images") != new["images"]:
        raise SystemExit("--only merges into a JSON of the same CC15 images: run without --only first")
    merged = dict(old)
    merged["cc15"] = {**old["cc15"], **{key: row for key, row in new.items() if key not in ("images", "rms_noise")}}
    return merged


def scores(outputs, cleans) -> dict:
    psnrs = [common.psnr(clean, out) for out, clean in zip(outputs, cleans)]
    ssims = [ssim(clean, out) for out, clean in zip(outputs, cleans)]
    return {"psnr": round(float(np.mean(psnrs)), 3), "ssim": round(float(np.mean(ssims)), 4),
            "psnr_each": [round(value, 2) for value in psnrs]}


def cc15(denoiser: Denoiser, folder: Path, only: tuple[str, ...] = tuple(ROW_GROUPS)) -> dict:
    """The CC15 rows of the groups ``only`` (keys of :data:`ROW_GROUPS`)."""
    names, noisy, clean = read_cc15(folder)
    truth = [rms(n, c) for n, c in zip(noisy, clean)]
    rows = {"images": names, "rms_noise": [round(value, 2) for value in truth]}

    def measured(run, context=None) -> dict:
        began = time.process_time()
        with context or contextlib.nullcontext():
            outputs, told = run()
        return {**scores(outputs, clean), "told": [round(value, 2) for value in told],
                "cpu_s_per_image": round((time.process_time() - began) / len(noisy), 2)}

    if "noisy" in only:
        rows["noisy"] = scores(noisy, clean)
    if "before" in only:
        rows["before"] = measured(lambda: denoiser.run(noisy), before())
    if "calibrated" in only:
        rows["calibrated"] = measured(lambda: denoiser.run(noisy))
    if "white-model" in only:  # the defaults before the photo model: the calibrated level, the white-noise model
        white_model = Denoiser("gaussian")
        rows["calibrated, white-noise model"] = measured(lambda: white_model.run(noisy))
    if "photo-model" in only:  # the photo route before its luma blend: color-photo alone, in its own ensemble
        photo_model = Denoiser(model="color-photo")
        rows["calibrated, photo model alone"] = measured(lambda: photo_model.run(noisy))
    for group, noise in (("camera", "camera"), ("correlated", "correlated")):
        if group in only:
            other = Denoiser(noise)
            rows[f"noise {noise}"] = measured(lambda: other.run(noisy))
    if "cbm3d" in only:
        rows["cbm3d"] = measured(lambda: ([cbm3d(image, level) for image, level in zip(noisy, truth)], truth))
    if "levels" in only:
        each = {}
        for level in FIXED_LEVELS:
            outputs, _ = denoiser.run(noisy, [level] * len(noisy))
            rows[f"level {level}"] = result = scores(outputs, clean)
            each[level] = result["psnr_each"]
        best = [max(each[level][i] for level in FIXED_LEVELS) for i in range(len(names))]
        rows["oracle (best fixed level per image, by the truth)"] = {
            "psnr": round(float(np.mean(best)), 3),
            "levels": [max(FIXED_LEVELS, key=lambda level: each[level][i]) for i in range(len(names))]}
    return rows


def white(denoiser: Denoiser, datasets: Path) -> dict:
    from denoise.noise import NoiseSpec

    rows = {}
    cases = [(folder, NoiseSpec("gaussian", sigma, sigma)) for folder in ("set12", "mcmaster18") for sigma in WHITE_SIGMAS]
    cases += [("mcmaster18", NoiseSpec("camera", peak, peak)) for peak in CAMERA_PEAKS]
    cases += [(folder, NoiseSpec("gaussian", 0, 0)) for folder in ("set12", "mcmaster18")]  # clean: must stay clean
    for folder, spec in cases:
        images = common.load_folder(datasets / folder)
        cleans = [image for _, image in images]
        noisy = [common.noisy_copy(image, name, spec) for name, image in images]
        with before():
            outputs, told = denoiser.run(noisy)
        entry = {"before": {**scores(outputs, cleans), "mean_told": round(float(np.mean(told)), 3)}}
        outputs, told = denoiser.run(noisy)
        entry["calibrated"] = {**scores(outputs, cleans), "mean_told": round(float(np.mean(told)), 3)}
        for method in entry.values():
            method.pop("psnr_each")
        label = (f"{folder} clean" if spec.kind == "gaussian" and spec.low == 0 else
                 f"{folder} sigma {spec.low:g}" if spec.kind == "gaussian" else f"{folder} {spec.describe()}")
        rows[label] = entry
        print(label, entry, flush=True)
    return rows


def grey_cases(datasets: Path) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Grey images whose noise spans more than a pixel, and clean grey photos: ``{label: (noisy, references)}``."""
    from PIL import Image

    from denoise.data import split_files
    from denoise.noise import NoiseSpec

    from quality import _correlated_copy  # quality.py's correlated:SIGMA noise

    def luma(image):  # a grey conversion as users make it (Pillow's Rec. 601)
        return np.asarray(Image.fromarray(image).convert("L")) if image.ndim == 3 else image

    def enlarged(image):  # bicubic, 1.5 times
        height, width = image.shape[:2]
        return np.asarray(Image.fromarray(image).resize((width * 3 // 2, height * 3 // 2), Image.BICUBIC))

    _, real, mean = read_cc15(datasets / "cc15")
    set12 = common.load_folder(datasets / "set12")
    cases = {"CC15 made grey": ([luma(image) for image in real], [luma(image) for image in mean])}
    for sigma in GREY_GRAIN:
        cases[f"Set12 correlated sigma {sigma}"] = ([_correlated_copy(image, name, sigma) for name, image in set12],
                                                    [image for _, image in set12])
    for sigma in GREY_GRAIN:
        spec = NoiseSpec("gaussian", sigma, sigma)
        cases[f"Set12 sigma {sigma}, enlarged 1.5x"] = (
            [enlarged(common.noisy_copy(image, name, spec)) for name, image in set12], [enlarged(image) for _, image in set12])
    photos = [path for name in ("urban100", "sunhays80") for path in split_files(sorted((datasets / name).iterdir()))[1]]
    clean = ([luma(common.read_uint8(path)) for path in photos] + [image for _, image in set12]
             + [luma(image) for _, image in common.load_folder(datasets / "mcmaster18")])
    cases["clean: held-back Urban100 and Sun-Hays80, Set12, McMaster18, grey"] = (clean, clean)
    return cases


def grey(datasets: Path) -> dict:
    """Grey images whose noise spans more than a pixel: the defaults (``gray-photo``), the defaults
    before it (``--model gray-large``, the white-noise grey default, told the same level) and
    ``--noise correlated``; and clean grey photos, which must stay as they are."""
    from denoise import treatments

    methods = {"defaults": Denoiser(), "before gray-photo": Denoiser(model="gray-large"),
               "noise correlated": Denoiser("correlated")}
    rows = {}
    for label, (noisy, references) in grey_cases(datasets).items():
        row = {"images": len(noisy), "photo route": sum(
            treatments.reading_of(_decoded(image), methods["defaults"].engine).noise == "photo" for image in noisy)}
        for method, denoiser in methods.items():
            outputs, _ = denoiser.run(noisy)
            result = scores(outputs, references)
            row[method] = {"psnr": result["psnr"], "ssim": result["ssim"], "min_psnr": min(result["psnr_each"])}
        rows[label] = row
        print(label, row, flush=True)
    return rows


def _decoded(image: np.ndarray):
    from denoise import io

    pixels = image.astype(np.float32) / 255.0
    return io.Decoded(pixels=pixels[..., None] if pixels.ndim == 2 else pixels, alpha=None, bits=8, format="PNG", info={})


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
    for label, context in (("before", before), ("calibrated", contextlib.nullcontext)):
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
    parser.add_argument("--only", nargs="+", choices=tuple(ROW_GROUPS), metavar="ROWS",
                        help=f"measure only these CC15 rows ({', '.join(ROW_GROUPS)}) and merge them into --out")
    parser.add_argument("--also-white", action="store_true", help="with --only: measure the white noise again too")
    parser.add_argument("--also-speed", action="store_true", help="with --only: measure the speed again too")
    parser.add_argument("--skip-grey", action="store_true", help="no grey images (grainy noise, clean photos)")
    parser.add_argument("--also-grey", action="store_true", help="with --only: measure the grey images again too")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "real_noise.json")
    args = parser.parse_args(argv)
    denoiser = Denoiser()
    if args.only:
        old = common.load_json(args.out)
        load = common.load()
        rows = cc15(denoiser, args.datasets / "cc15", tuple(args.only))
        _print(rows)
        result = merge_cc15(old, rows)
        again = []
        if args.also_white:
            result["white"], again = white(denoiser, args.datasets), again + ["white noise"]
        if args.also_speed:
            result["speed"], again = speed(denoiser, args.datasets / "cc15"), again + ["speed"]
            print(result["speed"])
        if args.also_grey:
            result["grey"], again = grey(args.datasets), again + ["grey"]
        result.setdefault("updates", []).append({"rows": [key for group in args.only for key in ROW_GROUPS[group]] + again,
                                                 "date": common.now(), "machine": common.machine(),
                                                 "load_before": load, "load_after": common.load()})
        common.save_json(args.out, result)
        return
    result = {"machine": common.machine(), "load_before": common.load()}
    result["cc15"] = cc15(denoiser, args.datasets / "cc15")
    _print(result["cc15"])
    if not args.skip_white:
        result["white"] = white(denoiser, args.datasets)
    if not args.skip_speed:
        result["speed"] = speed(denoiser, args.datasets / "cc15")
        print(result["speed"])
    if not args.skip_grey:
        result["grey"] = grey(args.datasets)
    result["load_after"] = common.load()
    common.save_json(args.out, result)


def _print(rows: dict) -> None:
    for method, row in rows.items():
        if isinstance(row, dict) and "psnr" in row:
            print(f"CC15 {method:50s} {row['psnr']:.2f} dB  {row.get('ssim', '')}", flush=True)


if __name__ == "__main__":
    main()
