"""Render the benchmark results as markdown tables and the quality-vs-speed plot.

  python benchmarks/report.py   # reads benchmarks/results/*.json, writes docs/results.md, docs/real_noise.md
                                # and docs/quality_vs_speed.png

docs/results.md is where every measured figure of the project lives (README links to it); nothing is measured here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DOCS = common.REPO / "docs"
PEER_ORDER = ["bm3d", "opencv-nlm", "skimage-nlm", "skimage-tv", "skimage-wavelet", "median", "noisy"]


def method_order(method: str) -> tuple:
    if method.startswith("denoise:"):
        parts = method.split(":")  # denoise:MODEL:true|auto[:ensemble[=N]][:noise=KIND]
        return (0, parts[1], parts[2:] != ["true"], len(parts))
    return (1, PEER_ORDER.index(method) if method in PEER_ORDER else 99, "")


def short_label(row: dict) -> str:
    if row["method"].startswith("denoise:"):
        _, model, sigma, *extras = row["method"].split(":")
        options = "".join(" --ensemble" if extra == "ensemble" else f" --{extra.replace('=', ' ')}" for extra in extras)
        if sigma == "default":  # `denoise run`'s defaults: say what they chose on the measuring machine
            return f"**denoise `{model}`**, defaults ({row.get('precision', 'float32')} x{row.get('ensemble', 1)}){options}"
        return f"**denoise `{model}`**, sigma {sigma}{options}"
    return row["label"]


def fmt_seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def quality_tables(quality: dict) -> list[str]:
    """One table per data set and way of storing the noisy files (quality.py --stored-as)."""
    rows = [row for row in quality.get("rows", []) if "error" not in row]
    lines = []
    groups = []
    for row in rows:
        group = (row["dataset"], row["noise"].partition(", ")[2])
        if group not in groups:
            groups.append(group)
    for dataset, stored in groups:
        subset = [row for row in rows if row["dataset"] == dataset and row["noise"].partition(", ")[2] == stored]
        noises = []
        for row in subset:
            if row["noise"] not in noises:
                noises.append(row["noise"])
        noises.sort(key=noise_order)
        first = subset[0]
        lines.append(f"**{dataset}**{', noisy images ' + stored if stored else ''} ({first['images']} images, "
                     f"{first['megapixels']:.2f} MP, {'colour' if first['colour'] else 'grey'}): PSNR dB / SSIM, and "
                     f"wall seconds per megapixel (mean over the noise levels)\n")
        header = ["method", *(noise.partition(", ")[0] for noise in noises), "s/MP", "CPU s/MP"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        methods = sorted({row["method"] for row in subset}, key=lambda method: (method_order(method), method))
        best = {noise: max((row["psnr"] for row in subset if row["noise"] == noise and row["method"] != "noisy"), default=None)
                for noise in noises}
        for method in methods:
            cells, seconds, cpu = [], [], []
            label = None
            for noise in noises:
                match = next((row for row in subset if row["method"] == method and row["noise"] == noise), None)
                if match is None:
                    cells.append("")
                    continue
                label = label or short_label(match)
                text = f"{match['psnr']:.2f} / {match['ssim']:.3f}"
                cells.append(f"**{text}**" if match["psnr"] == best[noise] else text)
                seconds.append(match["s_per_mp"])
                cpu.append(match["cpu_s_per_mp"])
            lines.append("| " + " | ".join([label, *cells, fmt_seconds(float(np.mean(seconds))),
                                            fmt_seconds(float(np.mean(cpu)))]) + " |")
        lines.append("")
    return lines


def strength_table(results: dict) -> list[str]:
    """--strength against the defaults (benchmarks/strength.py), and the time of `denoise compare`."""
    from denoise import strength

    rows = results.get("rows", [])
    if not rows:
        return []
    first = rows[0]
    lines = [f"#### Strength on {first['dataset']} at {first['noise']}", "",
             f"`denoise run` with its defaults (`--sigma auto`, {first.get('precision') or 'float32'} "
             f"x{first.get('ensemble') or 1}) and `--strength S`, {first['images']} images; PSNR dB / SSIM, and the "
             "change against the defaults. Below 1 a share of the input is blended back into the output; above 1 "
             "the model is told more than the level it would be told (`denoise/strength.py`)."
             + (f" Measured on {results['machine']['cpu']}, {results['machine']['cores']} cores."
                if results.get("machine") else ""), "",
             "| `--strength` | what changes | PSNR / SSIM | against the defaults |", "|---|---|---:|---:|"]
    for row in rows:
        value = row["strength"]
        if value is None:
            what, change = "nothing: the defaults", ""
        elif value < 1:
            what = f"{strength.kept_share(value):.0%} of the input blended back"
        elif value == 1:
            what = "nothing" + (": the same bytes as the defaults" if row.get("same_bytes_as_default") else
                                ": OUTPUTS DIFFER from the defaults")
        else:
            what = f"told {strength.level_factor(value):g} x the level"
        if value is not None:
            change = f"{row['psnr_change']:+.2f} dB"
        label = "(none)" if value is None else f"{value:g}"
        lines.append(f"| {label} | {what} | {row['psnr']:.2f} / {row['ssim']:.3f} | {change} |")
    lines.append("")
    compare = results.get("compare")
    if compare:
        lines.append(f"`{compare['command']}` ({compare['images']} images, the default four strengths): "
                     f"{compare['wall_s']:.1f} s wall, {compare['cpu_s']:.1f} CPU s, peak RSS "
                     f"{compare['peak_rss_mib']:.0f} MiB, start-up and model loading included.")
        lines.append("")
    return lines


def noise_order(noise: str) -> tuple:
    """Gaussian levels first, by sigma; then the other noises by name."""
    level = noise.partition(", ")[0]
    return (0, float(level.split()[1]), "") if level.startswith("sigma") else (1, 0.0, level)


def arithmetic_label(row: dict) -> str:
    """How the run computed where not float32 once: its precision, and its self-ensemble."""
    precision, ensemble = row.get("precision") or "float32", row.get("ensemble") or 1
    if (precision, ensemble) == ("float32", 1):
        return ""
    return f", {precision}" + (f" x{ensemble}" if ensemble > 1 else "")


def throughput_table(throughput: dict) -> list[str]:
    cases = throughput.get("cases", {})
    if not cases:
        return []
    lines = ["| case | model | images | MP | floor img/s | floor MP/s | `denoise run` img/s | MP/s | x floor (wall) | "
             "x floor (CPU) | x floor w/o start-up | peak RSS | BM3D s/MP | `denoise` s/MP | x faster than BM3D |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(cases):
        row = cases[key]
        if "floor" not in row:
            continue
        floor, run = row["floor"], row["denoise"]
        bm3d = row.get("bm3d")
        lines.append("| " + " | ".join([
            f"({row['case']}) {row['what']}", f"`{row['model']}`" + (f" (`{row['serves']}`)" if row.get("serves") else "")
            + arithmetic_label(row), f"{row['images']:,}", f"{row['megapixels']:.1f}",
            f"{floor['images_per_s']:.1f}", f"{floor['megapixels_per_s']:.2f}", f"{run['images_per_s']:.2f}",
            f"{run['megapixels_per_s']:.3f}", f"{row['ratio_to_floor']:.1f}", f"{row['ratio_to_floor_cpu']:.1f}",
            f"{row['ratio_to_floor_excluding_startup']:.1f}", f"{run['peak_rss_mib']:.0f} MiB",
            f"{bm3d['s_per_mp']:.0f}" if bm3d else "-", f"{run['s_per_mp']:.2f}",
            f"{row['faster_than_bm3d']:.0f}x (CPU {row['faster_than_bm3d_cpu']:.0f}x)" if bm3d else "-",
        ]) + " |")
    return lines


def profile_table(throughput: dict) -> list[str]:
    cases = {key: row for key, row in sorted(throughput.get("cases", {}).items()) if "profile" in row}
    if not cases:
        return []
    stages = []
    for row in cases.values():
        for stage in row["profile"]["stages"]:
            if stage not in stages:
                stages.append(stage)
    header = ["stage", *[f"({row['case']}) `{row['model']}`, {row['images']:,} image(s), {row['megapixels']:.1f} MP"
                         for row in cases.values()]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(cases)) + "|"]
    for stage in stages:
        cells = []
        for row in cases.values():
            entry = row["profile"]["stages"].get(stage)
            cells.append("" if entry is None else f"{entry['wall_s']:.2f} s wall / {entry['thread_cpu_s']:.2f} s CPU")
        lines.append("| " + " | ".join([stage, *cells]) + " |")
    lines.append("| process total | " + " | ".join(
        f"{row['profile']['wall_s']:.1f} s wall / {row['profile']['process_cpu_s']:.1f} s CPU" for row in cases.values()) + " |")
    lines.append("| unattributed CPU (model arithmetic in TF's pool + Python/tf.data) | " + " | ".join(
        f"{row['profile']['unattributed_cpu_s']:.1f} s" for row in cases.values()) + " |")
    return lines


X = "cpu_s_per_mp"  # CPU seconds: the wall clock of the shared machine swung with its load


def plot(quality: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in quality.get("rows", []) if "error" not in row and row["method"] != "noisy"]
    panels = []
    for prefix in ("Set12", "McMaster18", "Fashion-MNIST"):
        candidates = [d for d in dict.fromkeys(row["dataset"] for row in rows) if d.startswith(prefix)
                      and any(r["dataset"] == d and r["noise"] == "sigma 25" for r in rows)]
        # Prefer the subset that has BM3D (a limited run), else the full set.
        with_bm3d = [d for d in candidates if any(r["dataset"] == d and r["method"] == "bm3d" for r in rows)]
        if with_bm3d or candidates:
            panels.append(((with_bm3d or candidates)[0], "sigma 25"))
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), squeeze=False)
    for axis, (dataset, noise) in zip(axes[0], panels):
        subset = sorted([row for row in rows if row["dataset"] == dataset and row["noise"] == noise],
                        key=lambda row: method_order(row["method"]))
        for index, row in enumerate(subset):
            ours = row["method"].startswith("denoise:")
            axis.scatter(row[X], row["psnr"], s=60 if ours else 40, marker="*" if ours else "o",
                         color="tab:red" if ours else "tab:blue", zorder=3)
            label = short_label(row).replace("**", "").replace("`", "")
            axis.annotate(label, (row[X], row["psnr"]), textcoords="offset points",
                          xytext=(5, 4 if index % 2 == 0 else -10), fontsize=7)
        noisy = next((r for r in quality["rows"] if r["dataset"] == dataset and r["noise"] == noise and r["method"] == "noisy"), None)
        if noisy:
            axis.axhline(noisy["psnr"], color="grey", linestyle=":", linewidth=1)
            axis.text(min(r[X] for r in subset), noisy["psnr"] + 0.1,
                      "noisy input", fontsize=7, color="grey")
        axis.set_xscale("log")
        axis.set_xlabel("CPU seconds per megapixel (all threads, log scale)")
        axis.set_ylabel("PSNR (dB)")
        axis.set_title(f"{dataset}, Gaussian {noise}")
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return True


def real_noise_table(results: dict) -> list[str]:
    """`--sigma auto` on real camera noise (benchmarks/real_noise.py): CC15, and white noise unchanged."""
    cc15 = results.get("cc15")
    if not cc15:
        return []
    lines = ["#### Real camera noise: CC15", "",
             "`denoise run` with the default model and `--sigma auto` on the 15 real-noise crops of CC15 (one shot of "
             "a Canon 5D Mark III, Nikon D600 or D800 at ISO 1600-6400, the camera's own JPEG pipeline), PSNR / SSIM "
             "against the mean of about 500 shots ([docs/real_noise.md](real_noise.md) has more, with crops). "
             "\"calibrated\" is `--sigma auto` now (`denoise/calibrate.py`: for "
             "noise that spans several pixels, a level fitted on synthetic camera noise, never on CC15); \"before\" "
             "the estimate it replaced; fixed levels and the best level per image chosen by the truth show how far "
             "the level alone goes." + (" " + measured_on(results) if results.get("machine") else ""), "",
             "| method | PSNR / SSIM | levels told |", "|---|---:|---|"]
    names = {"noisy": "noisy input", "before": "before (estimate_level)", "calibrated": "calibrated (the default)",
             "calibrated, white-noise model": "calibrated, white-noise model (`--noise gaussian`)",
             "noise camera": "`--noise camera`", "noise correlated": "`--noise correlated`",
             "cbm3d": "CBM3D told each image's RMS of real - mean"}
    for key, row in cc15.items():
        if not isinstance(row, dict) or "psnr" not in row:
            continue
        told = row.get("told") or row.get("levels")
        told = f"{min(told):.1f}-{max(told):.1f}" if told else ""
        ssim = f" / {row['ssim']:.3f}" if "ssim" in row else ""
        lines.append(f"| {names.get(key, key)} | {row['psnr']:.2f}{ssim} | {told} |")
    lines.append("")
    white = results.get("white", {})
    if white:
        same = all(abs(row["before"]["psnr"] - row["calibrated"]["psnr"]) < 1e-3 for row in white.values())
        lines.append("White Gaussian noise (`--sigma auto`, PSNR before / calibrated): "
                     + "; ".join(f"{name} {row['before']['psnr']:.2f} / {row['calibrated']['psnr']:.2f}"
                                 for name, row in white.items())
                     + (" (every image told the same level as before)." if same else "."))
        lines.append("")
    speed = results.get("speed", {})
    if speed:
        lines.append("Cost: " + "; ".join(f"{name} {value:g}" for name, value in speed.items()) + ".")
        lines.append("")
    return lines


ORACLE = "oracle (best fixed level per image, by the truth)"


def measured_on(results: dict) -> str:
    """Where real_noise.json was measured: its machine, and that of each later --only run."""
    machine = results.get("machine")
    if not machine:
        return ""
    text = f"Measured on {machine['cpu']}, {machine['cores']} cores{arithmetic(machine)}"
    for update in results.get("updates", []):
        where = update.get("machine", {})
        text += (f"; {', '.join(update['rows'])} measured again or added later on {where.get('cpu', '?')}, "
                 f"{where.get('cores', '?')} cores{arithmetic(where)}")
    return text + "."


def arithmetic(machine: dict) -> str:
    """What `--precision auto` ran in there, where the record says (older ones do not)."""
    native = machine.get("native_bfloat16")
    return "" if native is None else " (bfloat16, natively)" if native else " (float32: no native bfloat16)"


def best_fixed_level(cc15: dict) -> str | None:
    """The key of the fixed level (``level N``) with the best mean PSNR on CC15, None if none."""
    fixed = [key for key in cc15 if key.startswith("level ") and isinstance(cc15[key], dict)]
    return max(fixed, key=lambda key: (cc15[key]["psnr"], -float(key.split()[1]))) if fixed else None


def real_noise_page(results: dict, picture: str | None = None) -> list[str]:
    """docs/real_noise.md: real camera noise on CC15 (benchmarks/real_noise.py), every figure from
    its JSON; ``picture``: the crops' file name beside the page (benchmarks/real_noise_figure.py)."""
    cc15 = results.get("cc15")
    if not cc15 or "before" not in cc15 or "calibrated" not in cc15:
        return []
    count = len(cc15["images"])
    before, now = cc15["before"], cc15["calibrated"]
    noise = cc15["rms_noise"]
    oracle = cc15.get(ORACLE, {}).get("levels")
    lines = ["# Real camera noise: CC15", "",
             f"CC15 (Nam et al., CVPR 2016) is {count} crops of 512 x 512 pixels from a Canon 5D Mark III, a Nikon "
             "D600 and a Nikon D800 at ISO 1600 to 6400. Each scene has one shot as it left the camera (its own "
             "demosaicing, noise reduction, sharpening and JPEG) and the mean of about 500 shots of it, which serves "
             "as the truth. Its noise is what cameras make, not noise added to a clean image as in the rest of "
             "[results.md](results.md).", "",
             "Protocol: each noisy shot (`NAME_real.png`) is denoised as it is, with no noise level told, and the "
             "uint8 output is scored against the mean (`NAME_mean.png`): PSNR (peak 255) and SSIM (11x11 Gaussian "
             "window, sigma 1.5, data range 255, mean over the channels), averaged over the images. The `denoise` "
             "rows run in process through the code of `denoise run` with its default model and arithmetic; only "
             "what the row names differs. A method that needs a level may be told each image's RMS of "
             "real - mean (the truth's own measure of the noise), and the table says where it was.", "",
             "## Why a white-noise estimate reads camera noise low", "",
             "A camera's noise starts on the sensor as independent grain, one value per pixel of the colour "
             "mosaic. Demosaicing then fills each pixel's two missing colours from its neighbours, so each grain is "
             "spread over several pixels, and the camera's noise reduction and JPEG take away most of what is left "
             "at the finest scale. A level estimate made for white noise, such as `estimate_level` (the weakest "
             "principal components of 7x7 patches, the image's finest detail), finds little noise there and takes "
             "the spread grain for texture. On CC15 it read "
             f"{min(before['told']):.1f}-{max(before['told']):.1f} (median {np.median(before['told']):.1f}) where each "
             f"image's RMS of real - mean is {min(noise):.1f}-{max(noise):.1f} (median {np.median(noise):.1f})"
             + (f" and the fixed level the default model does best with on each image is {min(oracle)}-{max(oracle)} "
                f"(median {np.median(oracle):g})" if oracle else "")
             + ": a median of "
             f"{np.median(np.divide(noise, before['told'])):.1f} times below the RMS"
             + (f" and {np.median(np.divide(oracle, before['told'])):.1f} times below that level" if oracle else "")
             + ". Told so little, the model leaves most of the noise. `--sigma auto` now reads the level with "
             "`denoise/calibrate.py`: where the noise spans more than a pixel (a mosaic of every other pixel reads "
             "clearly more than the image), it also reads the noise at coarser scales and maps those readings to "
             "the level the model cleans best at, by a fit made on synthetic camera-pipeline noise only, never on "
             f"CC15. It now reads {min(now['told']):.1f}-{max(now['told']):.1f} (median "
             f"{np.median(now['told']):.1f}).", "",
             "Told the right level, a model trained on white noise still mistakes part of a camera's grain for "
             "texture: the grain's shape is not white noise's. So such images go to a model of their own, "
             "`color-photo`: the colour model fine-tuned on synthetic camera noise (a camera pipeline of "
             "`train_scripts/camera_pairs.py`: Poisson-Gaussian noise on a colour mosaic at levels fitted to real "
             "sensors, demosaicing, colour matrix, tone curve, noise reduction, sharpening, resizing, JPEG), told "
             "the level `--sigma auto` reads, and on clean photos, which it learns to leave as they are. It "
             "never saw CC15. Its luma is then moved halfway to that of `gray-large`, the white-noise grey model, run "
             "on the image's luma and told 1.25 times the level: on real camera noise that model leaves less grain "
             "in the luma than `color-photo` does, on flat areas as in texture, and `color-photo` keeps the colour "
             "(why, and how the weight was chosen: [notes.md](notes.md#which-model-serves-which-image)). `--report` "
             "names the route of each image: noise `photo`, model `color-photo+gray-large`.", "",
             "## Results", ""]
    if results.get("machine"):
        lines += [f"{measured_on(results)[:-1]} (`benchmarks/real_noise.py`). Levels told: the range over the images "
                  "of what the model (or CBM3D) was told, 0-255 units.", ""]
    best = best_fixed_level(cc15)
    rows = [("noisy input", "noisy", "nothing"),
            ("defaults before (`estimate_level`)", "before", "the level it reads"),
            ("**defaults now** (`--sigma auto --noise auto`: `color-photo+gray-large` where the noise spans more "
             "than a pixel)", "calibrated", "the level it reads"),
            ("`color-photo` alone (`--model color-photo`: the defaults before the luma blend)",
             "calibrated, photo model alone", "the level it reads"),
            ("the defaults before `color-photo` (the calibrated level, the white-noise model; `--noise gaussian`)",
             "calibrated, white-noise model", "the level it reads"),
            ("`--noise camera` (the camera model), defaults otherwise", "noise camera", "the level of the photon "
             "count it fits"),
            ("`--noise correlated` (the four half-size mosaics), defaults otherwise", "noise correlated",
             "the level it reads on the mosaics"),
            ("CBM3D told each image's RMS", "cbm3d", "each image's RMS of real - mean, from the truth"),
            (f"one fixed level for every image, the best of {', '.join(k.split()[1] for k in cc15 if k.startswith('level '))}",
             best, "the same level for every image"),
            ("per image, the best of those fixed levels (an oracle: chosen by the truth, a bound)", ORACLE,
             "the level that scored best against the truth")]
    base = cc15["noisy"]["psnr"] if "noisy" in cc15 else None
    lines += ["| method | what it is told | levels told | PSNR | SSIM | against the noisy input |",
              "|---|---|---:|---:|---:|---:|"]
    for label, key, told in rows:
        row = cc15.get(key) if key else None
        if not row:
            continue
        values = row.get("told") or row.get("levels")
        if key == best:
            label = label + f" (`--sigma {key.split()[1]}`)"
            values = [float(key.split()[1])]
        span = "" if not values else (f"{min(values):.1f}-{max(values):.1f}" if min(values) != max(values)
                                      else f"{values[0]:.1f}")
        ssim = f"{row['ssim']:.3f}" if "ssim" in row else ""
        gain = "" if base is None or key == "noisy" else f"{row['psnr'] - base:+.2f} dB"
        lines.append(f"| {label} | {told} | {span} | {row['psnr']:.2f} | {ssim} | {gain} |")
    lines.append("")
    if "calibrated" in cc15 and "before" in cc15:
        text = f"The defaults now gain {compared(now, before, 'on average over those before the calibration')}."
        for key, what, how in (("calibrated, white-noise model", "The photo route",
                                "over the white-noise model told the same levels"),
                               ("calibrated, photo model alone", "Its luma blend", "over `color-photo` alone")):
            if key in cc15:
                text += f" {what} gains {compared(now, cc15[key], how)}."
        lines += [text, ""]
    if picture:
        lines += ["## Crops", "",
                  "A fixed 128 x 128 crop of four of the images (one from each camera, and one at ISO 6400), shown "
                  "at twice the size with each pixel a block; every method denoised the whole 512 x 512 image. Each "
                  "panel's title is its PSNR against the mean on that crop and the level told. Made by "
                  "`python benchmarks/real_noise_figure.py --datasets ../shared/datasets`.", "",
                  f"![CC15 crops: noisy input, defaults before, defaults now, CBM3D told the RMS, mean of about 500 "
                  f"shots]({picture})", ""]
    speed = results.get("speed", {})
    per_image = [speed.get(f"{name} CPU s per CC15 image") for name in ("level_for", "estimate_level")]
    if all(value is not None for value in per_image):
        text = (f"Cost: the calibrated reading takes {per_image[0]:g} CPU seconds per 512 x 512 CC15 image against "
                f"the {per_image[1]:g} of `estimate_level` ({per_image[0] - per_image[1]:+.2f} s); no model call.")
        photo = [speed.get(f"{name} 12.6 MP CPU s") for name in ("calibrated", "before")]
        if all(value is not None for value in photo):
            text += (f" On a 12.6 MP photo the whole default run took {photo[0]:g} CPU seconds with it against "
                     f"{photo[1]:g} before ({photo[0] / photo[1]:.2f}x).")
        lines += [text, ""]
    white = results.get("white", {})
    gaussian = {name: row for name, row in white.items() if " sigma " in name}
    if gaussian:
        same = all(row["before"]["mean_told"] == row["calibrated"]["mean_told"]
                   and abs(row["before"]["psnr"] - row["calibrated"]["psnr"]) < 1e-3 for row in gaussian.values())
        if same:
            lines += [f"White noise is told what it was told before: on {', '.join(gaussian)} the calibrated default "
                      "reads the same levels as `estimate_level` and gives the same PSNR ([results.md]"
                      "(results.md#real-camera-noise-cc15)).", ""]
    clean = {name.split()[0]: row for name, row in white.items() if name.endswith(" clean")}
    if clean:
        lines += ["Clean images, no noise added, against themselves (PSNR, today's defaults / before the calibration): "
                  + "; ".join(f"{name} {row['calibrated']['psnr']:.2f} / {row['before']['psnr']:.2f} dB"
                              for name, row in clean.items())
                  + ". A clean photo's fine texture can read, on the mosaic of every other pixel, like noise that spans "
                  "more than a pixel; under 2 grey levels there (`WEAKEST_SPREAD` in `denoise/calibrate.py`) it is "
                  "told `estimate_level`'s reading and takes the white-noise route, and `color-photo` learned on "
                  "clean photos to leave them as they are.", ""]
    lines += grey_section(results.get("grey", {}))
    lines += ["Reproduce (CC15 is not part of the project: the scripts take the folder that holds `cc15/`):", "",
              "```",
              "python benchmarks/real_noise.py --datasets ../shared/datasets",
              "python benchmarks/real_noise_figure.py --datasets ../shared/datasets",
              "python benchmarks/report.py", "```", ""]
    return lines


