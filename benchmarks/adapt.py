"""`denoise adapt` against the defaults: adapt on noisy images alone, then `denoise run --model`.

Cases (``--cases``, in this order by default):

- ``cc15``: the 15 real camera photos of CC15 (``*_real``), scored against their ``*_mean``; the
  defaults are `denoise run` as it is and with ``--noise correlated``, the better of them counts;
- ``poisson10``, ``speckle``, ``blurred25``, ``sigma25``: Set12 with Poisson noise at peak 10,
  speckle (``denoise add-noise --noise speckle:0.2``), white Gaussian noise
  blurred over two pixels (the mean of each 2x2 block of white noise, scaled back to sigma 25) and
  white Gaussian noise at sigma 25 (what the shipped models learned), each made by the benchmark
  protocol's seeds; the defaults are `denoise run` as it is (and for ``blurred25``, as for
  ``cc15``, with ``--noise correlated`` too: the better counts).

Every command runs as a subprocess and is timed (wall seconds, on a shared machine). Rows merge
into ``results/adapt.json`` by case. Inputs and models go to ``--workdir`` (default a temporary
folder); nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import (RESULTS, denoise_command, load_folder, load_json, machine, merge_rows, noisy_copy, now,
                    parse_noise, psnr, read_uint8, run_timed, save_json, save_png, table)
from denoise.noise import seed_for

CASES = ("cc15", "poisson10", "sigma25", "speckle", "blurred25")
OUTPUT = RESULTS / "adapt.json"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "adapt.md"
LABELS = {"cc15": "CC15 real camera noise (15 photos, against their means)",
          "poisson10": "Set12, Poisson at peak 10", "speckle": "Set12, speckle 0.2",
          "blurred25": "Set12, Gaussian sigma 25 blurred over two pixels", "sigma25": "Set12, white Gaussian sigma 25"}


# Further `denoise adapt` options measured on a case, beside its defaults: on CC15, adapt keeps the
# photo model; --correlated yes shows what learning on the phases would give instead.
ALSO = {"cc15": {"--correlated yes": ["--correlated", "yes"]}}

TARGETS = {  # case -> (the goal, whether a row meets it)
    "cc15": ("at least 0.5 dB over the better default, adapt + run within 10 minutes",
             lambda row: row["gain_db"] >= 0.5 and row["adapt_seconds"] + row["run_seconds"] <= 600),
    "poisson10": ("at least 1 dB over the default", lambda row: row["gain_db"] >= 1.0),
    "speckle": ("at least 1 dB over the default", lambda row: row["gain_db"] >= 1.0),
    "blurred25": ("at least 1 dB over the better default", lambda row: row["gain_db"] >= 1.0),
    "sigma25": ("no more than 0.1 dB below the default", lambda row: row["gain_db"] >= -0.1),
}


def blurred(clean: np.ndarray, name: str, sigma: float = 25.0) -> np.ndarray:
    """Gaussian noise correlated over two pixels: white noise averaged over each pixel's 2x2
    block (a factor 2 in standard deviation, scaled back), added, rounded, clipped."""
    rng = np.random.default_rng(seed_for(name, 0))
    white = rng.normal(0.0, 1.0, (clean.shape[0] + 1, clean.shape[1] + 1) + clean.shape[2:])
    noise = (white[:-1, :-1] + white[1:, :-1] + white[:-1, 1:] + white[1:, 1:]) / 2.0 * sigma
    return np.clip(np.round(clean.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def inputs_for(case: str, datasets: Path, workdir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The noisy folder of a case and the references by file name."""
    folder = workdir / case / "noisy"
    references = {}
    if case == "cc15":
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted((datasets / "cc15").glob("*_real.png")):
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
            references[path.name] = read_uint8(path.with_name(path.name.replace("_real", "_mean")))
        return folder, references
    for name, clean in load_folder(datasets / "set12"):
        if case == "blurred25":
            noisy = blurred(clean, name)
        else:
            spec = parse_noise({"poisson10": "poisson:10", "sigma25": "25", "speckle": "speckle:0.2"}[case])
            noisy = noisy_copy(clean, name, spec)
        save_png(noisy, folder / name)
        references[name] = clean
    return folder, references


