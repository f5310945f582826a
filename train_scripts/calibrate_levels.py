"""Fit denoise/calibrate.py's WEIGHTS: the level the default model should be told for noise that
spans more than a pixel, from synthetic camera noise where the best level is found by trying.

Each sample is a clean crop (Urban100, Sun-Hays80, BSDS colour; --data holds those folders) made
noisy by one of: a camera pipeline (camera_pair: inverse sRGB, a random colour matrix of Brooks et
al. 2019, white balance undone, Poisson-Gaussian noise on an RGGB mosaic at Brooks et al.'s
shot/read levels, bilinear / edge-aware / VNG demosaicing, colour matrix, sRGB, a tone curve,
chroma and luma noise reduction, unsharp masking, optional down-scaling, JPEG 75-96), white
Gaussian noise (PNG or JPEG), blurred Gaussian noise, Poisson noise. The reference is the same
pipeline without noise. The shipped default model (``denoise run``'s, in process) denoises it told
each of 17 levels from 2 to 71 (x1.25 apart); the best (parabola in log level) is the target.
Then log(best) is fitted, by ridge regression (1.0), to the logs of calibrate.features on the
samples whose noise spans more than a pixel (calibrate.spread): WEIGHTS, printed at the end,
with each kind's mean PSNR loss against the best level under 5-fold cross-validation.

Rounds used for the shipped weights (seed, luma noise reduction up to, up-scaling of the source
up to; each 1.0 s/sample on 2 shared cores):

  python train_scripts/calibrate_levels.py --data ../shared/datasets --out /tmp/cal_A.pkl --seed 7 --luma-nr 0.9
  python train_scripts/calibrate_levels.py --data ../shared/datasets --out /tmp/cal_B.pkl --seed 11 --luma-nr 1.6
  python train_scripts/calibrate_levels.py --data ../shared/datasets --out /tmp/cal_C.pkl --seed 23 --luma-nr 3.0
  python train_scripts/calibrate_levels.py --data ../shared/datasets --out /tmp/cal_D.pkl --seed 31 --luma-nr 1.6 --upscale 2.5
  python train_scripts/calibrate_levels.py --fit /tmp/cal_A.pkl /tmp/cal_B.pkl /tmp/cal_C.pkl /tmp/cal_D.pkl

(The shipped numbers were made by the same code driving the pipeline API of the commit before
denoise/noise/ became a package; this file drives today's.)
"""

from __future__ import annotations

import argparse
import io as _io
import math
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from denoise import calibrate  # noqa: E402

LEVELS = [2 * 1.25**k for k in range(17)]
KINDS = ("camera", "white", "wjpeg", "blurred", "poisson")


def gaussian_filter(a, s):
    """A Gaussian blur over rows and columns (a tuple: its first entry), channel by channel."""
    return cv2.GaussianBlur(np.ascontiguousarray(a), (0, 0), float(s[0] if isinstance(s, tuple) else s))


# XYZ->camera matrices (Brooks et al. 2019, unprocess.py)
XYZ2CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]]])
RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])

def srgb_to_lin(x):
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
def lin_to_srgb(x):
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)

def random_ccm(rng):
    w = rng.dirichlet(np.ones(4))
    xyz2cam = np.tensordot(w, XYZ2CAMS, 1)
    rgb2cam = xyz2cam @ RGB2XYZ
    rgb2cam = rgb2cam / rgb2cam.sum(-1, keepdims=True)
    return rgb2cam

def mosaic(img):  # RGGB
    h, w = img.shape[:2]
    m = np.empty((h, w))
    m[0::2, 0::2] = img[0::2, 0::2, 0]; m[0::2, 1::2] = img[0::2, 1::2, 1]
    m[1::2, 0::2] = img[1::2, 0::2, 1]; m[1::2, 1::2] = img[1::2, 1::2, 2]
    return m

def demosaic(m, method):
    if method == 'bilinear':
        return cv2.cvtColor(np.round(np.clip(m, 0, 1) * 65535).astype(np.uint16), cv2.COLOR_BayerRGGB2RGB).astype(np.float64) / 65535
    if method == 'ea':
        return cv2.cvtColor(np.round(np.clip(m, 0, 1) * 65535).astype(np.uint16), cv2.COLOR_BayerBG2RGB_EA).astype(np.float64) / 65535
    # vng on 8 bits: encode with a square root to keep the shadows
    enc = np.round(np.sqrt(np.clip(m, 0, 1)) * 255).astype(np.uint8)
    return (cv2.cvtColor(enc, cv2.COLOR_BayerBG2RGB_VNG).astype(np.float64) / 255) ** 2

