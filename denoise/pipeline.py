"""Batch denoising: files -> decode -> tiles -> model -> blend -> encode -> files.

- The file list is walked lazily, so the first output appears at once even for huge trees.
- A thread pool decodes files in parallel, ahead of the model, starting before TensorFlow has
  loaded (its import takes seconds; tf.data could only start after it).
- Tiles of the same shape (and model) are batched together and run through one compiled
  function per model, traced once for any shape (no retracing per image).
- Finished images are blended, encoded and written by worker threads while the next batch
  computes. Every write is atomic; inputs are only ever read.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from denoise import impulses, io, shuffle, strength as strengths, tiles as tiling, variance
from denoise.noise import NoiseSpec, add_noise_uint, effective_sigma, estimate_level, estimate_sigma, seed_for

NOISE_KINDS = ("auto", "gaussian", "poisson", "impulse", "correlated", "camera")  # what --noise can say the images carry
MARGIN = 32  # overlap between tiles is 2 * MARGIN: more than the networks' useful context
# What a run holds per pixel value of an image at its peak (the decoded float32 input, the blend's
# sum and weights, the output, the encoder's copy), measured at about 19: an image that would need
# more than the memory available is refused from its header.
BYTES_PER_VALUE = 20


class UsageError(ValueError):
    """A mistake in the command itself (exit status 2), as opposed to a bad file (exit status 1)."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything a batch run needs; the CLI fills it from its options."""

    inputs: tuple[Path, ...]
    output: Path
    model: str = "auto"
    sigma: str = "auto"
    recursive: bool = True
    format: str = "keep"
    quality: int = 95
    # Tiles of 2 megapixels, one a call (smaller images are batched to as many pixels): what bounds
    # memory. Less overlap to recompute than smaller ones: a 12 MP photo 1.09x its pixels, 1.15x at 1024.
    tile: int = 1440
    batch_size: int = 1
    device: str = "auto"
    ensemble: int = 0  # the mean over this many flips and turns of each tile: 1, 2, 4, 8, or 0: auto (runtime.arithmetic)
    noise: str = "auto"  # auto (photon noise stabilised where found), gaussian, poisson, impulse, correlated or camera
    precision: str = "auto"  # float32, bfloat16 (models.computing_in) or auto (runtime.arithmetic)
    strength: float = 1.0  # how much to clean, relative to the default (denoise.strength)
    overwrite: bool = False
    dry_run: bool = False
    report: Path | None = None
    progress: bool = False  # the progress bar (a terminal only)
    quiet: bool = False  # no closing summary line either
    workers: int = max(2, min(8, os.cpu_count() or 2))

    @property
    def batch_pixels(self) -> int:
        """What one model call may hold, and so what bounds memory: --batch-size full tiles."""
        return self.batch_size * self.tile * self.tile


@dataclasses.dataclass
class Job:
    index: int
    input: Path
    output: Path
    status: str = "pending"  # ok / skipped / failed
    reason: str = ""
    sigma: float | None = None
    model: str | None = None  # the model that denoised it
    ensemble: int | None = None  # the self-ensemble it ran in
    noise: str | None = None  # gaussian, poisson or impulse: how its noise was treated
    started: float = 0.0  # when its work began (time.time())
    seconds: float = 0.0  # its own work: decode, preparation, its share of the model calls, encode and write


# --------------------------------------------------------------------------------------------
# Planning: which file goes where
# --------------------------------------------------------------------------------------------


def check_options(options: RunOptions) -> None:
    """Refuse runs that could overwrite or re-read their own inputs, or ask for an unknown precision
    or noise kind (exit status 2)."""
    output = options.output.resolve()
    for path in options.inputs:
        if not path.exists() and not path.is_symlink():
            raise UsageError(f"{io.shown(path)}: no such file or folder")
        resolved = path.resolve()
        if resolved == output:
            raise UsageError(f"{io.shown(path)}: the output must differ from the input")
    if output.exists() and not output.is_dir() and not writes_one_file(options):
        raise UsageError(f"{io.shown(options.output)}: the output must be a folder, not a file")
    if not output.is_dir() and io.is_image_name(options.output) and not writes_one_file(options):
        raise UsageError(f"{io.shown(options.output)}: an image name as OUTPUT takes one input file; "
                         "give a folder for several")
    if options.report is not None:
        check_side_file(options.report, options.inputs, "--report")
    if options.precision not in ("auto", "float32", "bfloat16"):
        raise UsageError(f"--precision {options.precision}: choose auto, float32 or bfloat16")
    if options.ensemble != 0 and options.ensemble not in ENSEMBLES:
        raise UsageError(f"--ensemble {options.ensemble}: choose auto or {', '.join(map(str, ENSEMBLES))}")
    check_strength(options.strength)
    check_noise(options.noise, options.sigma)


def check_strength(strength: float) -> None:
    """Refuse a --strength outside what :mod:`denoise.strength` defines (exit status 2)."""
    try:
        strengths.check(strength)
    except ValueError as error:
        raise UsageError(str(error)) from None


def writes_one_file(options: RunOptions) -> bool:
    """``run a.png clean.png``: one input file and an OUTPUT with an image name (not a folder)
    write that file, as ``cp`` would."""
    return (len(options.inputs) == 1 and not options.inputs[0].is_dir() and io.is_image_name(options.output)
            and not options.output.is_dir())