def score(folder: Path, references: dict[str, np.ndarray]) -> float:
    return float(np.mean([psnr(reference, read_uint8(folder / name)) for name, reference in references.items()]))


def timed(arguments: list[str]) -> dict:
    result = run_timed(["nice", "-n", "10", *denoise_command(), *arguments])
    if result["returncode"] != 0:
        sys.exit(f"failed: denoise {' '.join(arguments)}\n{result.get('stderr', '')[-2000:]}")
    return result


def measure(case: str, datasets: Path, workdir: Path, minutes: float) -> dict:
    noisy, references = inputs_for(case, datasets, workdir)
    row = {"case": case, "images": len(references), "noisy_psnr": round(score(noisy, references), 3),
           "minutes_asked": minutes, "defaults": {}}
    variants = {"run": []}
    if case in ("cc15", "blurred25"):  # noise spanning several pixels: the shipped treatment for it counts too
        variants["run --noise correlated"] = ["--noise", "correlated"]
    for label, extra in variants.items():
        out = workdir / case / label.replace(" ", "_").replace("--", "")
        result = timed(["run", str(noisy), str(out), "-q", "--overwrite", *extra])
        row["defaults"][label] = {"psnr": round(score(out, references), 3), "seconds": round(result["wall_s"], 1)}
    best = max(row["defaults"].values(), key=lambda each: each["psnr"])
    row["best_default_psnr"] = best["psnr"]
    row.update(adapt_and_run(noisy, references, workdir / case / "adapted", minutes, []))
    row["gain_db"] = round(row["adapted_psnr"] - row["best_default_psnr"], 3)
    for label, extra in ALSO.get(case, {}).items():
        also = adapt_and_run(noisy, references, workdir / case / f"adapted_{label.strip('-').replace(' ', '_')}",
                             minutes, extra)
        row.setdefault("also", {})[label] = {**also, "gain_db": round(also["adapted_psnr"] - row["best_default_psnr"], 3)}
    return row


def adapt_and_run(noisy: Path, references: dict, folder: Path, minutes: float, extra: list[str]) -> dict:
    """`denoise adapt` with ``extra`` options, then `denoise run --model` with what it wrote: the scores and times."""
    model = folder / "mine.keras"
    adapted = timed(["adapt", str(noisy), "--out", str(model), "--minutes", f"{minutes:g}", "-q", *extra])
    summary = json.loads(adapted["stdout"].strip().splitlines()[-1])
    out = folder / "run"
    ran = timed(["run", str(noisy), str(out), "--model", str(model), "-q", "--overwrite"])
    return dict(adapted_psnr=round(score(out, references), 3), adapt_seconds=round(adapted["wall_s"], 1),
                adapt_training_seconds=summary["seconds"], run_seconds=round(ran["wall_s"], 1), adapt_summary=summary)


