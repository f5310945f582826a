"""The stream of a batch: files decoded ahead of the model in a thread pool, tiles batched through
the engine, finished images handed to a sink (the writers, or a caller keeping the pixels).

Memory is bounded at each stage: what waits decoded, what waits in batches, what waits to be written.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Callable, Iterator

import numpy as np

from denoise import io, timing, treatments
from denoise.plan import Job
from denoise.report import Recorder, one_line

# What a run holds per pixel value of an image at its peak (the decoded float32 input, the blend's
# sum and weights, the output, the encoder's copy), measured at about 19: an image that would need
# more than the memory available is refused from its header.
BYTES_PER_VALUE = 20


class ReadAhead:
    """Decode files in a thread pool ahead of the model, from the moment it is created.

    Created before TensorFlow loads, so the seconds of that import already decode images (Pillow
    and numpy release the GIL). Yields ``(job, prepared)`` in input order: ``prepared`` is an
    :class:`treatments.Image` when the model was known by decode time, else the bare decode for the
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
            with timing.stage("decode"):
                decoded = io.read_image(job.input, BYTES_PER_VALUE)
            with timing.stage("prepare"):
                result = self.work(job, decoded)
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
            while True:
                with timing.stage("wait for input"):
                    item = self.ready.get()
                if item is None:
                    break
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
    decoded = result.decoded if isinstance(result, treatments.Image) else result
    return decoded.pixels.size


class Batcher:
    """Groups tiles of the same model and shape into batches, runs them through the engine, and
    hands each list of finished images to ``sink``.

    Small tiles are batched in proportion: a batch holds at most ``budget`` pixels (--batch-size
    full tiles), divided by the model's passes (a mean of four network evaluations takes a
    quarter of the tiles, so memory stays the same). At most two batches' worth of tiles wait
    at any time (bounded memory).
    """

    def __init__(self, engine, budget: int, sink: Callable[[list[treatments.Image]], None]):
        self.engine, self.budget, self.sink = engine, budget, sink
        self.buckets: dict[tuple, list] = {}
        self.waiting_pixels = 0

    def _limit(self, key, passes: int) -> int:
        _, height, width, _ = key
        return max(1, min(1024, self.budget // (height * width * passes)))

    def add(self, image: treatments.Image) -> None:
        for tile_id, tile in image.tiles():
            key = (image.model.name, tile.shape[0], tile.shape[1], tile.shape[2])
            bucket = self.buckets.setdefault(key, [])
            bucket.append((image, tile_id, tile))
            self.waiting_pixels += tile.shape[0] * tile.shape[1]
            if len(bucket) >= self._limit(key, image.model.passes):
                self._run(key)
            elif self.waiting_pixels > 2 * self.budget:
                self._run(max(self.buckets, key=lambda k: len(self.buckets[k]) * k[1] * k[2]))

    def flush(self) -> None:
        for key in list(self.buckets):
            self._run(key)

    def _run(self, key) -> None:
        bucket = self.buckets.pop(key, [])
        if not bucket:
            return
        self.waiting_pixels -= sum(tile.shape[0] * tile.shape[1] for _, _, tile in bucket)
        loaded = bucket[0][0].model
        images = np.stack([tile for _, _, tile in bucket]).astype(np.float32)
        sigmas = np.array([[image.level / 255.0] for image, _, _ in bucket], np.float32)
        began = time.time()
        with timing.stage("model"):
            outputs = self.engine.function(loaded)(images, sigmas).numpy()
        share = (time.time() - began) / len(bucket)  # the tiles of a batch have one shape: equal shares
        finished = []
        for (image, tile_id, _), output in zip(bucket, outputs):
            image.job.seconds += share
            image.add(tile_id, output)
            if image.done and not image.submitted:
                image.submitted = True
                finished.append(image)
        if finished:
            self.sink(finished)


class Writers:
    """The sink of ``run``: finished images blended back, encoded and written atomically by a pool
    of threads while the next batch computes."""

    def __init__(self, workers: int, quality: int, recorder: Recorder):
        self.workers, self.quality, self.recorder = workers, quality, recorder
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="write")
        self.writes: set = set()

    def __call__(self, images: list[treatments.Image]) -> None:
        # One writer task per few images, not per image: tiny images come a thousand a batch.
        size = max(1, min(64, -(-len(images) // self.workers)))
        for start in range(0, len(images), size):
            self.writes = {future for future in self.writes if not future.done()}
            if len(self.writes) >= 2 * self.workers:  # bounded memory: let the writers catch up
                concurrent.futures.wait(self.writes, return_when=concurrent.futures.FIRST_COMPLETED)
            self.writes.add(self.pool.submit(self._finish, images[start : start + size]))

    def _finish(self, images: list[treatments.Image]) -> None:
        for image in images:
            image.decoded.pixels = None  # every tile is done: free the input before encoding
            began = time.time()
            with timing.stage("blend"):
                pixels = image.result()
            image.job.seconds += time.time() - began
            write(image.job, image.decoded, pixels, self.quality, self.recorder)

    def close(self) -> None:
        """Wait for every write (a Ctrl-C still lets the files being written finish)."""
        self.pool.shutdown(wait=True)


def write(job: Job, decoded: io.Decoded, pixels: np.ndarray, quality: int, recorder: Recorder) -> None:
    """Encode and atomically write one output; any failure is recorded against the job."""
    began = time.time()
    try:
        fmt = io.EXTENSIONS[job.output.suffix.lower()]
        with timing.stage("encode"):
            data = io.encode(decoded, pixels, fmt, quality)
        with timing.stage("write"):
            io.write_atomic(job.output, data)
        job.status = "ok"
    except Exception as error:  # a full disk, a read-only folder, an encoder refusing the data
        job.status, job.reason = "failed", f"cannot write {io.shown(job.output)}: {one_line(error)}"
    job.seconds += time.time() - began
    recorder.finish(job)
