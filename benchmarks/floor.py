"""The floor of `denoise run`: the same files decoded and re-encoded, no model.

Same libraries and code (denoise.io: Pillow decode to float32, the same encoder options, atomic
writes into a mirrored tree), same output formats (``keep``, JPEG quality 95) and the same
number of worker threads as `denoise run` uses for writing. What `denoise run` costs beyond
this is the model and the pipeline around it.

  python benchmarks/floor.py INPUT_DIR OUTPUT_DIR [--workers N] [--quality 95]

Prints a JSON summary (images, seconds, megapixels) on stdout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from pathlib import Path

from denoise import io
from denoise.plan import RunOptions


def copy_one(path: Path, target: Path, quality: int) -> int:
    decoded = io.read_image(path)
    fmt = io.EXTENSIONS[target.suffix.lower()]
    io.write_atomic(target, io.encode(decoded, decoded.pixels, fmt, quality))
    return decoded.pixels.shape[0] * decoded.pixels.shape[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--workers", type=int, default=RunOptions.workers,
                        help="Threads decoding and encoding (default: what `denoise run` uses).")
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pixels = images = 0
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        pending = set()
        for path, relative in io.iter_inputs([args.input], exclude=args.output):
            pending.add(pool.submit(copy_one, path, io.output_path(relative, args.output), args.quality))
            if len(pending) >= 4 * args.workers:  # bounded memory, as in the pipeline
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    pixels += future.result()
                    images += 1
        for future in concurrent.futures.as_completed(pending):
            pixels += future.result()
            images += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"images": images, "megapixels": round(pixels / 1e6, 4), "seconds": round(seconds, 3),
                      "workers": args.workers}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