HERE_DOC = """
# `denoise adapt`: learning a folder's own noise

<!-- generated by benchmarks/adapt.py from benchmarks/results/adapt.json: edit there -->

`denoise adapt NOISY... --out mine.keras` fine-tunes a shipped model on noisy images alone and
writes a model for `denoise run --model mine.keras`. This page says how, and what it gains.

## How it learns without clean images

- **Pairs from one noisy image (Neighbor2Neighbor).** From each 2x2 cell of a noisy crop two
  different pixels are picked at random: one goes into a half-size input, the other into a
  half-size target. Their noise is independent and their content nearly the same, so the squared
  error from the network's output on the input to the target is, on average, the noise's variance
  plus the network's own error: lowering it lowers the error. The shipped U-Nets train on these
  pairs as they are, through Keras `fit` on random crops (128 pixels, so pairs of 64; batches of 8;
  random turns and mirrors).
- **Targets corrected for the neighbour's content.** The two pixels of a cell differ in content
  too, and a network trained on plain pairs learns to blur a little: on white noise at sigma 25 it
  lost 0.44 dB against the shipped model it started from, although its self-supervised loss fell.
  Each image is first denoised once by the starting model, and the target is moved by that
  estimate's difference between the two sub-images: it keeps the second sub-image's noise but
  takes the first one's content, as Noise2Noise would (the aim of Neighbor2Neighbor's regulariser,
  here with the starting model's fixed estimate, at no cost per step).
- **Noise wider than a pixel.** Real camera noise (demosaiced, processed) and blurred noise are
  correlated between neighbours, and a pair from one cell would share it. Read on the four phases
  of every other pixel, such noise is 2 to 10 times the level read on the image, white noise
  1.01 times: above 1.6 (the median over the images; `--correlated` overrides) adapt learns on the
  phases, where the noise is close to independent again, and the written model runs its network
  on the phases of its input itself, so `run --model` needs no option.
- **The same input as `run`.** Each image is prepared exactly as `run` prepares it
  (`treatments.prepare`: photon noise stabilised, the value range stretched) and the network is
  told the level `run` reads on the whole image. `run --model mine.keras` therefore shows the
  model the same pixels and tells it the same level. A `run --noise KIND` to come is given to
  adapt as `--noise KIND` (the manifest entry records it as `run_noise`).
- **Fine-tuning gently.** Adam at 5e-5 after 50 steps of warm-up: a fresh optimiser at the rates
  of training from scratch knocks a trained model back before it learns anything new.
- **Validation without clean images.** One crop of each image (or phase), up to 32, is held back
  and never trained on; its pairs are fixed. Every 25 steps the self-supervised loss on them is
  measured; the best model so far is written to `--out` with its manifest entry. Adapting stops at
  `--minutes` or after 30 validations without improvement. The starting model's own loss is the
  first point of the curve, and the adapted model is written only if its loss is at least 0.2 dB
  below it; else the starting model is written unchanged. The margin is there because a loss on
  half-size pairs overstates small gains: on white Gaussian noise at sigma 25, which the shipped
  models learned, 3,725 steps on corrected pairs (written regardless of the margin) lowered it by
  0.09 dB while the PSNR of `run` fell by 0.35 dB (plain pairs: 0.44 dB); on Poisson noise at
  peak 10, 0.06 dB and 0.33 dB. On speckle, before `run` stabilised it, the loss fell by 0.22
  dB and the PSNR rose by 0.28 dB (25.95 to 26.22 dB on Set12).

## Limits

- For noise that spans several pixels, the network learns on the phases, and its validation loss
  compares it with the starting model on the phases, not with what `run` does on the whole image.
  Photos with such noise (a camera's, or grain enlarged with its image) go through
  `color-photo` or `gray-photo` in `run`, models that learned that noise on whole images: a model
  adapted on the phases loses to them (on CC15: the `--correlated yes` row below). So where `run`
  would give the images one of them, adapt writes it unchanged and says so; `--correlated yes`
  adapts on the phases anyway.
- On noise blurred over two pixels, the phases alone lose resolution that adapting on them cannot
  win back: before `gray-photo`, adapting on them did not pass the margin (1,675 steps) and
  `run --noise correlated` (27.32 dB) stayed far ahead of the adapted model. `run` now sends
  those images to `gray-photo` (27.46 dB), which adapt keeps.
- Photon noise and speckle are stabilised before the model, as `run` does, and the shipped
  models already clean the stabilised noise about as well as the pairs can teach: adapting keeps
  the start (on speckle the loss fell by 0.15 dB, under the margin).

## Measurements
"""