def check_side_file(path: Path, inputs: tuple[Path, ...], option: str) -> None:
    """Refuse a report or dead-letter file that would replace an image or any input file."""
    if io.is_image_name(path):
        raise UsageError(f"{option} {io.shown(path)}: an image name; the file is JSON (e.g. report.json)")
    if not path.exists():
        return
    real = path.resolve()
    for each in inputs:
        root = each.resolve()
        if real == root or (each.is_dir() and real.is_relative_to(root)):
            raise UsageError(f"{option} {io.shown(path)}: lies among the inputs ({io.shown(each)}); "
                             "choose a path outside them")


def check_noise(noise: str, sigma: str) -> None:
    """Refuse an unknown --noise, and a fixed --sigma with a kind that measures each image."""
    if noise not in NOISE_KINDS:
        raise UsageError(f"--noise {noise}: choose one of {', '.join(NOISE_KINDS)}")
    if noise in ("poisson", "impulse", "correlated", "camera") and sigma != "auto":
        raise UsageError(f"--noise {noise} measures each image's noise: leave --sigma auto")


class InputGuard:
    """Tells whether an output path leads into an input folder, whatever links lie on the way:
    no write may land among the inputs. The output folder itself may lie inside an input folder
    (it is never walked). One resolve per output folder."""

    def __init__(self, inputs: tuple[Path, ...], output: Path):
        self.output = output.resolve()
        self.folders = [path.resolve() for path in inputs if path.is_dir()]
        self.files = {path.resolve() for path in inputs if not path.is_dir()}
        self.cache: dict[Path, Path | None] = {}

    def input_folder_of(self, target: Path) -> Path | None:
        """The input folder that ``target``'s folder really lies in, or None."""
        folder = target.parent
        if folder not in self.cache:
            real = folder.resolve()
            self.cache[folder] = next((root for root in self.folders if real.is_relative_to(root)
                                       and not real.is_relative_to(self.output)), None)
        return self.cache[folder]

    def problem(self, target: Path, path: Path) -> str | None:
        """Why ``target`` (the output of input ``path``) must not be written, or None."""
        if target.exists() and (_same_file(target, path) or target.resolve() in self.files):
            return f"the output {io.shown(target)} is the input itself; choose another OUTPUT folder"
        folder = self.input_folder_of(target)
        if folder is not None:
            return f"the output {io.shown(target)} lies in the input folder {io.shown(folder)} (through a link?)"
        return None


def plan(options: RunOptions) -> Iterator[Job]:
    """Yield one job per input image, lazily; outputs mirror the input tree.

    With one input folder its contents map straight into OUTPUT; with several inputs each
    folder keeps its name as a subfolder of OUTPUT. A folder that cannot be listed is a failed job.
    """
    single = len(options.inputs) == 1
    one_file = writes_one_file(options)
    seen: set[Path] = set()
    guard = InputGuard(options.inputs, options.output)
    unlisted: list[tuple[Path, Path, str]] = []
    # Two inputs can share an output only when --format renames them or several inputs are
    # merged; otherwise the set is not kept, so memory stays flat however many files there are.
    collisions_possible = options.format != "keep" or not single
    index = 0
    for path, relative in _walk(options, single, lambda *failure: unlisted.append(failure)):
        for folder, folder_relative, reason in unlisted:
            yield Job(index, folder, options.output / folder_relative, "failed", reason)
            index += 1
        unlisted.clear()
        target = options.output if one_file else io.output_path(relative, options.output, options.format)
        job = Job(index, path, target)
        index += 1
        problem = None
        if target in seen:
            problem = f"another input is also written to {io.shown(target)}"
        elif not io.is_image_name(target):  # a file named on the command line, e.g. x.tga
            problem = (f"cannot write {target.suffix or 'a file without extension'}: "
                       f"denoise writes {' '.join(sorted(io.EXTENSIONS))}; add --format png")
        else:
            problem = guard.problem(target, path)
        if problem is None and target.is_dir():
            problem = f"a folder is in the way of the output {io.shown(target)}"
        if problem is not None:
            job.status, job.reason = "failed", problem
        elif target.exists() and not options.overwrite:
            job.status, job.reason = "skipped", "output exists"
        if collisions_possible:
            seen.add(target)
        yield job
    for folder, folder_relative, reason in unlisted:
        yield Job(index, folder, options.output / folder_relative, "failed", reason)
        index += 1


def count_inputs(options: RunOptions) -> int:
    """How many images a run has (a second walk of the tree), for the progress bar's total."""
    return sum(1 for _ in _walk(options, len(options.inputs) == 1, lambda *failure: None))


def _same_file(target: Path, path: Path) -> bool:
    try:
        return os.path.samefile(target, path)
    except OSError:
        return False


def _walk(options: RunOptions, single: bool, on_error: Callable):
    """``(path, relative output name)`` of each input; ``on_error(folder, relative name, reason)``
    for a folder that cannot be listed."""
    for root in options.inputs:
        prefix = Path(root.resolve().name) if root.is_dir() and not single else Path()

        def unlisted(folder: Path, reason: str, root=root, prefix=prefix) -> None:
            on_error(folder, prefix / folder.relative_to(root), reason)

        for path, relative in io.iter_inputs([root], options.recursive, exclude=options.output, on_error=unlisted):
            yield path, prefix / relative


# --------------------------------------------------------------------------------------------
# Reporting: stderr lines, the progress bar, the JSON report
# --------------------------------------------------------------------------------------------


