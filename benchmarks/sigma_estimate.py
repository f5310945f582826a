"""Accuracy and speed of the noise-level estimate behind `denoise run --sigma auto`.

Each clean image of Set12 (grey) and McMaster18 (colour) gets Gaussian noise by the protocol
(per-image seed = denoise.noise.seed_for(file name, 0), round, clip to uint8), exactly the noisy
file `denoise eval` and `benchmarks/quality.py` make. The uint8 noisy image is turned into float
[0, 1] as `denoise.io` decodes a PNG, and `denoise.noise.estimate_level` (`estimate_sigma` in
versions before it) is called on it as the pipeline calls it. For each data set and sigma: the mean estimate, the mean and worst relative
error |estimate - sigma| / sigma (signed errors in the JSON), the fraction of images within 15%,
and the estimator's wall and CPU seconds per image (read the CPU time on a shared machine).
`--large` also times one synthetic 6000x4000 colour image.

  python benchmarks/sigma_estimate.py --datasets ../shared/datasets

Prints a table and writes benchmarks/results/sigma_estimate.json, where each run is kept under
its `--label` (default: the sha256 of the denoise/noise.py imported), so the run of an older
estimator stays next to the latest one. To measure an older commit's estimator:

  mkdir /tmp/old && git archive COMMIT denoise | tar -x -C /tmp/old
  PYTHONPATH=/tmp/old python benchmarks/sigma_estimate.py --datasets ../shared/datasets --label before
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import denoise.noise  # noqa: E402
from denoise.noise import NoiseSpec  # noqa: E402

# What --sigma auto calls: estimate_level, which older versions (measured with PYTHONPATH) lack.
ESTIMATE = getattr(denoise.noise, "estimate_level", denoise.noise.estimate_sigma)

DATASETS = {"set12": "Set12 (grey)", "mcmaster18": "McMaster18 (colour)"}
SIGMAS = (5.0, 15.0, 25.0, 50.0)
TOLERANCE = 0.15


def as_decoded(noisy: np.ndarray) -> np.ndarray:
    """What the pipeline hands the estimator: float32 [0, 1], shape (H, W, C)."""
    pixels = noisy.astype(np.float32) / 255.0
    return pixels[..., None] if pixels.ndim == 2 else pixels


def measure(images: list[tuple[str, np.ndarray]], sigma: float) -> dict:
    per_image, seconds, cpu_seconds = {}, [], []
    for name, clean in images:
        noisy = common.noisy_copy(clean, name, NoiseSpec("gaussian", sigma, sigma))
        pixels = as_decoded(noisy)
        started, cpu_started = time.perf_counter(), time.process_time()
        estimate = ESTIMATE(pixels)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
        per_image[name] = round(float(estimate), 4)
    estimates = np.array(list(per_image.values()))
    errors = (estimates - sigma) / sigma
    worst = int(np.argmax(np.abs(errors)))
    return {
        "sigma": sigma,
        "images": len(images),
        "mean_estimate": round(float(estimates.mean()), 3),
        "mean_signed_error": round(float(errors.mean()), 4),
        "mean_abs_error": round(float(np.abs(errors).mean()), 4),
        "worst_error": round(float(errors[worst]), 4),
        "worst_image": list(per_image)[worst],
        "within_15pct": round(float(np.mean(np.abs(errors) <= TOLERANCE)), 4),
        "s_per_image": round(float(np.mean(seconds)), 4),
        "cpu_s_per_image": round(float(np.mean(cpu_seconds)), 4),
        "per_image": per_image,
    }


def large_timing(seed: int = 0) -> dict:
    """One synthetic 6000x4000 colour image (smooth shading + texture + noise 15): seconds."""
    rng = np.random.default_rng(seed)
    height, width = 4000, 6000
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    base = 0.5 + 0.3 * np.sin(3 * x + 2 * y) + 0.05 * np.sin(40 * x) * np.cos(50 * y)
    pixels = np.repeat(base[..., None], 3, axis=-1)
    pixels += rng.normal(0, 15 / 255, size=pixels.shape).astype(np.float32)
    pixels = np.clip(np.round(pixels * 255), 0, 255).astype(np.float32) / 255
    started, cpu_started = time.perf_counter(), time.process_time()
    estimate = ESTIMATE(pixels)
    return {"size": f"{width}x{height}x3", "sigma": 15.0, "estimate": round(float(estimate), 3),
            "seconds": round(time.perf_counter() - started, 3),
            "cpu_seconds": round(time.process_time() - cpu_started, 3)}


def source() -> dict:
    """Which denoise/noise.py was measured: its path, sha256 and the last commit that changed it
    ("+modified" when it differs from that commit; None outside a git checkout)."""
    path = Path(denoise.noise.__file__).resolve()
    info = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "last_commit": None}
    try:
        log = subprocess.run(["git", "log", "-1", "--format=%h", "--", path.name], capture_output=True,
                             text=True, cwd=path.parent, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", path.name], capture_output=True,
                               text=True, cwd=path.parent, check=False).stdout.strip()
        if log.returncode == 0 and log.stdout.strip():
            info["last_commit"] = log.stdout.strip() + ("+modified" if dirty else "")
    except OSError:
        pass
    return info


def render(rows: list[dict]) -> str:
    lines = [["set", "sigma", "mean estimate", "mean rel. error", "mean |rel. error|", "worst rel. error",
              "worst image", "within 15%", "s/image", "CPU s/image"]]
    for row in rows:
        lines.append([row["dataset_label"], f"{row['sigma']:g}", f"{row['mean_estimate']:.2f}",
                      f"{row['mean_signed_error']:+.1%}", f"{row['mean_abs_error']:.1%}",
                      f"{row['worst_error']:+.1%}", row["worst_image"],
                      f"{round(row['within_15pct'] * row['images'])}/{row['images']}", f"{row['s_per_image']:.3f}",
                      f"{row['cpu_s_per_image']:.3f}"])
    return common.table(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", required=True, type=Path, help="folder holding set12/ and mcmaster18/")
    parser.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS), help="comma-separated, 0-255 units")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument("--large", action="store_true", help="also time one 6000x4000 colour image")
    parser.add_argument("--label", default=None, help="the run's key in the JSON (default: the commit)")
    parser.add_argument("--out", type=Path, default=common.RESULTS / "sigma_estimate.json")
    args = parser.parse_args(argv)

    sigmas = [float(text) for text in args.sigmas.split(",") if text.strip()]
    rows = []
    for key, label in DATASETS.items():
        folder = args.datasets / key
        if not folder.is_dir():
            print(f"{folder}: missing, skipped", file=sys.stderr)
            continue
        images = common.load_folder(folder, args.limit)
        for sigma in sigmas:
            row = {"dataset": key, "dataset_label": label, **measure(images, sigma)}
            rows.append(row)
            print(f"  {label} sigma {sigma:g}: mean {row['mean_estimate']:.2f}", file=sys.stderr)
    if not rows:
        print("no data sets found", file=sys.stderr)
        return 1
    print(render(rows))
    measured = source()
    run = {"source": measured, "date": common.now(), "load": common.load(), "rows": rows}
    if args.large:
        run["large"] = large_timing()
        print(f"\n6000x4000 colour: estimate {run['large']['estimate']:.2f} (true 15) in "
              f"{run['large']['seconds']:.2f} s ({run['large']['cpu_seconds']:.2f} CPU s)")
    results = common.load_json(args.out)
    results.update(what=f"denoise.noise.{ESTIMATE.__name__} on protocol noisy uint8 images (seed_for(file name, 0))",
                   tolerance=TOLERANCE, machine=common.machine())
    results.setdefault("runs", {})[args.label or measured["sha256"][:12]] = run
    common.save_json(args.out, results)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
