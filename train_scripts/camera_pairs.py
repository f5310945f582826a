"""Make training pairs of real-looking camera noise: noisy crop, its clean reference, and the level
``denoise run`` would tell a model for it.

Each pair is a clean crop of Urban100, Sun-Hays80 or BSDS colour (the held-back tenth of the first
two, by ``denoise.data.split_files``, is never used for training) through the camera pipeline of
``calibrate_levels.camera_pair`` (inverse sRGB, a random colour matrix, Poisson-Gaussian noise on
an RGGB mosaic at Brooks et al. 2019's levels, demosaicing, noise reduction, sharpening, down-scaling,
JPEG 75-96), or, for a sixth of the pairs, through white Gaussian noise blurred over a pixel or
saved as JPEG: other noise that spans more than a pixel and that ``run`` sends the same way. The
level is ``denoise.calibrate.level_for`` of the whole noisy crop, exactly as ``run`` reads it.
With ``--clean``, the photos without noise as input and target (the model learns to leave them).
With ``--grey``, each pair is then made grey (Rec. 601 luma, as a camera's monochrome mode and
Pillow's ``convert("L")`` do), the level read on the grey crop: pairs for ``gray-photo``. The luma
keeps about two thirds of independent channel noise, so the blurred and JPEG'd white noise is
drawn up to 50 there and makes a third of the pairs: grainy grey noise (a noisy scan or photo
enlarged, film grain) reaches levels colour photos' noise rarely does.
With ``--edge-nr``, the camera's luma noise reduction keeps edges (a bilateral filter) instead of
blurring them, as many cameras' does: sharp references at edges and texture, where the noise stays
(docs/notes.md has what it does to the grain and to CC15).

    python train_scripts/camera_pairs.py --data ../shared/datasets --count 16000 --seed 1 --out /tmp/pairs_train.npz
    python train_scripts/camera_pairs.py --data ../shared/datasets --count 240 --seed 2 --held-back --size 256 --out /tmp/pairs_val.npz

16,000 pairs of 128x128 take about 18 minutes on two cores, most of it the level reading.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from pathlib import Path

# One BLAS thread a worker: the level reading's small eigen-problems ran 20x slower with the
# workers' BLAS threads fighting over the cores.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibrate_levels as pipeline  # noqa: E402
from denoise import calibrate  # noqa: E402
from denoise.data import split_files  # noqa: E402

PHOTO_SETS = ("urban100", "sunhays80")
LUMA = np.array([0.299, 0.587, 0.114])


def sources(root: Path, held_back: bool) -> list[str]:
    """The clean photos: training ones (BSDS colour and all but the held-back tenth of the photo
    sets), or only that held-back tenth."""
    files = []
    for name in PHOTO_SETS:
        train, held = split_files(sorted((root / name).iterdir()))
        files += [str(path) for path in (held if held_back else train)]
    if not held_back:
        files += [str(path) for path in sorted((root / "bsds400_color").iterdir())]
    return files


def one_pair(task):
    """(path, seed, size, clean, grey, edges) -> (noisy, reference, level, kind) with crops of ``size``
    square; with ``clean``, a photo without noise as both (as it is, or as a JPEG of quality 75-96);
    with ``grey``, both made grey at the end; with ``edges``, the camera's luma noise reduction keeps
    edges (``calibrate_levels.camera_pair``'s ``luma_edges``)."""
    path, seed, size, clean, grey, edges = task
    rng = np.random.default_rng(seed)
    shares, top = ([2 / 3, 1 / 6, 1 / 6], 50) if grey else ([5 / 6, 1 / 12, 1 / 12], 20)
    kind = "clean" if clean else rng.choice(["camera", "blurred", "wjpeg"], p=shares)
    if kind == "clean":
        source = pipeline.crop(path, rng, size)
        noisy = reference = pipeline.jpeg(source, int(rng.integers(75, 97))) if rng.random() < 0.5 else source
    elif kind == "camera":
        # Down-scaling (a quarter of the camera pairs) needs a larger source; BSDS photos are too small.
        scale = 1.0 if "bsds" in path or rng.random() < 0.75 else float(rng.uniform(1.25, 2.5))
        source = pipeline.crop(path, rng, int(np.ceil(size * scale / 2)) * 2 + 4)
        if min(source.shape[:2]) < size * scale:
            scale = 1.0
        noisy, reference, _ = pipeline.camera_pair(source, rng, {"scale": scale, "luma_edges": edges})
    else:
        source = pipeline.crop(path, rng, size)
        if kind == "blurred":
            noisy, reference, _ = pipeline.blurred_pair(source, rng, sigma=float(np.exp(rng.uniform(np.log(3), np.log(top)))))
        else:
            noisy, reference, _ = pipeline.white_pair(source, rng, sigma=float(np.exp(rng.uniform(np.log(3), np.log(top)))),
                                                      quality=int(rng.integers(75, 96)))
    if grey:
        noisy, reference = (np.clip(np.round(image @ LUMA), 0, 255).astype(np.uint8)[..., None] for image in (noisy, reference))
    height, width = noisy.shape[:2]
    if min(height, width) < size:
        return None
    level = calibrate.level_for(noisy.astype(np.float32) / 255.0)
    y, x = (height - size) // 2, (width - size) // 2
    return noisy[y:y + size, x:x + size], reference[y:y + size, x:x + size], np.float32(level), str(kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding urban100/, sunhays80/, bsds400_color/")
    parser.add_argument("--count", type=int, required=True, help="pairs to make")
    parser.add_argument("--seed", type=int, default=1, help="seed: the same seed makes the same pairs")
    # 128 is the training patch of the colour stages; validation uses larger crops.
    parser.add_argument("--size", type=int, default=128, help="side of the square crops")
    parser.add_argument("--held-back", action="store_true", help="draw from the held-back photos (validation)")
    parser.add_argument("--clean", action="store_true",
                        help="pairs without noise, the photo as input and target: the model learns to leave "
                             "a clean photo as it is, although the level reading tells it 5-8 there")
    parser.add_argument("--grey", action="store_true", help="grey pairs (luma of the colour ones): for gray-photo")
    parser.add_argument("--edge-nr", action="store_true",
                        help="the camera's luma noise reduction keeps edges (a bilateral filter on 85%% of shots) "
                             "instead of blurring them (a Gaussian on 60%%): references stay sharp at edges and texture")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--out", type=Path, required=True, help=".npz to write")
    args = parser.parse_args()

    files = sources(args.data, args.held_back)
    rng = np.random.default_rng(args.seed)
    tasks = [(files[rng.integers(len(files))], int(rng.integers(2**62)), args.size, args.clean, args.grey,
              args.edge_nr) for _ in range(args.count)]
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        made = [pair for pair in pool.imap(one_pair, tasks, chunksize=16) if pair is not None]
    noisy, reference, level, kind = (np.stack([pair[i] for pair in made]) for i in range(4))
    np.savez(args.out, noisy=noisy, reference=reference, level=level, kind=kind)
    for name in np.unique(kind):
        chosen = kind == name
        rms = np.sqrt(np.mean((noisy[chosen].astype(np.float64) - reference[chosen]) ** 2, axis=(1, 2, 3)))
        print(f"{name}: {chosen.sum()} pairs, rms {np.median(rms):.2f} (median), level {np.median(level[chosen]):.2f}")


if __name__ == "__main__":
    main()
