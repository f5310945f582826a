"""End-to-end speed of `denoise run` against its floor (decode + encode, no model) and BM3D.

Cases (the images are made at run time into --workdir, never shipped):
  a  10,000 noisy 28x28 grey PNGs (Fashion-MNIST test images + Gaussian noise by the protocol)
  b  200 noisy 512x512 colour JPEGs (BSDS photos upscaled to 512 on the short side, centre crop,
     + noise, JPEG quality 95)
  c  one noisy 6000x4000 colour JPEG (a BSDS photo upscaled, + noise, JPEG quality 95)
  d  one noisy 4000x3000 grey PNG (the same photo as grey, upscaled, + noise): a grey scan

For each case:
  floor    benchmarks/floor.py: the same files decoded and re-encoded with the same code
           (denoise.io, Pillow), formats and worker threads, no model
  denoise  `denoise run IN OUT --model M --sigma S` in a subprocess: wall time, CPU time,
           peak RSS (os.wait4 of the child), and the pipeline time from its --report
  bm3d     (b, c, d) CBM3D (d: BM3D) on a sample, decode + denoise + JPEG encode, in seconds per megapixel,
           measured in the same run (a 512x512 crop of (c) and (d): BM3D's cost per pixel does not
           depend on the image size, and the whole photo would take over an hour)
  profile  (--profile) the same `denoise run` under benchmarks/profile_run.py: time per stage
  seams    (c) a 1536x1536 crop denoised in the default tiles and as one tile: the
           difference shows whether tile borders leave any trace

  python benchmarks/throughput.py --datasets ../shared/datasets --model weights-name-or.keras

Prints a table and writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import io as _io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = {
    "a": "10,000 noisy 28x28 grey PNGs",
    "b": "200 noisy 512x512 colour JPEGs",
    "c": "one noisy 6000x4000 colour JPEG",
    "d": "one noisy 4000x3000 grey PNG",
}


# --------------------------------------------------------------------------------------------
# Making the inputs
# --------------------------------------------------------------------------------------------


def _ready(folder: Path, stamp: dict) -> bool:
    marker = folder / ".made.json"
    return marker.exists() and json.loads(marker.read_text()) == stamp


def _stamp(folder: Path, stamp: dict) -> None:
    (folder / ".made.json").write_text(json.dumps(stamp))


def make_small(datasets: Path, folder: Path, count: int, sigma: float) -> Path:
    stamp = {"case": "a", "count": count, "sigma": sigma}
    if _ready(folder, stamp):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = common.parse_noise(f"{sigma:g}")
    for name, clean in common.load_fmnist(datasets / "fashion_mnist" / "fashion_mnist.npz", count):
        Image.fromarray(common.noisy_copy(clean, name, spec)).save(folder / name)
    _stamp(folder, stamp)
    return folder


def _photos(datasets: Path) -> list[Path]:
    return sorted((datasets / "bsds400_color").glob("*.jpg"))


def make_medium(datasets: Path, folder: Path, count: int, size: int, sigma: float) -> Path:
    stamp = {"case": "b", "count": count, "size": size, "sigma": sigma}
    if _ready(folder, stamp):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = common.parse_noise(f"{sigma:g}")
    for path in _photos(datasets)[:count]:
        with Image.open(path) as photo:
            photo = photo.convert("RGB")
            scale = size / min(photo.size)
            photo = photo.resize((max(size, round(photo.width * scale)), max(size, round(photo.height * scale))),
                                 Image.BICUBIC)
            left, top = (photo.width - size) // 2, (photo.height - size) // 2
            clean = np.asarray(photo.crop((left, top, left + size, top + size)))
        name = f"bsds_{path.stem}.jpg"
        Image.fromarray(common.noisy_copy(clean, name, spec)).save(folder / name, quality=95, subsampling=0)
    _stamp(folder, stamp)
    return folder


def make_large(datasets: Path, folder: Path, width: int, height: int, sigma: float, grey: bool = False) -> Path:
    """One photo upscaled to width x height, noised by the protocol: a colour JPEG, or a grey PNG."""
    stamp = {"case": "d" if grey else "c", "width": width, "height": height, "sigma": sigma}
    if _ready(folder, stamp):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = next(path for path in _photos(datasets) if Image.open(path).width > Image.open(path).height)
    with Image.open(source) as photo:
        clean = np.asarray(photo.convert("L" if grey else "RGB").resize((width, height), Image.BICUBIC))
    name = f"large_{source.stem}_{width}x{height}.{'png' if grey else 'jpg'}"
    spec = common.parse_noise(f"{sigma:g}")
    noisy = np.empty_like(clean)
    for top in range(0, height, 500):  # in strips: bounded memory for the float noise
        noisy[top : top + 500] = common.noisy_copy(clean[top : top + 500], f"{name}:{top}", spec)
    Image.fromarray(noisy).save(folder / name, **({} if grey else {"quality": 95, "subsampling": 0}))
    _stamp(folder, {**stamp, "source": source.name})
    return folder


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def count_pixels(folder: Path) -> tuple[int, float]:
    images, pixels = 0, 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        with Image.open(path) as image:
            pixels += image.width * image.height
        images += 1
    return images, pixels / 1e6


def run_floor(folder: Path, output: Path, workers: int | None) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, str(HERE / "floor.py"), str(folder), str(output)]
    if workers:
        command += ["--workers", str(workers)]
    timed = common.run_timed(command)
    if timed["returncode"]:
        raise SystemExit(f"floor failed:\n{timed['stderr']}")
    inner = json.loads(timed["stdout"].strip().splitlines()[-1])
    shutil.rmtree(output, ignore_errors=True)
    return {"wall_s": timed["wall_s"], "inner_s": inner["seconds"], "cpu_s": timed["cpu_s"],
            "peak_rss_mib": timed["peak_rss_mib"], "workers": inner["workers"],
            "load_before": timed["load_before"], "load_after": timed["load_after"]}


def run_denoise(folder: Path, output: Path, model: str, sigma: str, device: str, extra: list[str],
                profile: Path | None = None, keep: bool = False) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    report = output.parent / f"{output.name}.report.json"
    arguments = ["run", str(folder), str(output), "--model", model, "--sigma", sigma, "--device", device,
                 "--quiet", "--report", str(report), *extra]
    if profile is not None:
        command = [sys.executable, str(HERE / "profile_run.py"), str(profile), "--", *arguments]
    else:
        command = [*common.denoise_command(), *arguments]
    timed = common.run_timed(command)
    if timed["returncode"]:
        raise SystemExit(f"denoise run failed ({timed['returncode']}):\n{timed['stderr']}")
    written = json.loads(report.read_text())
    summary = written["summary"]
    if not keep:
        shutil.rmtree(output, ignore_errors=True)
    return {"command": "denoise " + " ".join(arguments), "wall_s": timed["wall_s"], "pipeline_s": summary["seconds"],
            "cpu_s": timed["cpu_s"], "peak_rss_mib": timed["peak_rss_mib"], "ok": summary["ok"],
            "failed": summary["failed"], "load_before": timed["load_before"], "load_after": timed["load_after"],
            "precision": summary.get("precision"),
            "ensemble": max((row.get("ensemble") or 1 for row in written["files"]), default=None)}


def bm3d_per_megapixel(arrays: list[np.ndarray], sigma: float) -> dict:
    """CBM3D (grey: BM3D) on each array: JPEG decode + denoise + JPEG encode, in this process."""
    import bm3d

    wall = cpu = pixels = 0.0
    load_before = common.load()
    for array in arrays:
        encoded = _io.BytesIO()
        Image.fromarray(array).save(encoded, format="JPEG", quality=95, subsampling=0)
        started, cpu_started = time.perf_counter(), time.process_time()
        noisy = np.asarray(Image.open(_io.BytesIO(encoded.getvalue()))).astype(np.float64) / 255.0
        if noisy.ndim == 3:
            result = bm3d.bm3d_rgb(noisy, sigma / 255.0)
        else:
            result = bm3d.bm3d(noisy, sigma / 255.0)
        Image.fromarray(common.to_uint8(result)).save(_io.BytesIO(), format="JPEG", quality=95)
        wall += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        pixels += array.shape[0] * array.shape[1] / 1e6
    return {"images": len(arrays), "megapixels": round(pixels, 4), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "s_per_mp": round(wall / pixels, 2), "cpu_s_per_mp": round(cpu / pixels, 2),
            "load_before": load_before, "load_after": common.load()}


def seam_check(large: Path, workdir: Path, model: str, sigma: str, device: str, size: int = 1536) -> dict:
    """Denoise a crop of the large image in the tiles `denoise run` uses and as one tile; compare."""
    from denoise import registry, tiles, treatments
    from denoise.engine import Engine
    from denoise.settings import Inference

    with Image.open(large) as image:
        size = min(size, image.width, image.height)
        # Away from the image borders; the crop crosses several tile borders.
        left, top = min(1000, image.width - size), min(1000, image.height - size)
        crop = np.asarray(image.convert("RGB").crop((left, top, left + size, top + size)))
    folder = workdir / "seams" / "in"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(crop).save(folder / "crop.png")
    outputs = {}
    for name, options in (("tiled", []), ("whole", ["--tile", str(2 * size)])):
        output = workdir / "seams" / name
        run_denoise(folder, output, model, sigma, device, options, keep=True)
        outputs[name] = np.asarray(Image.open(output / "crop.png")).astype(np.int16)
    difference = np.abs(outputs["tiled"] - outputs["whole"])
    # Where the tile borders fall in this crop: the pipeline's tile for the model, tiles.layout.
    loaded = registry.load(registry.default_name(3) if model == "auto" else model)
    tile = Engine(Inference(), print).tile_for(loaded)
    axis = tiles.layout(size, tile, loaded.multiple, treatments.MARGIN)
    borders = sorted({start for start in axis.starts[1:]} | {start + axis.tile for start in axis.starts[:-1]})
    band = np.zeros(size, bool)
    for border in borders:
        band[max(0, border - 40): border + 40] = True
    near_mask = band[:, None] | band[None, :]  # pixels within 40 of a tile border (row or column)
    near, far = difference[near_mask], difference[~near_mask]
    return {
        "crop": f"{size}x{size} at ({left}, {top})", "tile": axis.tile, "tile_starts": list(axis.starts),
        "tile_borders": borders,
        "max_abs_diff": int(difference.max()), "mean_abs_diff": round(float(difference.mean()), 4),
        "p99_9_abs_diff": float(np.percentile(difference, 99.9)),
        "mean_abs_diff_near_tile_borders": round(float(near.mean()), 4),
        "mean_abs_diff_away_from_borders": round(float(far.mean()), 4) if far.size else None,
        "pixels_differing": round(float((difference > 0).mean()), 5),
    }


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--datasets", default=str(common.REPO.parent / "shared" / "datasets"))
    parser.add_argument("--workdir", default=None, help="Where the generated inputs and outputs go "
                        "(default: a temporary folder; give one to reuse the inputs between runs).")
    parser.add_argument("--cases", default="a,b,c,d", help="Comma list of a, b, c, d.")
    parser.add_argument("--model", default="auto", help="Registry name or .keras path given to `denoise run` (default auto).")
    parser.add_argument("--color-model", default=None, help="Model for the colour cases b and c (default: --model).")
    parser.add_argument("--sigma", default="25", help="--sigma for `denoise run` and BM3D's sigma (default 25).")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="`denoise run --precision`: the arithmetic of the network's convolutions (default: "
                             "the run's own, which the rows record).")
    parser.add_argument("--ensemble", choices=["auto", "1", "2", "4", "8"], default="auto",
                        help="`denoise run --ensemble` (default: the run's own).")
    parser.add_argument("--workers", type=int, default=None, help="Floor threads (default: the pipeline's own).")
    parser.add_argument("--small-count", type=int, default=10_000)
    parser.add_argument("--medium-count", type=int, default=200)
    parser.add_argument("--large-size", default="6000x4000", help="(c) the colour photo's size.")
    parser.add_argument("--grey-size", default="4000x3000", help="(d) the grey photo's size.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of floor and model each (the best is kept).")
    parser.add_argument("--bm3d-images", type=int, default=1, help="(b) images CBM3D runs on (0: none).")
    parser.add_argument("--bm3d-crop", type=int, default=512, help="(c, d) side of the crop (C)BM3D runs on (0: none).")
    parser.add_argument("--profile", action="store_true", help="Also run each case under profile_run.py.")
    parser.add_argument("--profile-only", action="store_true",
                        help="Only the profiled run of each case (no floor, plain run, BM3D or seam check).")
    parser.add_argument("--no-seams", action="store_true", help="Skip the tiled-vs-whole check of (c).")
    parser.add_argument("--out", default=str(common.RESULTS / "throughput.json"))
    args = parser.parse_args(argv)

    import tempfile

    scratch = None
    if args.workdir:
        workdir = Path(args.workdir)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="denoise-throughput-")
        workdir = Path(scratch.name)
    workdir.mkdir(parents=True, exist_ok=True)
    datasets = Path(args.datasets)
    models = {}
    for key, name in (("grey", args.model), ("colour", args.color_model or args.model)):
        models[key] = common.resolve_models([name], workdir)[0] if name != "auto" else {"name": "auto", "arg": "auto"}
    width, height = (int(value) for value in args.large_size.lower().split("x"))
    grey_width, grey_height = (int(value) for value in args.grey_size.lower().split("x"))
    sigma = float(args.sigma) if args.sigma != "auto" else 25.0

    results = common.load_json(Path(args.out))
    results["machine"] = common.machine()
    results["machine"]["gpu_visible"] = common.gpu_visible()
    results.setdefault("invocations", []).append({
        "command": " ".join(["python", "benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": common.now(), "load_start": common.load()})
    results["models"] = {**results.get("models", {}), **{model["name"]: model for model in models.values()}}
    cases = results.setdefault("cases", {})

    for case in args.cases.split(","):
        print(f"case {case}: {CASES[case]}: making the inputs ...", file=sys.stderr)
        if case == "a":
            folder = make_small(datasets, workdir / "inputs" / "small", args.small_count, sigma)
        elif case == "b":
            folder = make_medium(datasets, workdir / "inputs" / "medium", args.medium_count, 512, sigma)
        elif case == "c":
            folder = make_large(datasets, workdir / "inputs" / "large", width, height, sigma)
        else:
            folder = make_large(datasets, workdir / "inputs" / "large-grey", grey_width, grey_height, sigma, grey=True)
        grey = case in ("a", "d")
        model = models["grey" if grey else "colour"]
        images, megapixels = count_pixels(folder)
        row = {"case": case, "what": CASES[case], "images": images, "megapixels": round(megapixels, 3),
               "model": model["name"], "sigma": args.sigma, "device": args.device}
        named = [f"{name}={value}" for name, value in (("precision", args.precision), ("ensemble", args.ensemble))
                 if value != "auto"]  # the default run keeps the plain key
        key = "/".join([case, model["name"], args.device, *named])
        extra = ["--precision", args.precision, "--ensemble", args.ensemble]
        if model["name"] == "auto":  # which model auto picked for these images
            from denoise import registry

            row["serves"] = registry.default_name(1 if grey else 3)
        if args.profile_only:
            print("  profile run ...", file=sys.stderr)
            profile = workdir / f"profile-{case}.json"
            row["profile_run"] = run_denoise(folder, workdir / "out" / f"profile-{case}", model["arg"], args.sigma,
                                             args.device, extra, profile=profile)
            row["profile"] = json.loads(profile.read_text())
            cases[key] = row
            results["invocations"][-1].update(finished=common.now(), load_end=common.load())
            common.save_json(Path(args.out), results)
            print(json.dumps(row["profile"]["stages"], indent=1))
            continue
        floors, runs = [], []
        for repeat in range(args.repeats):
            floors.append(run_floor(folder, workdir / "out" / f"floor-{case}", args.workers))
            print(f"  floor   {floors[-1]['wall_s']:8.2f} s  rss {floors[-1]['peak_rss_mib']:7.0f} MiB  load {floors[-1]['load_after']}", file=sys.stderr)
            runs.append(run_denoise(folder, workdir / "out" / f"denoise-{case}", model["arg"], args.sigma, args.device, extra))
            print(f"  denoise {runs[-1]['wall_s']:8.2f} s  rss {runs[-1]['peak_rss_mib']:7.0f} MiB  load {runs[-1]['load_after']}", file=sys.stderr)
        floor = min(floors, key=lambda item: item["wall_s"])
        run = min(runs, key=lambda item: item["wall_s"])
        row["floor"] = {**floor, "images_per_s": round(images / floor["wall_s"], 2),
                        "megapixels_per_s": round(megapixels / floor["wall_s"], 3), "all_wall_s": [f["wall_s"] for f in floors]}
        row["denoise"] = {**run, "images_per_s": round(images / run["wall_s"], 2),
                          "megapixels_per_s": round(megapixels / run["wall_s"], 3),
                          "s_per_mp": round(run["wall_s"] / megapixels, 3),
                          "pipeline_s_per_mp": round(run["pipeline_s"] / megapixels, 3),
                          "all_wall_s": [r["wall_s"] for r in runs]}
        row["precision"], row["ensemble"] = run["precision"], run["ensemble"]  # what the run resolved auto to
        row["ratio_to_floor"] = round(run["wall_s"] / floor["wall_s"], 2)
        row["ratio_to_floor_cpu"] = round(run["cpu_s"] / max(floor["cpu_s"], 1e-9), 2)
        row["ratio_to_floor_excluding_startup"] = round(run["pipeline_s"] / max(floor["inner_s"], 1e-9), 2)
        if case in ("b", "c", "d"):
            if case == "b" and args.bm3d_images:
                paths = sorted(p for p in folder.iterdir() if not p.name.startswith("."))[: args.bm3d_images]
                arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
            elif case in ("c", "d") and args.bm3d_crop:
                with Image.open(next(p for p in folder.iterdir() if not p.name.startswith("."))) as image:
                    side = args.bm3d_crop
                    left, top = (image.width - side) // 2, (image.height - side) // 2
                    arrays = [np.asarray(image.convert("L" if grey else "RGB").crop((left, top, left + side, top + side)))]
            else:
                arrays = []
            if arrays:
                print(f"  {'BM3D' if grey else 'CBM3D'} on {len(arrays)} image(s) of {arrays[0].shape[1]}x{arrays[0].shape[0]} ...", file=sys.stderr)
                row["bm3d"] = bm3d_per_megapixel(arrays, sigma)
                row["faster_than_bm3d"] = round(row["bm3d"]["s_per_mp"] / row["denoise"]["s_per_mp"], 1)
                row["faster_than_bm3d_cpu"] = round(row["bm3d"]["cpu_s_per_mp"] / (run["cpu_s"] / megapixels), 1)
        if case == "c" and not args.no_seams:
            print("  seam check ...", file=sys.stderr)
            row["seams"] = seam_check(next(p for p in folder.iterdir() if not p.name.startswith(".")), workdir,
                                      model["arg"], args.sigma, args.device)
        if args.profile:
            print("  profile run ...", file=sys.stderr)
            profile = workdir / f"profile-{case}.json"
            row["profile_run"] = run_denoise(folder, workdir / "out" / f"profile-{case}", model["arg"], args.sigma,
                                             args.device, extra, profile=profile)
            row["profile"] = json.loads(profile.read_text())
        cases[key] = row
        results["invocations"][-1].update(finished=common.now(), load_end=common.load())
        common.save_json(Path(args.out), results)  # after every case: a long run keeps what it measured
        print(render([row]))

    print(f"\nwrote {args.out}", file=sys.stderr)
    if scratch is not None:
        scratch.cleanup()
    return 0


def render(rows: list[dict]) -> str:
    lines = [["case", "images", "MP", "floor img/s", "floor MP/s", "img/s", "MP/s", "x floor", "peak RSS MiB",
              "s/MP", "BM3D s/MP", "x faster than BM3D"]]
    for row in rows:
        floor, run = row["floor"], row["denoise"]
        lines.append([f"({row['case']}) {row['what']}", row["images"], f"{row['megapixels']:.1f}",
                      f"{floor['images_per_s']:.1f}", f"{floor['megapixels_per_s']:.3f}", f"{run['images_per_s']:.2f}",
                      f"{run['megapixels_per_s']:.3f}", f"{row['ratio_to_floor']:.1f}", f"{run['peak_rss_mib']:.0f}",
                      f"{run['s_per_mp']:.2f}", f"{row['bm3d']['s_per_mp']:.0f}" if "bm3d" in row else "-",
                      f"{row['faster_than_bm3d']:.0f}" if "faster_than_bm3d" in row else "-"])
    return common.table(lines)


if __name__ == "__main__":
    sys.exit(main())