def kept(summary: dict) -> str:
    if not summary["adapted"]:
        return "start model" if summary["steps"] else "start model, not adapted (made for this noise)"
    return "adapted, on phases" if summary["correlated"] else "adapted"


def render(results: dict) -> None:
    """docs/adapt.md: the method, then a table of every case measured (the rest named as not measured)."""
    rows = {row["case"]: row for row in results.get("rows", [])}
    lines = [line for line in (HERE_DOC.strip() + "\n").splitlines()]
    lines += ["", "| case | noisy | best default | adapt + run | gain | adapt (min) | steps | kept | run (s) |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for case in CASES:
        row = rows.get(case)
        if row is None:
            lines.append(f"| {LABELS[case]} | not measured | | | | | | | |")
            continue
        best = max(row["defaults"], key=lambda label: row["defaults"][label]["psnr"])
        summary = row["adapt_summary"]
        lines.append(f"| {LABELS[case]} | {row['noisy_psnr']:.2f} | {row['best_default_psnr']:.2f} (`{best}`) | "
                     f"{row['adapted_psnr']:.2f} | {row['gain_db']:+.2f} dB | {row['adapt_seconds'] / 60:.1f} "
                     f"(`--minutes {row['minutes_asked']:g}`) | "
                     f"{summary['steps']} | {kept(summary)} | {row['run_seconds']:.0f} |")
        for label, also in row.get("also", {}).items():
            lines.append(f"| ... with `{label}` | | | {also['adapted_psnr']:.2f} | {also['gain_db']:+.2f} dB | "
                         f"{also['adapt_seconds'] / 60:.1f} | {also['adapt_summary']['steps']} | "
                         f"{kept(also['adapt_summary'])} | {also['run_seconds']:.0f} |")
    machines = {row["machine"].get("cpu", "?") for row in rows.values() if isinstance(row.get("machine"), dict)}
    lines += ["", f"PSNR in dB, the mean over the images. Measured with `python benchmarks/adapt.py --cases CASE "
                  f"--minutes M` on {', '.join(sorted(machines)) or '?'}; "
                  "adapt (min) is the wall time of the whole `denoise adapt` command, start-up and reading "
                  "included; run (s) that of `denoise run --model` on all the images. The machine was shared "
                  "with other jobs, so times vary." if rows else ""]
    lines += ["", "## Against the targets", ""]
    for case, (goal, met) in TARGETS.items():
        row = rows.get(case)
        verdict = "not measured" if row is None else ("met" if met(row) else "not met") + f" ({row['gain_db']:+.2f} dB" + (
            f", adapt + run {(row['adapt_seconds'] + row['run_seconds']) / 60:.1f} minutes)" if case == "cc15" else ")")
        lines.append(f"- {LABELS[case]}: {goal}: **{verdict}**.")
    DOCS.write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--minutes", type=float, default=8.0, help="`denoise adapt --minutes` for each case")
    parser.add_argument("--render", action="store_true", help="only rewrite docs/adapt.md from the JSON")
    args = parser.parse_args()
    if args.render:
        render(load_json(OUTPUT))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="denoise-adapt-"))
    results = load_json(OUTPUT)
    for case in [case for case in args.cases.split(",") if case]:
        if case not in CASES:
            sys.exit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        row = measure(case, args.datasets, workdir, args.minutes)
        row.update(measured=now(), machine=machine())
        results["rows"] = merge_rows(results.get("rows", []), [row], ("case",))
        save_json(OUTPUT, results)
        render(results)
        print(table([["case", "noisy", "best default", "adapted", "gain (dB)", "adapt (s)", "run (s)"],
                     [case, f"{row['noisy_psnr']:.2f}", f"{row['best_default_psnr']:.2f}",
                      f"{row['adapted_psnr']:.2f}", f"{row['gain_db']:+.2f}", f"{row['adapt_seconds']:.0f}",
                      f"{row['run_seconds']:.0f}"]]), flush=True)


if __name__ == "__main__":
    main()