def to_ycc(x):
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    return x @ m.T, m
def from_ycc(y, m):
    return y @ np.linalg.inv(m).T

def jpeg(u8, q):
    b = _io.BytesIO(); Image.fromarray(u8).save(b, format='JPEG', quality=int(q)); b.seek(0)
    return np.asarray(Image.open(b).convert('RGB'))

def u8(x):
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)

def camera_pair(clean_u8, rng, p=None):
    """clean sRGB uint8 (H,W,3) -> (noisy u8, reference u8, params)."""
    p = dict(p or {})
    p.setdefault('shot', float(np.exp(rng.uniform(np.log(0.0002), np.log(0.012)))))
    p.setdefault('read_rel', float(rng.normal(0, 0.26)))
    p.setdefault('demosaic', str(rng.choice(['bilinear', 'ea', 'vng'], p=[0.3, 0.3, 0.4])))
    p.setdefault('tone', float(rng.uniform(0, 1)))
    p.setdefault('chroma_nr', float(rng.choice([0, rng.uniform(0.8, 4)], p=[0.2, 0.8])))
    # luma_edges: the luma noise reduction keeps edges, as a camera's does, instead of blurring them: a
    # bilateral filter over luma_nr pixels whose range is luma_range times the luma noise's std, on 85% of shots.
    p.setdefault('luma_edges', False)
    if p['luma_edges']:
        p.setdefault('luma_nr', float(rng.choice([0, rng.uniform(0.8, 2.0)], p=[0.15, 0.85])))
        p.setdefault('luma_range', float(rng.uniform(1.5, 4.0)))
    p.setdefault('luma_nr', float(rng.choice([0, rng.uniform(0.3, p.pop('luma_nr_max', 1.6))], p=[0.4, 0.6])))
    p.setdefault('sharpen', float(rng.choice([0, rng.uniform(0.2, 1.5)], p=[0.3, 0.7])))
    p.setdefault('sharpen_r', float(rng.uniform(0.6, 1.5)))
    p.setdefault('quality', int(rng.integers(75, 97)))
    p.setdefault('scale', float(rng.choice([1.0, rng.uniform(1.25, 2.5)], p=[0.75, 0.25])))
    p.setdefault('exposure', float(rng.uniform(0.7, 1.2)))
    x = clean_u8.astype(np.float64) / 255
    # invert tone (approx: skip exact inversion of smoothstep mix), gamma
    lin = srgb_to_lin(x) * p['exposure']
    rgb2cam = random_ccm(rng); cam2rgb = np.linalg.inv(rgb2cam)
    cam = np.clip(lin @ rgb2cam.T, 0, 1)
    rg, bg = rng.uniform(1.9, 2.4), rng.uniform(1.5, 1.9)
    gains = np.array([rg, 1.0, bg])
    raw = cam / gains
    m = mosaic(raw)
    shot = p['shot']; read = np.exp(2.18 * np.log(shot) + 1.20 + p['read_rel'])
    noisy_m = m + rng.normal(0, 1, m.shape) * np.sqrt(np.maximum(m, 0) * shot + read)
    def develop(mm):
        rgbc = demosaic(mm, p['demosaic']) * gains
        rgb = np.clip(rgbc, 0, 1) @ cam2rgb.T
        s = lin_to_srgb(rgb)
        s = p['tone'] * (3 * s**2 - 2 * s**3) + (1 - p['tone']) * s
        return to_ycc(s)
    (clean_y, M), (noisy_y, _) = develop(m), develop(noisy_m)
    spread = float(np.std(noisy_y[..., 0] - clean_y[..., 0]))
    def forward(y, jpeg_q):  # in place: each developed image is finished once
        if p['chroma_nr'] > 0:
            for c in (1, 2):
                y[..., c] = gaussian_filter(y[..., c], p['chroma_nr'])
        if p['luma_nr'] > 0 and p['luma_edges']:
            y[..., 0] = cv2.bilateralFilter(y[..., 0].astype(np.float32), -1, p['luma_range'] * spread, p['luma_nr'])
        elif p['luma_nr'] > 0:
            y[..., 0] = gaussian_filter(y[..., 0], p['luma_nr'])
        if p['sharpen'] > 0:
            y[..., 0] = y[..., 0] + p['sharpen'] * (y[..., 0] - gaussian_filter(y[..., 0], p['sharpen_r']))
        s = from_ycc(y, M)
        if p['scale'] != 1.0:
            h, w = s.shape[:2]
            s = cv2.resize(s, (int(round(w / p['scale'])), int(round(h / p['scale']))), interpolation=cv2.INTER_AREA)
        return jpeg(u8(s), jpeg_q)
    ref = forward(clean_y, 98)  # the mean of many shots: nearly lossless
    noisy = forward(noisy_y, p['quality'])
    p['rms'] = float(np.sqrt(np.mean((noisy.astype(float) - ref) ** 2)))
    return noisy, ref, p

