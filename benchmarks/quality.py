"""Quality and speed of the shipped models side by side with what users would pick instead.

Every method sees the same noisy uint8 PNG files, made by the project's protocol (clean uint8
-> + N(0, sigma^2) in 0-255 units with the per-image seed of ``denoise eval`` -> round -> clip
-> PNG), and is scored on its uint8 output against the clean uint8 image: PSNR (peak 255) and
SSIM (Gaussian window, data_range 255), averaged over images. Each method's seconds per
megapixel are measured in the same run.

Methods
  denoise     each model, through `denoise run` (a subprocess: its start-up, model loading,
              decoding, sigma estimation, tiling, encoding and writing are all in the time),
              told the true sigma and with --sigma auto
  bm3d        BM3D (grey) / CBM3D (colour), PyPI `bm3d`, told the true sigma
  opencv-nlm  OpenCV fastNlMeansDenoising (h = sigma) / ...Colored (h = hColor = 0.6 sigma),
              7x7 patches, 21x21 search, told the true sigma
  median      OpenCV medianBlur 3x3 (what one uses on salt-and-pepper noise)
  skimage-tv  scikit-image TV Chambolle, weight = estimated sigma (estimate_sigma) / 255
  skimage-wavelet  scikit-image wavelet BayesShrink, soft, rescale_sigma (YCbCr for colour),
              sigma estimated by the function itself
  skimage-nlm scikit-image NL-means as in its documentation: h = 0.8 sigma_est, sigma = sigma_est,
              fast mode, 5x5 patches, distance 6
  noisy       the noisy input itself

"True sigma" for Poisson and salt-and-pepper noise is the root mean square of (noisy - clean)
over the data set: the Gaussian-equivalent level an oracle would give.

--stored-as saves the noisy images as users often have them instead of as PNG: jpeg:Q (a JPEG
of quality Q, as cameras and phones save noisy photos) or rgb (grey images as RGB PNG, as
scans often are). The true sigma stays the noise's; outputs are scored as PNG, and an RGB
output of a grey image by the mean of its channels.

Run with one command; prints a table and merges its rows into benchmarks/results/quality.json:

  python benchmarks/quality.py --datasets ../shared/datasets --models all ../runs/gray/gray.keras

Peers are the optional extras `pip install -e ".[bench]"` (bm3d, scikit-image, psutil).
"""

from __future__ import annotations

import argparse
import io as _io
import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PEERS = ("bm3d", "opencv-nlm", "median", "skimage-tv", "skimage-wavelet", "skimage-nlm")
METHODS = ("noisy", "denoise", *PEERS)
SETS = ("set12", "mcmaster18", "photos", "fmnist")
SET_LABELS = {"set12": "Set12", "mcmaster18": "McMaster18", "fmnist": "Fashion-MNIST test",
              "photos": "Photos held back (urban100 8, sunhays80 5)"}
EXTRA_NOISES = ("poisson:30", "salt-pepper:0.05")  # on Set12 only


# --------------------------------------------------------------------------------------------
# The peers: uint8 noisy image (H, W) or (H, W, 3) and the true sigma -> uint8 output
# --------------------------------------------------------------------------------------------


def _bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    unit = noisy.astype(np.float64) / 255.0
    if noisy.ndim == 3:
        return common.to_uint8(bm3d.bm3d_rgb(unit, sigma / 255.0))
    return common.to_uint8(bm3d.bm3d(unit, sigma / 255.0))


def _opencv_nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if noisy.ndim == 3:  # OpenCV works in BGR / Lab; h acts on L, hColor on a and b
        bgr = np.ascontiguousarray(noisy[..., ::-1])
        h = 0.6 * sigma
        return cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)[..., ::-1]
    return cv2.fastNlMeansDenoising(noisy, None, sigma, 7, 21)