class Recorder:
    """Collects job outcomes: one stderr line per failure, progress, the summary and the JSON report."""

    def __init__(self, options: RunOptions, unit: str = "img"):
        self.options = options
        self.jobs: list[dict] = []
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self.settings: dict = {}  # what auto resolved to (the precision), for the report
        self.started = time.time()
        self.lock = threading.Lock()
        self.bar = None
        if options.progress:
            from tqdm import tqdm

            # A terminal that reports no size (a fresh pty: 0 x 0, where tqdm hides its bar) gets 80 x 24.
            try:
                size = os.get_terminal_size(sys.stderr.fileno())
            except (OSError, ValueError):
                size = os.terminal_size((0, 0))
            known = size.columns > 0 and size.lines > 0
            self.bar = tqdm(unit=unit, file=sys.stderr, dynamic_ncols=known, ncols=None if known else 80,
                            nrows=None if known else 24)
            # The total comes from a second walk of the inputs, in the background: the run starts at once.
            threading.Thread(target=self._count, daemon=True, name="count").start()

    def _count(self) -> None:
        try:
            total = count_inputs(self.options)
        except Exception:  # the main walk reports what went wrong
            return
        with self.lock:
            if self.bar is not None:
                self.bar.total = total
                self.bar.refresh()

    def say(self, message: str) -> None:
        """One line on stderr, through the bar when there is one."""
        with self.lock:
            self._say(message)

    def _say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def finish(self, job: Job) -> None:
        with self.lock:
            self.counts[job.status] += 1
            if job.status == "failed":
                self._say(f"denoise: {io.shown(job.input)}: {job.reason}")
            if self.options.report is not None:
                self.jobs.append({
                    "input": io.shown(job.input), "output": io.shown(job.output), "status": job.status,
                    "reason": job.reason, "seconds": round(job.seconds, 4),
                    "started": round(max(0.0, job.started - self.started), 4) if job.started else None,
                    "sigma": None if job.sigma is None else round(job.sigma, 3), "noise": job.noise,
                    "model": job.model, "ensemble": job.ensemble,
                })
            if self.bar is not None:
                self.bar.update(1)

    def summary(self, interrupted: bool = False) -> dict:
        seconds = time.time() - self.started
        done = self.counts["ok"]
        summary = {**self.counts, "seconds": round(seconds, 3), "images_per_second": round(done / max(seconds, 1e-9), 2),
                   **self.settings}
        if interrupted:
            summary["interrupted"] = True
        return summary

    def close(self, interrupted: bool = False) -> dict:
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
        summary = self.summary(interrupted)
        if self.options.report is not None:
            report = {"summary": summary, "files": sorted(self.jobs, key=lambda job: job["input"])}
            try:
                io.write_atomic(Path(self.options.report), (json.dumps(report, indent=2) + "\n").encode())
            except OSError as error:  # a full disk or read-only folder: say so, and fail the run
                print(f"denoise: cannot write the report {io.shown(self.options.report)}: {one_line(error)}",
                      file=sys.stderr)
                summary["failed"] += 1
        if not self.options.quiet:
            print(summary_line(summary), file=sys.stderr)
        return summary


def summary_line(summary: dict) -> str:
    """What a run did, in one line: ``denoise: 3 done, 1 skipped (...), 0 failed in 4.1 s (0.7 images/s)``."""
    skipped = summary["skipped"]
    why = " (their outputs exist; --overwrite redoes them)" if skipped else ""
    stopped = ", interrupted" if summary.get("interrupted") else ""
    return (f"denoise: {summary['ok']} done, {skipped} skipped{why}, {summary['failed']} failed{stopped} "
            f"in {summary['seconds']:.1f} s ({summary['images_per_second']:g} images/s)")