def white_pair(clean_u8, rng, sigma=None, quality=None):
    sigma = sigma if sigma is not None else float(np.exp(rng.uniform(np.log(3), np.log(50))))
    noisy = u8(clean_u8 / 255 + rng.normal(0, sigma / 255, clean_u8.shape))
    if quality:
        noisy = jpeg(noisy, quality)
    return noisy, clean_u8, dict(kind='white', sigma=sigma, quality=quality)

def blurred_pair(clean_u8, rng, sigma=None, blur=None):
    sigma = sigma if sigma is not None else float(np.exp(rng.uniform(np.log(3), np.log(30))))
    blur = blur if blur is not None else float(rng.uniform(0.4, 1.0))
    n = gaussian_filter(rng.normal(0, 1, clean_u8.shape), (blur, blur, 0))
    noisy = u8(clean_u8 / 255 + n / n.std() * sigma / 255)
    return noisy, clean_u8, dict(kind='blurred', sigma=sigma, blur=blur)

def poisson_pair(clean_u8, rng, peak=None):
    peak = peak if peak is not None else float(np.exp(rng.uniform(np.log(10), np.log(200))))
    noisy = u8(rng.poisson(clean_u8 / 255 * peak) / peak)
    return noisy, clean_u8, dict(kind='poisson', peak=peak)

def clean_sources(root):
    files = []
    for d in ('urban100', 'sunhays80', 'bsds400_color'):
        files += [str(path) for path in sorted((Path(root) / d).iterdir())]
    return files