def _median(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.medianBlur(np.ascontiguousarray(noisy), 3)


def _estimated_sigma(unit: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(np.mean(estimate_sigma(unit, channel_axis=-1 if unit.ndim == 3 else None)))


def _skimage_tv(noisy: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    unit = noisy.astype(np.float64) / 255.0
    weight = max(_estimated_sigma(unit), 1e-3)
    return common.to_uint8(denoise_tv_chambolle(unit, weight=weight, channel_axis=-1 if unit.ndim == 3 else None))


def _skimage_wavelet(noisy: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    unit = noisy.astype(np.float64) / 255.0
    colour = unit.ndim == 3
    return common.to_uint8(denoise_wavelet(unit, channel_axis=-1 if colour else None, convert2ycbcr=colour,
                                           method="BayesShrink", mode="soft", rescale_sigma=True))


def _skimage_nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    unit = noisy.astype(np.float64) / 255.0
    estimate = _estimated_sigma(unit)
    return common.to_uint8(denoise_nl_means(unit, h=0.8 * estimate, sigma=estimate, fast_mode=True, patch_size=5,
                                            patch_distance=6, channel_axis=-1 if unit.ndim == 3 else None))


PEER_FUNCTIONS = {
    "bm3d": _bm3d, "opencv-nlm": _opencv_nlm, "median": _median, "skimage-tv": _skimage_tv,
    "skimage-wavelet": _skimage_wavelet, "skimage-nlm": _skimage_nlm,
}


def peer_label(method: str, colour: bool) -> str:
    return {
        "bm3d": "CBM3D" if colour else "BM3D",
        "opencv-nlm": "OpenCV fastNlMeansDenoising" + ("Colored" if colour else ""),
        "median": "OpenCV median 3x3",
        "skimage-tv": "skimage TV Chambolle",
        "skimage-wavelet": "skimage wavelet (BayesShrink)",
        "skimage-nlm": "skimage NL-means",
        "noisy": "noisy input",
    }[method]


# --------------------------------------------------------------------------------------------
# One case: a data set at one noise, every method
# --------------------------------------------------------------------------------------------


class Case:
    def __init__(self, key: str, label: str, images: list[tuple[str, np.ndarray]], spec, workdir: Path,
                 stored: str = "png", correlated: bool = False):
        self.key, self.label, self.images, self.spec, self.stored = key, label, images, spec, stored
        self.noise = ("correlated " if correlated else "") + common.noise_label(spec)
        self.noise += "" if stored == "png" else f", stored as {stored}"
        self.folder = workdir / "quality" / key / self.noise.replace(" ", "_").replace("%", "pct")
        self.noisy_dir = self.folder / "noisy"
        self.colour = images[0][1].ndim == 3
        self.megapixels = sum(image.shape[0] * image.shape[1] for _, image in images) / 1e6
        self.files = {}  # image name -> its noisy file's name
        squared, count = 0.0, 0
        for name, clean in images:
            noisy = _correlated_copy(clean, name, spec.low) if correlated else common.noisy_copy(clean, name, spec)
            self.files[name] = _store(noisy, self.noisy_dir / name, stored)
            squared += float(np.sum((noisy.astype(np.float64) - clean) ** 2))
            count += clean.size
        # The level an oracle would tell a Gaussian denoiser: exact for Gaussian noise, the
        # RMS of (noisy - clean) over the data set for the others.
        self.sigma = spec.low if spec.kind == "gaussian" else round(math.sqrt(squared / count), 1)

    def base_row(self, method: str, label: str) -> dict:
        return {
            "dataset": self.key, "dataset_label": self.label, "images": len(self.images),
            "megapixels": round(self.megapixels, 4), "colour": self.colour, "noise": self.noise,
            "noise_spec": {"kind": self.spec.kind, "level": self.spec.low}, "method": method, "label": label,
        }

    def score(self, outputs: dict[str, np.ndarray], row: dict, keep_per_image: bool) -> dict:
        psnrs, ssims = [], []
        for name, clean in self.images:
            if clean.ndim == 2 and outputs[name].ndim == 3:
                outputs[name] = np.round(outputs[name].mean(axis=-1)).astype(np.uint8)
            psnrs.append(common.psnr(clean, outputs[name]))
            ssims.append(common.ssim(clean, outputs[name]))
        row["psnr"] = round(float(np.mean(psnrs)), 3)
        row["ssim"] = round(float(np.nanmean(ssims)), 4)
        if keep_per_image:
            row["per_image"] = {name: [round(p, 2), round(s, 4)] for (name, _), p, s in zip(self.images, psnrs, ssims)}
        return row


def run_peer(case: Case, method: str, keep_per_image: bool) -> dict:
    """Decode each noisy PNG, denoise in this process, encode the output PNG: timed per image."""
    from PIL import Image

    function = PEER_FUNCTIONS.get(method)
    outputs, wall, cpu = {}, 0.0, 0.0
    load_before = common.load()
    for name, _ in case.images:
        started, cpu_started = time.perf_counter(), time.process_time()
        noisy = common.read_uint8(case.noisy_dir / case.files[name])
        result = noisy if function is None else function(noisy, case.sigma)
        Image.fromarray(result).save(_io.BytesIO(), format="PNG")
        wall += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        outputs[name] = result
    row = case.base_row(method, peer_label(method, case.colour))
    row.update(sigma_given=None if method in ("noisy", "median", "skimage-tv", "skimage-wavelet", "skimage-nlm")
               else case.sigma, wall_s=round(wall, 3), cpu_s=round(cpu, 3),
               s_per_mp=round(wall / case.megapixels, 4), cpu_s_per_mp=round(cpu / case.megapixels, 4),
               load_before=load_before, load_after=common.load())
    return case.score(outputs, row, keep_per_image)


def run_model(case: Case, model: dict, sigma: str, device: str, keep_per_image: bool, ensemble: int = 1,
              noise: str = "auto") -> dict:
    """`denoise run` on the folder of noisy PNGs (a subprocess), then score its outputs.

    ``ensemble`` N runs the model in float32 N times (the model's own figures); 0 runs it with
    the defaults of `denoise run` on this machine (the precision and ensemble they chose are
    recorded)."""
    named = {0: "", 1: "", 8: "ensemble"}.get(ensemble, f"ensemble={ensemble}")  # 8: as `--ensemble` alone
    told = ("default" if ensemble == 0 else "auto" if sigma == "auto" else "true") + (f", {named}" if named else "")
    told += "" if noise == "auto" else f", noise={noise}"
    tag = f"{model['name']}-sigma-{sigma}" + (f"-{named.replace('=', '')}" if named else "") + (
        "-default" if ensemble == 0 else "") + (
        "" if noise == "auto" else f"-{noise}")
    output = case.folder / "denoised" / tag
    report = case.folder / f"{tag}.report.json"
    command = [*common.denoise_command(), "run", str(case.noisy_dir), str(output), "--model", model["arg"],
               "--sigma", sigma, "--quiet", "--overwrite", "--report", str(report), "--device", device, "--format", "png",
               "--noise", noise, *(["--ensemble", str(ensemble), "--precision", "float32"] if ensemble else [])]
    timed = common.run_timed(command)
    label = f"denoise {model['name']} (sigma {told})"
    row = case.base_row(f"denoise:{model['name']}:{told.replace(', ', ':')}", label)
    row.update(model=model["name"], sigma_given=None if sigma == "auto" else float(sigma),
               command=" ".join(["denoise", *command[len(common.denoise_command()):]]))
    if timed["returncode"] != 0 or not report.exists():
        row.update(error=f"exit {timed['returncode']}: {timed['stderr'].strip().splitlines()[-1:] }")
        print(f"  {label}: FAILED\n{timed['stderr'][-2000:]}", file=sys.stderr)
        return row
    summary = json.loads(report.read_text())["summary"]
    files = json.loads(report.read_text())["files"]
    estimates = [entry["sigma"] for entry in files if entry.get("sigma") is not None]
    pipeline = summary["seconds"]
    row.update(
        wall_s=round(pipeline, 3), end_to_end_s=timed["wall_s"], cpu_s=timed["cpu_s"],
        s_per_mp=round(pipeline / case.megapixels, 4),
        end_to_end_s_per_mp=round(timed["wall_s"] / case.megapixels, 4),
        cpu_s_per_mp=round(timed["cpu_s"] / case.megapixels, 4), peak_rss_mib=timed["peak_rss_mib"],
        load_before=timed["load_before"], load_after=timed["load_after"],
        ignores_sigma="no noise-level input" in timed["stderr"],
        precision=summary.get("precision", "float32"), ensemble=max((entry.get("ensemble") or 1 for entry in files), default=1),
    )
    if sigma == "auto" and estimates:
        row["sigma_estimates"] = {"mean": round(float(np.mean(estimates)), 2), "min": min(estimates), "max": max(estimates)}
    outputs = {name: common.read_uint8(output / Path(case.files[name]).with_suffix(".png")) for name, _ in case.images}
    return case.score(outputs, row, keep_per_image)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def build_cases(args, workdir: Path) -> list[Case]:
    datasets = Path(args.datasets)
    cases = []
    for key in args.sets:
        if key == "fmnist":
            images = common.load_fmnist(datasets / "fashion_mnist" / "fashion_mnist.npz", args.fmnist_count)
            label = f"{SET_LABELS[key]} (first {len(images)})"
        elif key == "photos":
            images = common.load_held_back(datasets, ("urban100", "sunhays80"), args.limit)
            label = SET_LABELS[key] + (f" (first {len(images)})" if args.limit else "")
        else:
            images = common.load_folder(datasets / key, args.limit)
            label = SET_LABELS[key] + (f" (first {len(images)})" if args.limit else "")
        dataset_key = label  # the key carries the subset, so a limited run never replaces a full one
        texts = [str(sigma) for sigma in (args.fmnist_sigmas if key == "fmnist" and args.fmnist_sigmas else args.sigmas)]
        if key == "set12":
            texts += [text for text in args.extra_noises if text != "none"]
        for text in texts:
            correlated = text.startswith("correlated:")
            spec = common.parse_noise(text.split(":", 1)[1] if correlated else text)
            cases.append(Case(dataset_key, label, images, spec, workdir, args.stored_as, correlated))
    return cases


# Independent noise blurred by a Gaussian of this standard deviation (pixels) spans about two
# pixels, as in a photo after demosaicing and in-camera processing.
CORRELATION_BLUR = 0.7


def _correlated_copy(clean: np.ndarray, name: str, sigma: float) -> np.ndarray:
    """Noise of standard deviation ``sigma`` per pixel, correlated over about two pixels
    (``correlated:SIGMA``): seeded per image like the protocol's, blurred, rescaled, rounded, clipped."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(common.seed_for(name, common.NOISE_SEED))
    noise = rng.normal(0.0, 1.0, clean.shape)
    noise = gaussian_filter(noise, (CORRELATION_BLUR, CORRELATION_BLUR, 0)[: clean.ndim])
    noisy = clean + noise / noise.std() * sigma
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _store(noisy: np.ndarray, path: Path, stored: str) -> str:
    """Save a noisy uint8 image as --stored-as says; the file's name."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if stored.startswith("jpeg:"):
        path = path.with_suffix(".jpg")
        Image.fromarray(noisy).save(path, quality=int(stored.split(":")[1]))
        return path.name
    if stored == "rgb" and noisy.ndim == 2:
        noisy = np.repeat(noisy[..., None], 3, axis=-1)
    common.save_png(noisy, path)
    return path.name


def stored_as(text: str) -> str:
    """argparse type of --stored-as: png, rgb or jpeg:Q."""
    if text in ("png", "rgb") or (text.startswith("jpeg:") and text[5:].isdigit() and 1 <= int(text[5:]) <= 100):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected png, rgb or jpeg:QUALITY (1-100)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--datasets", default=str(common.REPO.parent / "shared" / "datasets"),
                        help="Folder with set12/, mcmaster18/, fashion_mnist/ (default: ../shared/datasets).")
    parser.add_argument("--models", nargs="*", default=["all"],
                        help="Registry names and/or .keras paths; 'all' is every model in weights/manifest.json (default); "
                             "'auto' is what `denoise run` picks per image.")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--sigmas", nargs="+", default=["15", "25", "50"],
                        help="Gaussian sigmas (or kind:level, e.g. poisson:30; correlated:25 for Gaussian noise "
                             "spanning about two pixels; camera:100 for a camera's noise at 100 photons for white) "
                             "for every data set.")
    parser.add_argument("--fmnist-sigmas", nargs="+", default=None, help="Override --sigmas for Fashion-MNIST.")
    parser.add_argument("--extra-noises", nargs="*", default=list(EXTRA_NOISES),
                        help="Further noises on Set12 only (default: poisson:30 salt-pepper:0.05; none for none).")
    parser.add_argument("--fmnist-count", type=int, default=1000, help="First N Fashion-MNIST test images.")
    parser.add_argument("--stored-as", type=stored_as, default="png",
                        help="How the noisy images are saved: png (the protocol), jpeg:Q, or rgb (grey as RGB PNG).")
    parser.add_argument("--limit", type=int, default=None, help="At most N images per folder data set (BM3D is slow).")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"Comma list from {','.join(METHODS)}.")
    parser.add_argument("--skip", default="", help="Comma list of methods to leave out (e.g. bm3d).")
    parser.add_argument("--model-sigmas", default="true,auto,default",
                        help="Comma list of what the models are told: true, auto, ensemble (auto with --ensemble), "
                             "ensemble2 or ensemble4 (auto with --ensemble 2 or 4), all in float32; default: "
                             "`denoise run`'s own defaults on this machine (--sigma auto, --precision and --ensemble auto).")
    parser.add_argument("--noise-modes", default="auto",
                        help="Comma list of `denoise run --noise` values for the denoise rows (default auto).")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="cpu", help="Passed to `denoise run`.")
    parser.add_argument("--quick", action="store_true",
                        help="A smoke run: sigma 25 only, 3 images per data set, 100 Fashion-MNIST, no extra noises; "
                             "written to results/quality-quick.json unless --out.")
    parser.add_argument("--workdir", help="Keep noisy files and outputs here (default: a temporary folder).")
    parser.add_argument("--out", help="Results JSON (default benchmarks/results/quality.json); rows merge by key.")
    parser.add_argument("--no-merge", action="store_true", help="Replace the results file instead of merging rows.")
    args = parser.parse_args(argv)
    if args.quick:
        args.sigmas, args.limit, args.fmnist_count, args.extra_noises = ["25"], 3, 100, []
        args.fmnist_sigmas = None
    methods = [m for m in args.methods.split(",") if m and m not in args.skip.split(",")]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    out = Path(args.out) if args.out else common.RESULTS / ("quality-quick.json" if args.quick else "quality.json")

    scratch = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="denoise-bench-")
        workdir = Path(scratch.name)
    models = common.resolve_models(args.models, workdir) if "denoise" in methods else []
    if "denoise" in methods and not models:
        print("note: no models in weights/manifest.json and no .keras paths given: the denoise rows are skipped",
              file=sys.stderr)
    started = common.now()
    load_start = common.load()
    cases = build_cases(args, workdir)
    rows = []
    for case in cases:
        keep = len(case.images) <= 50
        print(f"{case.label}, {case.noise} ({len(case.images)} images, {case.megapixels:.2f} MP, "
              f"true sigma {case.sigma:g}), load {common.load()}", file=sys.stderr)
        for method in methods:
            if method == "denoise":
                for model in models:
                    if model.get("channels") == 3 and not case.colour:
                        continue  # a colour model never serves grey images (--model auto sends them to a grey one)
                    for noise, sigma in itertools.product(args.noise_modes.split(","), args.model_sigmas.split(",")):
                        value = "auto" if sigma in ("auto", "default") or sigma.startswith("ensemble") else f"{case.sigma:g}"
                        ensemble = (int(sigma[len("ensemble"):] or 8) if sigma.startswith("ensemble")
                                    else 0 if sigma == "default" else 1)
                        if noise not in ("auto", "gaussian") and value != "auto":
                            continue  # those modes measure each image
                        row = run_model(case, model, value, args.device, keep, ensemble=ensemble, noise=noise)
                        rows.append(row)
                        _progress(row)
                        if row.get("ignores_sigma"):
                            break  # the model cannot use sigma: the auto run would be the same
            else:
                row = run_peer(case, method, keep)
                rows.append(row)
                _progress(row)

    results = {} if args.no_merge else common.load_json(out)
    invocation = {"command": " ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
                  "started": started, "finished": common.now(), "load_start": load_start, "load_end": common.load()}
    results["machine"] = common.machine()
    results["protocol"] = ("clean uint8 -> + noise (per-image seed = denoise.noise.seed_for(file name, 0)) -> round -> "
                           "clip [0, 255] -> PNG; PSNR peak 255 and SSIM (Gaussian 11x11, sigma 1.5, data_range 255) "
                           "of the uint8 output against the uint8 clean image, averaged over images")
    results["timing"] = ("s_per_mp: wall seconds per megapixel. Peers: in this process, per image, decode of the noisy "
                         "PNG + denoise + PNG encode. denoise: the pipeline time `denoise run` reports (model load, "
                         "decode, sigma estimate, tiling, model, encode, write; not the Python and TensorFlow start-up), "
                         "end_to_end_s_per_mp includes the start-up. cpu_s_per_mp: CPU seconds of all threads.")
    results.setdefault("invocations", []).append(invocation)
    results["models"] = {**results.get("models", {}), **{model["name"]: model for model in models}}
    results["rows"] = common.merge_rows(results.get("rows", []), rows, ("dataset", "noise", "method"))
    common.save_json(out, results)
    print(render(rows))
    print(f"\nwrote {out}", file=sys.stderr)
    if scratch is not None:
        scratch.cleanup()
    return 0


def _progress(row: dict) -> None:
    if "error" in row:
        return
    print(f"  {row['label']:45s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.4f}  {row['s_per_mp']:9.3f} s/MP  "
          f"load {row['load_after'][0]}", file=sys.stderr)


def render(rows: list[dict]) -> str:
    lines = [["data set", "noise", "method", "PSNR", "SSIM", "s/MP", "CPU s/MP"]]
    for row in rows:
        if "error" in row:
            lines.append([row["dataset"], row["noise"], row["label"], "failed", "", "", ""])
            continue
        lines.append([row["dataset"], row["noise"], row["label"], f"{row['psnr']:.2f}", f"{row['ssim']:.4f}",
                      f"{row['s_per_mp']:.3g}", f"{row['cpu_s_per_mp']:.3g}"])
    return common.table(lines)


if __name__ == "__main__":
    sys.exit(main())