class _Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so a run stops as cleanly as on Ctrl-C."""


def _run_guarded(options: RunOptions, body: Callable[[Recorder], None], unit: str = "img") -> dict:
    """Run ``body`` with the shared rules: option checks, dry run, signals, report, exit codes."""
    check_options(options)
    if options.dry_run:
        counts = {"ok": 0, "skipped": 0, "failed": 0}
        for job in plan(options):
            action = {"pending": "write", "skipped": "skip (exists)", "failed": f"fail ({job.reason})"}[job.status]
            print(f"{io.shown(job.input)} -> {io.shown(job.output)}: {action}")
            counts["ok" if job.status == "pending" else job.status] += 1
        return {**counts, "failed": 0, "dry_run": True}
    recorder = Recorder(options, unit)
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()

    def on_term(signum, frame):
        raise _Terminated()

    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    try:
        body(recorder)
    except KeyboardInterrupt as interrupt:
        summary = recorder.close(interrupted=True)
        print(f"denoise: interrupted after {summary['ok']} images; run again to finish the rest",
              file=sys.stderr)
        sys.exit(143 if isinstance(interrupt, _Terminated) else 130)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return recorder.close()


def _write(job: Job, decoded: io.Decoded, pixels: np.ndarray, options: RunOptions, recorder: Recorder) -> None:
    """Encode and atomically write one output; any failure is recorded against the job."""
    began = time.time()
    try:
        fmt = io.EXTENSIONS[job.output.suffix.lower()]
        io.write_atomic(job.output, io.encode(decoded, pixels, fmt, options.quality))
        job.status = "ok"
    except Exception as error:  # a full disk, a read-only folder, an encoder refusing the data
        job.status, job.reason = "failed", f"cannot write {io.shown(job.output)}: {one_line(error)}"
    job.seconds += time.time() - began
    recorder.finish(job)


def one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --------------------------------------------------------------------------------------------
# add-noise: no model, just the same I/O rules
# --------------------------------------------------------------------------------------------


def add_noise_batch(options: RunOptions, spec: NoiseSpec, seed: int) -> dict:
    """Write noisy copies of the inputs (deterministic per file name and ``seed``)."""

    def body(recorder: Recorder) -> None:
        with concurrent.futures.ThreadPoolExecutor(options.workers) as pool:
            pending = set()
            for job in plan(options):
                if job.status != "pending":
                    recorder.finish(job)
                    continue
                pending.add(pool.submit(_noisy_copy, job, spec, seed, options, recorder))
                if len(pending) >= 4 * options.workers:  # bounded memory: wait for some to finish
                    _, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)

    return _run_guarded(options, body)


def _noisy_copy(job: Job, spec: NoiseSpec, seed: int, options: RunOptions, recorder: Recorder) -> None:
    job.started = time.time()
    try:
        decoded = io.read_image(job.input, BYTES_PER_VALUE)
    except io.ImageError as error:
        job.status, job.reason = "failed", str(error)
        job.seconds = time.time() - job.started
        recorder.finish(job)
        return
    scale = 65535.0 if decoded.bits > 8 else 255.0
    integers = np.round(decoded.pixels * scale).astype(np.uint16 if decoded.bits > 8 else np.uint8)
    rng = np.random.default_rng(seed_for(job.input.name, seed))
    noisy = add_noise_uint(integers, spec, rng).astype(np.float32) / scale
    job.seconds = time.time() - job.started
    _write(job, decoded, noisy, options, recorder)


# --------------------------------------------------------------------------------------------
# run: the model path
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Image:
    """An image in flight between decode and write."""

    job: Job
    decoded: io.Decoded
    model: object  # registry.LoadedModel
    grid: tiling.Grid
    blender: tiling.Blender
    sigma: float  # 0-255 units of the stretched pixels, fed to models with a noise-level input
    split_channels: bool  # a colour image through a grey model, channel by channel
    low: float = 0.0  # the model sees (pixels - low) / span: see stretch()
    span: float = 1.0
    stabilizer: tuple[float, float] | None = None  # the noise function of a signal-dependent image
    source: np.ndarray | None = None  # what the tiles are cut from, when not the decoded pixels
    bounds: tuple[float, float] = (0.0, 1.0)  # the input's darkest and brightest values
    replicate: bool = False  # a grey picture in R, G and B: denoised as grey, written back in all three
    mosaic_of: tuple[int, int] | None = None  # the image's height and width, when the model saw its mosaic
    # --strength below 1 only: the pixels before any stretch, for the blend (denoise.strength)
    original: np.ndarray | None = None
    strength: float = 1.0
    planes: dict = dataclasses.field(default_factory=dict)  # tile index -> channels done so far
    submitted: bool = False

    def denoised(self) -> np.ndarray:
        """The output pixels once every tile is done, within the input's darkest to brightest
        value, as a full-range image's are within 0-1."""
        result = np.clip(self.blender.result(), 0.0, 1.0)
        if self.span != 1.0 or self.low != 0.0:
            result = np.multiply(result, self.span, out=result)
            result += self.low
        if self.stabilizer is not None:
            result = variance.unstabilize(result, self.stabilizer)
        if self.mosaic_of is not None:
            result = shuffle.from_mosaic(result, *self.mosaic_of)
        np.clip(result, *self.bounds, out=result)
        if self.original is not None:  # --strength below 1: some of the input put back
            result = strengths.blend(result, self.original, self.strength)
        return np.repeat(result, 3, axis=-1) if self.replicate else result


def grey_in_colour(pixels: np.ndarray) -> bool:
    """Whether a three-channel image holds the same grey picture in R, G and B, as grey scans and
    black-and-white photos saved as RGB do. As colour, its noise (the same in each channel)
    would reach the colour model as luminance noise it did not learn: Set12 at sigma 25 stored
    as RGB gave 27.1 dB that way, 30.2 as grey."""
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        return False
    sample = pixels[::7, ::7]  # a colour image is told apart on a sample
    if not (np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(sample[..., 1], sample[..., 2])):
        return False
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]))


# A grey image given to a colour model is copied into R, G and B with the same noise in each, so
# its luminance carries noise sigma, where the independent noise the model learned puts sigma /
# sqrt(3) there. Told sigma * sqrt(3), it expects the luminance noise it gets (color on Set12 at
# sigma 25: 23.4 dB told sigma, 28.9 told this; gray gives 30.0).
GREY_IN_COLOUR = 3**0.5


# The geometric self-ensemble of each size, as (quarter turns, mirrored) pairs: the identity and
# its mirror image; the four turns; all eight. Set12 at sigma 25 (gray-large): 30.20 dB alone,
# 30.28 / 30.32 / 30.33 with 2 / 4 / 8; McMaster18 (color+gray): 31.74, 31.80 / 31.84 / 31.85.
# Of the pairs, the mirror gains most (a half turn 30.275, a turn and mirror 30.273); of the
# fours, the turns (four turns, half of them mirrored: 30.31).
ENSEMBLES = {
    1: [(0, False)],
    2: [(0, False), (0, True)],
    4: [(turns, False) for turns in range(4)],
    8: [(turns, mirrored) for turns in range(4) for mirrored in (False, True)],
}