def crop(path, rng, size, up=0.0):
    a = np.asarray(Image.open(path).convert('RGB'))
    h, w = a.shape[:2]
    if 'bsds' in path:  # 4:2:0 JPEGs: halve to hide their artefacts
        a = cv2.resize(a, (w // 2, h // 2), interpolation=cv2.INTER_AREA); h, w = a.shape[:2]
    size = min(size, h - h % 2, w - w % 2)
    if up:  # full-resolution photos are smoother per pixel than these downscaled sources
        f = rng.uniform(1.3, up); small = int(np.ceil(size / f)) + 2
        y = rng.integers(0, h - small + 1); x = rng.integers(0, w - small + 1)
        b = cv2.resize(a[y:y + small, x:x + small], None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        return b[:size, :size]
    y = 2 * rng.integers(0, (h - size) // 2 + 1); x = 2 * rng.integers(0, (w - size) // 2 + 1)
    return a[y:y + size, x:x + size]


def psnr(out01, clean_u8):
    o = np.clip(np.round(out01 * 255), 0, 255).astype(np.float64)
    return float(10 * np.log10(255**2 / np.mean((o - clean_u8.astype(np.float64)) ** 2)))


def default_model():
    """A callable (list of (pixels, level)) -> outputs: the default model of `denoise run`, told each level."""
    from denoise import io, pipeline, treatments
    from denoise.engine import Engine
    from denoise.plan import Job
    from denoise.settings import Inference

    engine = Engine(Inference(ensemble=1), lambda message: print(message, file=sys.stderr))

    def run(items):
        jobs, readings = [], []
        for number, (pixels, level) in enumerate(items):
            jobs.append((Job(number, Path(), Path()), io.Decoded(pixels=pixels.astype(np.float32), alpha=None, bits=8,
                                                                  format="PNG", info={})))
            low, span = treatments.stretch(pixels)
            readings.append(treatments.Reading(sigma=level, noise="gaussian", level=level, stabilizer=None, low=low,
                                               span=span, bounds=(float(pixels.min()), float(pixels.max()))))
        return pipeline.denoise_decoded(engine, jobs, readings)

    return run


def collect(args) -> None:
    rng = np.random.default_rng(args.seed)
    files = clean_sources(args.data)
    run = default_model()
    counts = dict(zip(KINDS, args.counts))
    kinds = [kind for kind in KINDS for _ in range(counts[kind])]
    rng.shuffle(kinds)
    samples = []
    for number, kind in enumerate(kinds):
        clean = crop(files[rng.integers(len(files))], rng, args.size, args.upscale)
        if kind == "camera":
            noisy, reference, params = camera_pair(clean, rng, {"luma_nr_max": args.luma_nr})
        elif kind == "white":
            noisy, reference, params = white_pair(clean, rng)
        elif kind == "wjpeg":
            noisy, reference, params = white_pair(clean, rng, quality=int(rng.integers(75, 97)))
        elif kind == "blurred":
            noisy, reference, params = blurred_pair(clean, rng)
        else:
            noisy, reference, params = poisson_pair(clean, rng)
        pixels = noisy / 255.0
        curve = [psnr(out, reference) for out in run([(pixels, level) for level in LEVELS])]
        samples.append(dict(kind=kind, params=params, curve=curve, features=calibrate.features(pixels)))
        if number % 20 == 0:
            print(number, kind, "best", round(LEVELS[int(np.argmax(curve))], 1), flush=True)
    Path(args.out).write_bytes(pickle.dumps(dict(levels=LEVELS, samples=samples)))


def best_level(curve) -> float:
    curve = np.asarray(curve); k = int(np.argmax(curve)); offset = 0.0
    if 0 < k < len(curve) - 1:
        den = curve[k - 1] - 2 * curve[k] + curve[k + 1]
        offset = 0.5 * (curve[k - 1] - curve[k + 1]) / den if den < 0 else 0.0
    return float(math.exp(math.log(LEVELS[k]) + offset * math.log(1.25)))


def fit(paths) -> None:
    samples = [s for path in paths for s in pickle.loads(Path(path).read_bytes())["samples"]]
    keys = ("s0", "sm", "smm", "sb2", "y0")
    X = np.array([[1.0] + [math.log(s["features"][key] + calibrate.OFFSET) for key in keys] for s in samples])
    y = np.log([best_level(s["curve"]) for s in samples])
    gate = np.array([calibrate.spread(s["features"]) for s in samples])
    weights = np.linalg.solve(X[gate].T @ X[gate] + np.eye(X.shape[1]), X[gate].T @ y[gate])
    print("WEIGHTS =", tuple(round(float(v), 3) for v in weights), "from", int(gate.sum()), "of", len(samples))
    fold = np.random.default_rng(0).integers(0, 5, len(samples))
    told = {"estimate_level": [], "fitted": []}
    for i, s in enumerate(samples):
        f = s["features"]
        told["estimate_level"].append(f["sm"] if gate[i] else f["s0"])
    predicted = np.array(told["estimate_level"])
    for k in range(5):
        train, test = (fold != k) & gate, (fold == k) & gate
        w = np.linalg.solve(X[train].T @ X[train] + np.eye(X.shape[1]), X[train].T @ y[train])
        predicted[test] = np.maximum(np.exp(X[test] @ w), [samples[i]["features"]["sm"] for i in np.where(test)[0]])
    told["fitted"] = predicted
    for name, levels in told.items():
        losses = {kind: np.mean([max(s["curve"]) - np.interp(math.log(levels[i]), np.log(LEVELS), s["curve"])
                                 for i, s in enumerate(samples) if s["kind"] == kind]) for kind in KINDS
                  if any(s["kind"] == kind for s in samples)}
        print(f"{name:15s} dB below the best level:", {k: round(float(v), 3) for k, v in losses.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="folder with urban100/, sunhays80/, bsds400_color/")
    parser.add_argument("--out", type=Path, help="where the samples go (a pickle)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--luma-nr", type=float, default=1.6, help="the camera's luma noise reduction, up to (pixels)")
    parser.add_argument("--upscale", type=float, default=0.0, help="enlarge the sources by 1.3 up to this (0: no)")
    parser.add_argument("--counts", type=int, nargs=5, default=[280, 30, 15, 15, 10], metavar="N",
                        help="samples of camera, white, white JPEG, blurred, Poisson noise")
    parser.add_argument("--fit", nargs="+", help="fit WEIGHTS on these sample files instead")
    args = parser.parse_args()
    if args.fit:
        fit(args.fit)
    else:
        collect(args)


if __name__ == "__main__":
    main()