def compared(now: dict, other: dict, how: str) -> str:
    """'X dB HOW, A to B dB per image, better on N of M': the CC15 row ``now`` against ``other``."""
    each = [a - b for a, b in zip(now["psnr_each"], other["psnr_each"])]
    return (f"{now['psnr'] - other['psnr']:.2f} dB {how}, {min(each):+.2f} to {max(each):+.2f} dB "
            f"per image, better on {sum(value > 0 for value in each)} of {len(each)}")


def grey_section(grey: dict) -> list[str]:
    """Grey images whose noise spans more than a pixel, and clean grey photos (real_noise.py's ``grey``)."""
    if not grey:
        return []
    methods = ("defaults", "before gray-photo", "noise correlated")
    rows = ["| images | n | to `gray-photo` | defaults now (`gray-photo`) | before (`--model gray-large`) | "
            "`--noise correlated` |", "|---|---:|---:|---:|---:|---:|"]
    for label, row in grey.items():
        best = max(row[method]["psnr"] for method in methods)
        cells = [f"{row[method]['psnr']:.2f} / {row[method]['ssim']:.3f}" for method in methods]
        cells = [f"**{cell}**" if row[method]["psnr"] == best else cell for cell, method in zip(cells, methods)]
        rows.append("| " + " | ".join([label, str(row["images"]), str(row["photo route"]), *cells]) + " |")
    clean = next((row for label, row in grey.items() if label.startswith("clean")), None)
    lines = ["## Grey photos", "",
             "A grey image whose noise spans more than a pixel (a camera's monochrome JPEG, a colour photo made grey, "
             "a noisy scan or photo enlarged, film grain) takes the photo route too: `gray-photo`, `gray-large` "
             "fine-tuned on the grey (luma) version of `color-photo`'s pairs, with blurred and JPEG'd white noise up "
             "to sigma 50 for a third of them, and on clean grey photos (`python train_scripts/photo_model.py "
             "--model gray-photo`). Before it, such images went to `gray-large` told the same level, which takes "
             "the grain for texture. PSNR / SSIM against the clean image (CC15: the mean's luma); \"to `gray-photo`\" "
             "counts the images the default sends there, the others take the white-noise route as before.", "",
             *rows, ""]
    if clean:
        lines += [f"Clean grey photos, against themselves: {clean['defaults']['psnr']:.2f} dB now (lowest image "
                  f"{clean['defaults']['min_psnr']:.2f}), {clean['before gray-photo']['psnr']:.2f} before (lowest "
                  f"{clean['before gray-photo']['min_psnr']:.2f}).", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", default=str(common.RESULTS / "quality.json"))
    parser.add_argument("--throughput", default=str(common.RESULTS / "throughput.json"))
    parser.add_argument("--profile", default=str(common.RESULTS / "throughput-profile.json"))
    parser.add_argument("--strength", default=str(common.RESULTS / "strength.json"))
    parser.add_argument("--real-noise", default=str(common.RESULTS / "real_noise.json"))
    parser.add_argument("--markdown", default=str(DOCS / "results.md"))
    parser.add_argument("--real-noise-page", default=str(DOCS / "real_noise.md"),
                        help="the page on real camera noise (CC15); its crops, real_noise_crops.png, beside it")
    parser.add_argument("--plot", default=str(DOCS / "quality_vs_speed.png"))
    parser.add_argument("--notes", default=str(common.RESULTS / "notes.md"),
                        help="Hand-written text appended after the tables (findings, caveats).")
    args = parser.parse_args(argv)
    quality = common.load_json(Path(args.quality))
    throughput = common.load_json(Path(args.throughput))
    profile = common.load_json(Path(args.profile))
    strengths = common.load_json(Path(args.strength))
    real_noise = common.load_json(Path(args.real_noise))
    machine = quality.get("machine") or throughput.get("machine") or common.machine()

    lines = ["## Results", ""]
    lines.append(f"Measured on {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
                 f"no GPU, Python {machine['python']}, TensorFlow {machine['versions'].get('tensorflow')}, "
                 f"bm3d {machine['versions'].get('bm3d')}, scikit-image {machine['versions'].get('scikit-image')}, "
                 f"OpenCV {machine['versions'].get('opencv-python-headless')}.")
    loads = [inv.get("load_start", [None])[0] for inv in quality.get("invocations", []) + throughput.get("invocations", [])]
    loads = [value for value in loads if value is not None]
    if loads:
        lines.append(f"The 2 cores were shared with model training and other work: the 1-minute load average was "
                     f"{min(loads):.1f}-{max(loads):.1f} during the runs (each row's load is in the JSON), so wall "
                     "times are inflated several-fold and noisy; CPU seconds are the steadier figure. "
                     "Ratios measured side by side in one run (x floor, x faster than BM3D) saw the same load.")
    lines.append("")
    models = {**quality.get("models", {}), **throughput.get("models", {})}
    if models:
        lines.append("Models:")
        for name, model in models.items():
            if name == "auto":
                continue
            if model.get("source") == "registry":
                from denoise import registry

                model = {**(registry.find(name) or {}), **model}
            if model.get("members"):
                lines.append(f"- `{name}`: the mean of {' and '.join(f'`{member}`' for member in model['members'])} "
                             f"(a grey member runs channel by channel), built at load from their files; "
                             f"{model.get('parameters', 0):,} parameters in all.")
                continue
            training = model.get("training") or {}
            parameters = f"{model['parameters']:,}" if isinstance(model.get("parameters"), int) else "?"
            lines.append(f"- `{name}`: {model.get('architecture', '?')} {model.get('model_args', '')}, "
                         f"{parameters} parameters, {model.get('channels', '?')} channel(s), trained on "
                         f"{' + '.join(Path(data).name for data in str(model.get('data', '?')).split(' + '))} "
                         f"with {model.get('noise', {}).get('type', '?')} noise "
                         f"{model.get('noise', {}).get('low', '?'):g}-{model.get('noise', {}).get('high', '?'):g}; "
                         f"{'snapshot of a run in progress' if model.get('source') != 'registry' else 'the shipped weights'}, "
                         f"{_training_length(training)} (best validation PSNR {training.get('best_val_psnr', '?')} dB), "
                         f"sha256 `{str(model.get('sha256'))[:12]}`.")
        lines.append("")
    lines += ["### Quality", "",
              "Every method denoises the same noisy uint8 PNGs (protocol: clean uint8 + N(0, sigma^2) with the "
              "per-image seed of `denoise eval`, rounded, clipped, PNG). PSNR (peak 255) and SSIM (11x11 Gaussian, "
              "data range 255) of the uint8 output against the clean uint8 image, averaged over images. Bold: best "
              "PSNR in the column. \"sigma true\": the model or peer is told the noise level (for Poisson and "
              "salt-and-pepper, the RMS of noisy - clean over the set); \"sigma auto\": `--sigma auto`. `denoise` runs "
              "through `denoise run` in a subprocess; its s/MP is the pipeline time from its report (model load, "
              "decode, sigma estimate, model, encode, write), without the 3-4 CPU-second Python/TensorFlow start-up; "
              "peers run in-process, decode + denoise + PNG encode. Peer settings: BM3D/CBM3D told sigma; OpenCV "
              "fastNlMeans h = sigma (grey) / h = hColor = 0.6 sigma (colour), 7/21; skimage NL-means as in its docs "
              "(h = 0.8 sigma_est, fast mode, 5/6); TV Chambolle weight = sigma_est / 255; wavelet BayesShrink soft.", ""]
    lines += quality_tables(quality)
    if Path(args.plot).name and plot(quality, Path(args.plot)):
        lines += [f"![PSNR against seconds per megapixel](quality_vs_speed.png)", ""]
    lines += strength_table(strengths)
    lines += real_noise_table(real_noise)
    lines += ["### Speed", "",
              "`denoise run` end to end (subprocess: start-up, model load, decode, model, encode, write) against "
              "the floor: the same files decoded and re-encoded by the same code (`denoise.io`, Pillow), formats and "
              "worker threads, no model (`benchmarks/floor.py`). x floor: wall-time ratio (lower is better); "
              "w/o start-up: the pipeline time of the report against the floor's own loop. BM3D s/MP: CBM3D on a "
              "sample of the same inputs (b: one 512x512 image; c: a 512x512 crop), decode + denoise + encode, in "
              "the same run. Peak RSS: the `denoise run` process (os.wait4).", ""]
    lines += throughput_table(throughput)
    lines.append("")
    for key in sorted(throughput.get("cases", {})):
        seams = throughput["cases"][key].get("seams")
        if seams:
            lines.append(f"Seams (c): a {seams['crop']} crop denoised in {seams.get('tile', 512)}-pixel tiles and as one tile differs by at most "
                         f"{seams['max_abs_diff']} grey level(s) (mean {seams['mean_abs_diff']:.4f}; near tile borders "
                         f"{seams['mean_abs_diff_near_tile_borders']:.4f}, away from them "
                         f"{seams['mean_abs_diff_away_from_borders']:.4f}; {seams['pixels_differing'] * 100:.2f}% of "
                         "values differ at all).")
            lines.append("")
    prof = profile_table(profile or throughput)
    if prof:
        lines += ["### Where the time goes", "",
                  "`benchmarks/profile_run.py` runs the same `denoise run` with timers around each stage "
                  "(wall seconds overlap across threads; CPU is that of the calling thread). Measured on "
                  + ("smaller runs of the same cases (" + ", ".join(
                      f"({row['case']}) {row['images']:,} images" for row in (profile or throughput)["cases"].values())
                     + ")." if profile else "the same cases."), ""]
        lines += prof
        lines.append("")
    notes = Path(args.notes)
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    lines += ["### Reproduce", "", "```"]
    commands = [inv["command"] for inv in quality.get("invocations", []) + throughput.get("invocations", [])
                + profile.get("invocations", []) + strengths.get("invocations", [])]
    seen = []
    for command in commands:
        command = re.sub(r" --workdir \S+", "", command).replace("/work/bench_work/snap/gray.keras", "../runs/gray/gray.keras")
        if command not in seen:
            seen.append(command)
    lines += seen
    lines += ["python benchmarks/report.py", "```", ""]
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text("\n".join(lines))
    print(f"wrote {args.markdown} and {args.plot}", file=sys.stderr)
    page = Path(args.real_noise_page)
    crops = page.with_name("real_noise_crops.png")
    page_lines = real_noise_page(real_noise, crops.name if crops.exists() else None)
    if page_lines:
        page.write_text("\n".join(page_lines))
        print(f"wrote {page}", file=sys.stderr)
    return 0


def _training_length(training: dict) -> str:
    """'550 epochs', plus the GPU stages' steps and minutes where there were any."""
    text = f"{training.get('epochs', '?')} epochs"
    gpu = [stage for stage in training.get("stages", []) if "device" in stage]
    if gpu:
        text += (f" and {sum(stage['steps'] for stage in gpu):,} GPU steps "
                 f"({training.get('gpu_seconds', 0) / 60:.0f} minutes on {gpu[-1]['device']})")
    return text


if __name__ == "__main__":
    sys.exit(main())