def self_ensemble(function, images, sigmas, size: int = 8):
    """The mean of ``function`` over ``size`` flips and quarter turns of NHWC ``images`` (see
    ENSEMBLES), each turned back (a quarter turn swaps height and width; turning back restores
    them). Called eagerly with a traced ``function``: one pass at a time holds memory."""
    import tensorflow as tf

    total = 0.0
    for turns, mirrored in ENSEMBLES[size]:
        turned = tf.image.rot90(images, turns)
        turned = tf.reverse(turned, [2]) if mirrored else turned
        result = function(turned, sigmas)
        result = tf.reverse(result, [2]) if mirrored else result
        total += tf.image.rot90(result, (4 - turns) % 4)
    return total / size


@dataclasses.dataclass(frozen=True)
class Reading:
    """What ``run`` reads on a whole image before the model (:meth:`Runner.read`). Given to
    :meth:`Runner.prepare` with a part of that image (``denoise compare``'s crops), the part is
    treated as the whole would be, not read again."""

    sigma: float | None  # the level the report gives (None: auto, and a model without a noise-level input)
    noise: str | None  # how the noise is treated: gaussian, poisson, impulse, correlated or camera
    level: float | None  # what the model is told at --strength 1, 0-255 units of what it sees before the stretch
    stabilizer: tuple[float, float] | None  # the noise function of a signal-dependent image
    low: float  # the model sees (pixels - low) / span: see stretch()
    span: float
    bounds: tuple[float, float]  # the image's darkest and brightest values


