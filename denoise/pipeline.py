"""Batch denoising: files -> decode -> treat -> tiles -> model -> blend -> undo -> encode -> files.

The public entry points; each stage lives in its own module:

- :mod:`denoise.plan` walks the inputs and decides each output (lazily: the first image starts at once);
- :mod:`denoise.stream` decodes ahead of the model in a thread pool, starting before TensorFlow
  has loaded (its import takes seconds), batches tiles and writes finished images in threads;
- :mod:`denoise.offload` decodes and encodes small files in processes, off the model's GIL;
- :mod:`denoise.treatments` reads each image's noise and prepares it for the model, and undoes
  that on the result;
- :mod:`denoise.engine` loads each model once and compiles it once for any tile and batch size;
- :mod:`denoise.report` says what happened, and handles signals and exit codes.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from denoise import io, treatments
from denoise.engine import Engine, select_device
from denoise.offload import Offload
from denoise.plan import Job, RunOptions, plan
from denoise.report import Recorder, guarded
from denoise.stream import Batcher, ReadAhead, Writers


def run_batch(options: RunOptions) -> dict:
    """Denoise every input image into the output tree; return the summary counts."""

    def body(recorder: Recorder) -> None:
        engine = Engine(options.inference, recorder.say)
        offload = Offload(options.workers)
        reader = ReadAhead(plan(options), lambda job, decoded: _prepare_if_loaded(engine, job, decoded),
                           options.workers, offload)
        writers = Writers(options.workers, options.quality, recorder, offload)
        with contextlib.closing(offload), contextlib.closing(reader), contextlib.closing(writers):
            select_device(options.inference.device)  # TensorFlow loads while the reader decodes
            recorder.settings["precision"] = engine.arithmetic()[0]
            recorder.settings["strength"] = options.inference.strength
            batcher = Batcher(engine, options.inference.batch_pixels, writers)
            for job, prepared in reader:
                if job.status != "pending" or prepared is None:
                    recorder.finish(job)
                    continue
                if isinstance(prepared, io.Decoded):
                    began = time.time()
                    prepared = treatments.prepare(job, prepared, engine)
                    job.seconds += time.time() - began
                batcher.add(prepared)
            batcher.flush()

    return guarded(options, body)


def _prepare_if_loaded(engine: Engine, job: Job, decoded: io.Decoded):
    """In a decode thread: the prepared image when its model is loaded already, else ``decoded``
    as it is, for the main thread to prepare (models load there, once TensorFlow has started)."""
    prepared = treatments.prepare(job, decoded, engine, loaded_only=True)
    return decoded if prepared is None else prepared


def denoise_decoded(engine: Engine, images: list[tuple[Job, io.Decoded]],
                    readings: list[treatments.Reading] | None = None) -> list[np.ndarray]:
    """Denoise images already decoded, exactly as ``run`` does (same sigma, tiles, batching
    rules and blending), and return their pixels (float32 in [0, 1], H x W x C) in order instead
    of writing them: for callers that read and write files their own way (``denoise beam``).
    Any error is raised; ``job.sigma`` is set as in ``run``. ``readings`` (one per image, from
    :func:`treatments.read` of the whole image each is a part of) replace each image's own reading."""
    done: dict[int, np.ndarray] = {}

    def keep(finished: list[treatments.Image]) -> None:
        for image in finished:
            done[image.job.index] = image.result()

    batcher = Batcher(engine, engine.inference.batch_pixels, keep)
    for number, (job, decoded) in enumerate(images):
        batcher.add(treatments.prepare(job, decoded, engine, None if readings is None else readings[number]))
    batcher.flush()
    return [done[job.index] for job, _ in images]
