"""`denoise run` over a folder of very many tiny files: is the tree walked lazily, and does memory stay flat?

Makes COUNT tiny PNGs (default 100,000 of 8x8 grey, a few hundred bytes each), then runs the
command in a subprocess with a tiny untrained model (the model is not what is measured) and
prints:

- the time from launch to the first output file (TensorFlow's import is part of it; a run that
  read the whole tree first would add the walk of every file to it),
- images per second over the run and after the first output,
- the peak RSS of the run, and RSS samples along the way (flat: no per-file state kept).

    python benchmarks/many_files.py                 # 100,000 files, flat folder
    python benchmarks/many_files.py --count 10000 --nested
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_files(folder: Path, count: int, size: int, nested: bool) -> list[Path]:
    """COUNT distinct-looking files (256 different images, reused) in one folder or 1,000 per subfolder."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(256):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    names = []
    for index in range(count):
        relative = Path(f"{index // 1000:03d}", f"{index:06d}.png") if nested else Path(f"{index:06d}.png")
        path = folder / relative
        if nested and index % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[index % 256])
        names.append(relative)
    return names


def tiny_model(path: Path) -> None:
    code = ("import keras, sys; from denoise import models; keras.utils.set_random_seed(0); "
            "models.conv_autoencoder(filters=4, channels=1).save(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)


def count_outputs(folder: Path, nested: bool) -> int:
    if not folder.exists():
        return 0
    if not nested:
        return sum(1 for entry in os.scandir(folder) if entry.name.endswith(".png"))
    return sum(sum(1 for entry in os.scandir(sub.path) if entry.name.endswith(".png"))
               for sub in os.scandir(folder) if sub.is_dir())


def rss_of(pid: int) -> int:
    """Resident set size in bytes, from /proc (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=8, help="image side in pixels")
    parser.add_argument("--nested", action="store_true", help="1,000 files per subfolder instead of one flat folder")
    parser.add_argument("--workdir", type=Path, help="where the files go (default: a temporary folder, removed after)")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between progress/RSS samples")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="many_files."))
    inputs, outputs, model = workdir / "in", workdir / "out", workdir / "tiny.keras"
    try:
        shutil.rmtree(outputs, ignore_errors=True)
        started = time.time()
        if not inputs.exists():
            inputs.mkdir(parents=True)
            names = make_files(inputs, args.count, args.size, args.nested)
        else:
            names = sorted(path.relative_to(inputs) for path in inputs.rglob("*.png"))
        print(f"{len(names):,} files of {args.size}x{args.size} in {inputs} ({time.time() - started:.1f} s to make)")
        if not model.exists():
            tiny_model(model)

        first = outputs / names[0]
        command = [sys.executable, "-c", "from denoise.cli import main; main()", "run", str(inputs), str(outputs),
                   "--model", str(model), "-q", "--device", "cpu"]
        launched = time.time()
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        first_output = None
        samples = []  # (seconds, outputs so far, RSS bytes)
        peak = 0
        next_sample = launched
        while process.poll() is None:
            now = time.time()
            peak = max(peak, rss_of(process.pid))
            if first_output is None and first.exists():
                first_output = now - launched
            if now >= next_sample:
                samples.append((now - launched, count_outputs(outputs, args.nested), rss_of(process.pid)))
                next_sample = now + args.sample
            time.sleep(0.01 if first_output is None else 0.1)
        total = time.time() - launched
        stderr = process.stderr.read()
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
        done = count_outputs(outputs, args.nested)

        print(f"exit status {process.returncode}; {done:,} outputs" + (f"; stderr: {stderr.strip()[:500]}" if stderr.strip() else ""))
        print(f"time to first output   {first_output:.2f} s (from launch, TensorFlow start-up included)")
        print(f"total                  {total:.1f} s")
        print(f"images/s               {done / total:.0f} overall, "
              f"{done / max(total - (first_output or 0), 1e-9):.0f} after the first output")
        print(f"peak RSS               {max(peak, child_peak) / 2**20:.0f} MiB")
        print("RSS along the run (seconds, outputs, MiB):")
        step = max(1, len(samples) // 12)
        for seconds, count, rss in samples[::step] + ([samples[-1]] if samples and len(samples) % step != 1 else []):
            print(f"  {seconds:7.1f} {count:8,d} {rss / 2**20:7.0f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
