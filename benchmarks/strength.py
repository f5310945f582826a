"""What ``--strength`` does to quality, and how long ``denoise compare`` takes.

  python benchmarks/strength.py --data ../shared/datasets/set12

1. The clean images get the protocol's noise (per-image seed of ``denoise eval``, rounded,
   clipped, PNG), then ``denoise run`` with its defaults (``--sigma auto``) denoises them once
   without ``--strength`` and once per strength. Each output folder is scored by ``denoise eval
   --denoised`` (PSNR peak 255, SSIM), and the outputs of ``--strength 1`` are compared byte for
   byte with the defaults'.
2. ``denoise compare`` makes its sheet of the example images (``examples/noisy``) with its
   defaults; its wall time, CPU time and peak RSS are recorded.

Writes benchmarks/results/strength.json; ``benchmarks/report.py`` renders it in docs/results.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Folder of clean images (e.g. ../shared/datasets/set12).")
    parser.add_argument("--label", default=None, help="The data set's name in the table (default: the folder's).")
    parser.add_argument("--sigma", type=float, default=25.0, help="Gaussian noise level added (0-255 units).")
    parser.add_argument("--strengths", default="0.5,1,1.5,2", help="Comma list of --strength values.")
    parser.add_argument("--examples", default=str(common.REPO / "examples" / "noisy"),
                        help="Images for the `denoise compare` timing (none: skip it).")
    parser.add_argument("--out", default=str(common.RESULTS / "strength.json"))
    args = parser.parse_args(argv)
    data = Path(args.data)
    label = args.label or {"set12": "Set12", "mcmaster18": "McMaster18"}.get(data.name, data.name)
    denoise = common.denoise_command()
    started, load_start = common.now(), common.load()
    rows = []
    with tempfile.TemporaryDirectory(prefix="denoise-strength-") as scratch:
        work = Path(scratch)
        spec = common.parse_noise(f"{args.sigma:g}")
        images = common.load_folder(data)
        for name, clean in images:
            common.save_png(common.noisy_copy(clean, name, spec), (work / "noisy" / name).with_suffix(".png"))
        settings = [None, *(float(value) for value in args.strengths.split(","))]
        for strength in settings:
            tag = "default" if strength is None else f"strength-{strength:g}"
            report = work / f"{tag}.json"
            command = [*denoise, "run", str(work / "noisy"), str(work / tag), "--quiet", "--format", "png",
                       "--report", str(report), *([] if strength is None else ["--strength", f"{strength:g}"])]
            timed = common.run_timed(command)
            if timed["returncode"] != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{timed['stderr']}")
            scored = common.run_timed([*denoise, "eval", str(data), "--sigma", f"{args.sigma:g}", "--denoised",
                                       str(work / tag), "--json"])
            if scored["returncode"] != 0:
                raise SystemExit(f"eval of {tag} failed:\n{scored['stderr']}")
            results = json.loads(scored["stdout"])
            summary = json.loads(report.read_text())["summary"]
            files = json.loads(report.read_text())["files"]
            row = {"dataset": label, "noise": common.noise_label(spec), "strength": strength, "images": len(images),
                   "psnr": round(results["mean"]["psnr"], 4), "ssim": round(results["mean"]["ssim"], 5),
                   "noisy_psnr": round(results["mean"]["noisy_psnr"], 4), "seconds": summary["seconds"],
                   "cpu_s": timed["cpu_s"], "precision": summary.get("precision"),
                   "ensemble": max((entry.get("ensemble") or 1 for entry in files), default=1),
                   "recorded_strength": summary.get("strength"),
                   "command": " ".join(["denoise", *command[len(denoise):]]).replace(str(work), "WORK"),
                   "load": timed["load_after"], "digest": digest(work / tag)}
            rows.append(row)
            print(f"{tag:14s} PSNR {row['psnr']:.2f}  SSIM {row['ssim']:.4f}  {row['seconds']:.1f} s", file=sys.stderr)
        default = rows[0]
        for row in rows[1:]:
            row["same_bytes_as_default"] = row["digest"] == default["digest"]
            row["psnr_change"] = round(row["psnr"] - default["psnr"], 4)
        for row in rows:
            del row["digest"]
        compare = None
        if args.examples != "none":
            examples = Path(args.examples)
            command = [*denoise, "compare", str(examples), "--out", str(work / "sheet.png")]
            timed = common.run_timed(command)
            if timed["returncode"] != 0:
                raise SystemExit(f"denoise compare failed:\n{timed['stderr']}")
            compare = {"command": " ".join(["denoise", "compare", str(examples.relative_to(common.REPO))
                                            if examples.is_relative_to(common.REPO) else str(examples),
                                            "--out", "sheet.png"]),
                       "images": sum(1 for path in examples.iterdir() if path.is_file()),
                       "wall_s": timed["wall_s"], "cpu_s": timed["cpu_s"], "peak_rss_mib": timed["peak_rss_mib"],
                       "load_before": timed["load_before"], "output": timed["stdout"].strip()}
            print(f"compare: {timed['wall_s']:.1f} s wall, {timed['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    arguments = argv if argv is not None else sys.argv[1:]
    results = {
        "machine": common.machine(),
        "invocations": [{"command": " ".join(["python", "benchmarks/strength.py", *arguments]),
                         "started": started, "finished": common.now(), "load_start": load_start,
                         "load_end": common.load()}],
        "protocol": "clean uint8 -> + N(0, sigma^2) (per-image seed of denoise eval) -> round -> clip -> PNG -> "
                    "`denoise run` defaults (--sigma auto) with and without --strength -> `denoise eval --denoised`",
        "rows": rows,
        "compare": compare,
    }
    common.save_json(Path(args.out), results)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
