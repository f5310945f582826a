"""``denoise add-noise``: noisy copies of images, with the same file rules as ``run`` and no model."""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np

from denoise import io
from denoise.noise import NoiseSpec, add_noise_uint, seed_for
from denoise.plan import Job, RunOptions, plan
from denoise.report import Recorder, guarded
from denoise.stream import BYTES_PER_VALUE, write


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

    return guarded(options, body)


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
    write([(job, decoded, noisy)], options.quality, recorder)