class Runner:
    """Holds the loaded models and their compiled inference functions."""

    def __init__(self, options: RunOptions, warn: Callable[[str], None]):
        self.options = options
        self.warn = warn
        self.models: dict[str, object] = {}
        self.functions: dict[str, Callable] = {}
        self.defaults: dict[int, str] = {}  # channels -> the model --model auto picked
        self.warned_sigma = False
        self.warned_strength = False
        self.lock = threading.Lock()

    def at_strength(self, strength: float) -> Runner:
        """This runner at another ``--strength``, sharing its loaded models and compiled functions:
        the strength changes only what the models are told and the blend after them."""
        other = Runner(dataclasses.replace(self.options, strength=strength), self.warn)
        other.models, other.functions, other.defaults, other.lock = self.models, self.functions, self.defaults, self.lock
        return other

    def model_for(self, channels: int):
        with self.lock:  # called from the decode threads
            return self._model_for(channels)

    def prepare_if_ready(self, job: Job, decoded: io.Decoded):
        """In a decode thread: :meth:`prepare` when the image's model is loaded, else ``decoded``
        as it is (models load in the main thread, once TensorFlow has started)."""
        name = self.options.model if self.options.model != "auto" else self.defaults.get(decoded.pixels.shape[-1])
        return self.prepare(job, decoded) if name in self.models else decoded

    def _model_for(self, channels: int):
        from denoise import registry

        name = self.options.model
        if name == "auto":
            name = self.defaults[channels] = registry.default_name(channels, noise=self.options.noise)
        if name not in self.models:
            loaded = registry.load(name)
            self.models[name] = loaded
            if not loaded.noise_level_input and self.options.strength > 1.0 and not self.warned_strength:
                self.warned_strength = True
                self.warn(f"denoise: warning: model {loaded.name} has no noise-level input to tell a higher level: "
                          "--strength above 1 acts as 1")
            if not loaded.noise_level_input and self.options.sigma != "auto" and not self.warned_sigma:
                self.warned_sigma = True
                self.warn(f"denoise: warning: model {loaded.name} has no noise-level input; --sigma is ignored")
            elif loaded.noise_level_input and self.options.sigma != "auto":
                trained = (registry.find(name) or {}).get("noise", {})
                if trained.get("type") == "gaussian" and float(self.options.sigma) > trained.get("high", math.inf):
                    self.warn(f"denoise: warning: --sigma {self.options.sigma} is above the levels model {loaded.name} "
                              f"learned (up to {trained['high']:g}); expect a blurred result")
        return self.models[name]

    @functools.cached_property
    def machine(self) -> tuple[bool, bool | None]:
        """(a GPU is visible, the CPU computes bfloat16 natively); warns where an asked-for bfloat16
        would run slower than float32."""
        import tensorflow as tf

        from denoise import runtime

        gpu = bool(tf.config.get_visible_devices("GPU"))
        native = None if gpu else runtime.native_bfloat16()
        if self.options.precision == "bfloat16" and native is False:
            self.warn("denoise: warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX): "
                      "--precision bfloat16 runs slower than float32 here")
        return gpu, native

    def arithmetic(self, loaded=None) -> tuple[str, int]:
        """(precision, ensemble size) for ``loaded`` (a one-network model where None), with auto
        resolved for this machine (runtime.arithmetic)."""
        from denoise import runtime

        return runtime.arithmetic(self.options.precision, self.options.ensemble, *self.machine,
                                  passes=1 if loaded is None else loaded.passes)

    def function(self, loaded):
        """One ``tf.function`` per model, traced once for any batch and tile size."""
        import tensorflow as tf

        if loaded.name not in self.functions:
            from denoise import models

            precision, ensemble = self.arithmetic(loaded)
            model = models.computing_in(loaded.model, precision)
            height = loaded.tile_size
            image_spec = tf.TensorSpec([None, height, height, loaded.channels], tf.float32)
            sigma_spec = tf.TensorSpec([None, 1], tf.float32)

            def call(images, sigmas):
                inputs = {"image": images, "sigma": sigmas} if loaded.noise_level_input else images
                return model(inputs, training=False)

            once = tf.function(call, input_signature=[image_spec, sigma_spec])
            # An ensemble calls the one traced function per member: tracing the model once per
            # member cost 0.6 s of a 12 MP photo's 16.
            self.functions[loaded.name] = once if ensemble == 1 else functools.partial(self_ensemble, once, size=ensemble)
        return self.functions[loaded.name]

    def read(self, decoded: io.Decoded) -> Reading:
        """What ``run`` reads on the whole of ``decoded`` before the model (see :class:`Reading`)."""
        pixels = decoded.pixels[..., :1] if grey_in_colour(decoded.pixels) else decoded.pixels
        return self._read(pixels, self.model_for(pixels.shape[-1]))[0]

    def _read(self, pixels: np.ndarray, loaded) -> tuple[Reading, np.ndarray | None]:
        """The reading of ``pixels``, and what its tiles are cut from when not ``pixels``."""
        if self.options.sigma == "auto":
            sigma = estimate_level(pixels) if loaded.noise_level_input else None
        else:
            sigma = float(self.options.sigma)
        kind, source, stabilizer, level = "gaussian", None, None, sigma
        if self.options.sigma == "auto" and sigma:
            kind, source, stabilizer, level = self._treatment(pixels, sigma)
        low, span = stretch(pixels if source is None else source)
        reading = Reading(
            sigma=level if kind == "camera" else sigma,  # the report gives the level the camera model is told
            noise=kind if sigma is not None else None, level=level, stabilizer=stabilizer, low=low, span=span,
            bounds=(float(pixels.min()), float(pixels.max())))
        return reading, source

    @staticmethod
    def _source(pixels: np.ndarray, reading: Reading) -> np.ndarray | None:
        """What the tiles of ``pixels`` are cut from under ``reading``'s treatment, when not ``pixels``."""
        if reading.noise == "correlated":
            return shuffle.to_mosaic(pixels)
        if reading.noise == "impulse":
            return impulses.remove(pixels)[0]
        if reading.noise == "poisson":
            return variance.stabilize(pixels, reading.stabilizer)
        return None

    def prepare(self, job: Job, decoded: io.Decoded, reading: Reading | None = None) -> _Image:
        """``decoded`` ready for the model: its reading, what its tiles are cut from, its grid.
        With ``reading`` (:meth:`read` of a whole image), ``decoded`` is a part of that image and
        is treated as the whole was: the same level, treatment, stretch and bounds."""
        pixels = decoded.pixels
        replicated = grey_in_colour(pixels)
        if replicated:  # denoised as the grey image it is, written back in R, G and B
            pixels = pixels[..., :1]
        channels = pixels.shape[-1]
        loaded = self.model_for(channels)
        split = loaded.channels == 1 and channels == 3
        if reading is None:
            reading, source = self._read(pixels, loaded)
        else:
            source = self._source(pixels, reading)
        job.sigma, job.noise, job.model, job.ensemble = reading.sigma, reading.noise, loaded.name, self.arithmetic(loaded)[1]
        fed = (reading.level or 0.0) / reading.span * (GREY_IN_COLOUR if loaded.channels == 3 and channels == 1 else 1.0)
        if self.options.strength > 1.0:  # --strength: told more; at 1 nothing changes
            fed *= strengths.level_factor(self.options.strength)
        if replicated and source is None:
            source = pixels
        fixed = loaded.tile_size is not None
        shape = (pixels if source is None else source).shape
        grid = tiling.grid(shape[0], shape[1], loaded.tile_size if fixed else self.tile_for(loaded), loaded.multiple,
                           MARGIN, fixed)
        return _Image(job, decoded, loaded, grid, tiling.Blender(grid, channels), fed, split, low=reading.low,
                      span=reading.span, stabilizer=reading.stabilizer, source=source, bounds=reading.bounds,
                      replicate=replicated, mosaic_of=pixels.shape[:2] if reading.noise == "correlated" else None,
                      original=pixels if self.options.strength < 1.0 else None, strength=self.options.strength)

    def tile_for(self, loaded) -> int:
        """--tile, or less where a tile's network passes would outgrow a batch's pixels (the
        memory bound): a mean of four evaluations gets tiles of half the area."""
        return min(self.options.tile, math.isqrt(self.options.batch_pixels // loaded.passes))

    def _treatment(self, pixels: np.ndarray, sigma: float):
        """How to treat the noise of an image whose Gaussian estimate is ``sigma``: ``(kind, the
        pixels the model sees when not these, the stabiliser, the level the model is told)``."""
        if self.options.noise == "camera":  # the camera models take it whole; colour is told the fitted peak's level
            peak = variance.camera_peak(pixels) if pixels.shape[-1] == 3 else None
            return "camera", None, None, sigma if peak is None else 255.0 * effective_sigma("camera", peak)
        if self.options.noise == "correlated":  # four half-size images, each with near-independent noise
            mosaic = shuffle.to_mosaic(pixels)
            return "correlated", mosaic, None, estimate_sigma(mosaic)
        if self.options.noise == "impulse":  # filled from their neighbours; what is left is Gaussian
            cleared, _ = impulses.remove(pixels)
            return "impulse", cleared, None, estimate_sigma(cleared)
        stabilizer = self._stabilizer(pixels, sigma)
        if stabilizer is None:
            return "gaussian", None, None, sigma
        stabilized = variance.stabilize(pixels, stabilizer)
        low, span = stretch(stabilized)  # the stabilised noise has a level of its own: measured
        return "poisson", stabilized, stabilizer, estimate_sigma((stabilized - low) / span) * span

    def _stabilizer(self, pixels: np.ndarray, sigma: float) -> tuple[float, float] | None:
        """The noise function to stabilise an image's noise with (``sigma``: its estimated level),
        or None to take the noise as Gaussian."""
        if self.options.noise not in ("auto", "poisson"):
            return None
        function = variance.noise_function(pixels)
        if function is None or function[0] <= 0:
            return None
        if self.options.noise == "poisson":
            return function
        return function if variance.is_signal_dependent(function, float(pixels.mean()), sigma / 255.0) else None


def stretch(pixels: np.ndarray) -> tuple[float, float]:
    """``(low, span)`` that map an image's darkest to brightest value onto 0-1 for the model.

    The models learned on photos that use the whole 0-1 range; they are not scale-invariant.
    A dark 16-bit scan using 0.4% of the range came out as noise; Set12 at sigma 25 squeezed into
    a tenth of it (sigma 2.5) is 1.2 dB better stretched, told sigma / span. Noisy photos mostly
    span 0-1 already and are unchanged."""
    low, high = float(pixels.min()), float(pixels.max())
    span = high - low
    return (low, span) if span > 1e-6 else (0.0, 1.0)


def _model_tiles(image: _Image):
    """The model-ready tiles of an image: (tile index, array with the model's channels)."""
    pixels = image.decoded.pixels if image.source is None else image.source
    image.source = None  # tiles are cut from it once; the blend does not need it
    if image.span != 1.0 or image.low != 0.0:
        pixels = (pixels - np.float32(image.low)) / np.float32(image.span)
    if image.model.channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    for index, tile in enumerate(tiling.extract(pixels, image.grid)):
        if image.split_channels:
            for channel in range(3):
                yield (index, channel), tile[..., channel : channel + 1]
        else:
            yield (index, None), tile


class _ReadAhead:
    """Decode files in a thread pool ahead of the model, from the moment it is created.

    Created before TensorFlow loads, so the seconds of that import already decode images (Pillow
    and numpy release the GIL). Yields ``(job, prepared)`` in input order: ``prepared`` is an
    :class:`_Image` when the model was known by decode time, else the bare decode for the
    caller to prepare; ``None`` for a job already finished (skipped or failed). Memory is bounded:
    at most ``BUDGET`` decoded values wait, and up to ``workers + 1`` files whatever their size.
    """

    BUDGET = 1 << 25  # 32M values, 128 MB of float32: an 11-megapixel colour photo
    MOST = 8192  # files in flight at most, however small

    def __init__(self, jobs: Iterator[Job], work: Callable, workers: int):
        self.work, self.least = work, workers + 1
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self.ready: queue.Queue = queue.Queue()
        self.space = threading.Condition()
        self.waiting = self.held = 0  # files handed out but not yet taken, and their decoded values
        self.stopped = False
        self.feeder = threading.Thread(target=self._feed, args=(jobs,), daemon=True, name="plan")
        self.feeder.start()

    def _feed(self, jobs: Iterator[Job]) -> None:
        try:
            for job in jobs:
                with self.space:
                    self.space.wait_for(lambda: self.stopped or self.waiting < self.least
                                        or (self.waiting < self.MOST and self.held < self.BUDGET))
                    if self.stopped:
                        return
                    self.waiting += 1
                self.ready.put((job, self.pool.submit(self._decode, job) if job.status == "pending" else None))
        except BaseException as error:  # e.g. an unreadable folder: raised in the consuming thread
            self.ready.put((None, error))
            return
        self.ready.put(None)

    def _decode(self, job: Job):
        job.started = time.time()
        try:
            result = self.work(job, io.read_image(job.input, BYTES_PER_VALUE))
        except io.ImageError as error:
            job.status, job.reason = "failed", str(error)
            return None
        finally:
            job.seconds += time.time() - job.started
        with self.space:
            self.held += _values(result)
        return result

    def __iter__(self):
        try:
            while (item := self.ready.get()) is not None:
                job, future = item
                if job is None:
                    raise future
                result = None if future is None else future.result()  # re-raises a worker's error
                with self.space:
                    self.waiting -= 1
                    self.held -= _values(result)
                    self.space.notify()
                yield job, result
        finally:
            self.close()

    def close(self) -> None:
        with self.space:
            self.stopped = True
            self.space.notify_all()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _values(result) -> int:
    if result is None:
        return 0
    decoded = result.decoded if isinstance(result, _Image) else result
    return decoded.pixels.size


def run_batch(options: RunOptions) -> dict:
    """Denoise every input image into the output tree; return the summary counts."""
    def body(recorder: Recorder) -> None:
        runner = Runner(options, recorder.say)
        reader = _ReadAhead(plan(options), runner.prepare_if_ready, options.workers)
        with contextlib.closing(reader), concurrent.futures.ThreadPoolExecutor(options.workers) as writers:
            _select_device(options.device)  # TensorFlow loads while the reader decodes
            recorder.settings["precision"] = runner.arithmetic()[0]
            recorder.settings["strength"] = options.strength
            batcher = _Batcher(runner, options, writers, recorder)
            for job, prepared in reader:
                if job.status != "pending" or prepared is None:
                    recorder.finish(job)
                    continue
                if isinstance(prepared, io.Decoded):
                    began = time.time()
                    prepared = runner.prepare(job, prepared)
                    job.seconds += time.time() - began
                batcher.add(prepared)
            batcher.flush_all()

    return _run_guarded(options, body)


def _select_device(device: str) -> None:
    from denoise import runtime

    try:
        runtime.tensorflow(device)
    except ValueError as error:
        raise UsageError(str(error)) from None


class _Batcher:
    """Groups tiles of the same model and shape into batches, runs them, hands back results.

    Small tiles are batched in proportion: a batch holds at most ``batch_size`` full tiles'
    worth of pixels, divided by the model's passes (a mean of four network evaluations takes a
    quarter of the tiles, so memory stays the same). At most two batches' worth of tiles wait
    at any time (bounded memory).
    """

    def __init__(self, runner: Runner, options: RunOptions, writers, recorder: Recorder):
        self.runner, self.options, self.writers, self.recorder = runner, options, writers, recorder
        self.buckets: dict[tuple, list] = {}
        self.budget = options.batch_pixels
        self.waiting_pixels = 0
        self.writes: set = set()

    def _limit(self, key, passes: int) -> int:
        _, height, width, _ = key
        return max(1, min(1024, self.budget // (height * width * passes)))

    def add(self, image: _Image) -> None:
        for tile_id, tile in _model_tiles(image):
            key = (image.model.name, tile.shape[0], tile.shape[1], tile.shape[2])
            bucket = self.buckets.setdefault(key, [])
            bucket.append((image, tile_id, tile))
            self.waiting_pixels += tile.shape[0] * tile.shape[1]
            if len(bucket) >= self._limit(key, image.model.passes):
                self._run(key)
            elif self.waiting_pixels > 2 * self.budget:
                self._run(max(self.buckets, key=lambda k: len(self.buckets[k]) * k[1] * k[2]))

    def flush_all(self) -> None:
        for key in list(self.buckets):
            self._run(key)
        concurrent.futures.wait(self.writes)

    def _run(self, key) -> None:
        bucket = self.buckets.pop(key, [])
        if not bucket:
            return
        self.waiting_pixels -= sum(tile.shape[0] * tile.shape[1] for _, _, tile in bucket)
        loaded = bucket[0][0].model
        images = np.stack([tile for _, _, tile in bucket]).astype(np.float32)
        sigmas = np.array([[image.sigma / 255.0] for image, _, _ in bucket], np.float32)
        began = time.time()
        outputs = self.runner.function(loaded)(images, sigmas).numpy()
        share = (time.time() - began) / len(bucket)  # the tiles of a batch have one shape: equal shares
        for image, _, _ in bucket:
            image.job.seconds += share
        finished = []
        for (image, (index, channel), _), output in zip(bucket, outputs):
            if channel is None:
                if image.model.channels == 3 and image.decoded.pixels.shape[-1] == 1:
                    output = output.mean(axis=-1, keepdims=True)
                image.blender.add(index, output)
            else:
                planes = image.planes.setdefault(index, [None] * 3)
                planes[channel] = output[..., 0]
                if all(plane is not None for plane in planes):
                    image.blender.add(index, np.stack(image.planes.pop(index), axis=-1))
            if image.blender.done and not image.submitted:
                image.submitted = True
                finished.append(image)
        self._submit(finished)

    def _submit(self, images: list[_Image]) -> None:
        # One writer task per few images, not per image: tiny images come a thousand a batch.
        size = max(1, min(64, -(-len(images) // self.options.workers)))
        for start in range(0, len(images), size):
            self.writes = {future for future in self.writes if not future.done()}
            if len(self.writes) >= 2 * self.options.workers:  # bounded memory: let the writers catch up
                concurrent.futures.wait(self.writes, return_when=concurrent.futures.FIRST_COMPLETED)
            self.writes.add(self.writers.submit(self._finish, images[start : start + size]))

    def _finish(self, images: list[_Image]) -> None:
        for image in images:
            image.decoded.pixels = None  # every tile is done: free the input before encoding
            began = time.time()
            pixels = image.denoised()
            image.job.seconds += time.time() - began
            _write(image.job, image.decoded, pixels, self.options, self.recorder)


class _Keeper(_Batcher):
    """A :class:`_Batcher` that keeps each finished image's pixels instead of writing them."""

    def __init__(self, runner: Runner):
        super().__init__(runner, runner.options, None, None)
        self.done: dict[int, np.ndarray] = {}

    def _submit(self, images: list[_Image]) -> None:
        for image in images:
            self.done[image.job.index] = image.denoised()


def denoise_decoded(runner: Runner, images: list[tuple[Job, io.Decoded]],
                    readings: list[Reading] | None = None) -> list[np.ndarray]:
    """Denoise images already decoded, exactly as ``run`` does (same sigma, tiles, batching
    rules and blending), and return their pixels (float32 in [0, 1], H x W x C) in order instead
    of writing them: for callers that read and write files their own way (``denoise beam``).
    Any error is raised; ``job.sigma`` is set as in ``run``. ``readings`` (one per image, from
    :meth:`Runner.read` of the whole image each is a part of) replace each image's own reading."""
    keeper = _Keeper(runner)
    for number, (job, decoded) in enumerate(images):
        keeper.add(runner.prepare(job, decoded, None if readings is None else readings[number]))
    keeper.flush_all()
    return [keeper.done[job.index] for job, _ in images]
