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
from denoise.offload import Offload, encode_and_write
from denoise.plan import Job
from denoise.report import Recorder

# What a run holds per pixel value of an image at its peak (the decoded float32 input, the blend's
# sum and weights, the output, the encoder's copy), measured at about 19: an image that would need
# more than the memory available is refused from its header.
BYTES_PER_VALUE = 20


class ReadAhead:
    """Decode files in a thread pool ahead of the model, from the moment it is created.

    Created before TensorFlow loads, so the seconds of that import already decode images (Pillow
    and numpy release the GIL). Small files go to the processes of ``offload`` in chunks, so a
    folder of thousands of thumbnails costs this process one request per chunk, not per file.
    Yields ``(job, prepared)`` in input order: ``prepared`` is an :class:`treatments.Image` when
    the model was known by decode time, else the bare decode for the caller to prepare; ``None``
    for a job already finished (skipped or failed). Memory is bounded: at most ``BUDGET`` decoded
    values wait, and up to ``workers + 1`` files whatever their size.
    """

    BUDGET = 1 << 25  # 32M values, 128 MB of float32: an 11-megapixel colour photo
    MOST = 8192  # files in flight at most, however small
    CHUNK = 256  # small files a request at most; the first chunks are smaller, so the first image comes soon

    def __init__(self, jobs: Iterator[Job], work: Callable, workers: int, offload: Offload | None = None):
        self.work, self.least, self.offload = work, workers + 1, offload
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self.ready: queue.Queue = queue.Queue()
        self.space = threading.Condition()
        self.waiting = self.held = 0  # files handed out but not yet taken, and their decoded values
        self.stopped = False
        self.feeder = threading.Thread(target=self._feed, args=(jobs,), daemon=True, name="plan")
        self.feeder.start()

    def _room(self) -> bool:
        return self.stopped or self.waiting < self.least or (self.waiting < self.MOST and self.held < self.BUDGET)

    def _feed(self, jobs: Iterator[Job]) -> None:
        chunk: list[Job] = []  # small files to decode in one request, in input order
        size = 8

        def flush() -> None:
            nonlocal chunk, size
            if chunk:
                future = self.pool.submit(self._decode_small, chunk)
                for index, job in enumerate(chunk):
                    self.ready.put((job, (future, index)))
                chunk, size = [], min(2 * size, self.CHUNK)

        try:
            for job in jobs:
                with self.space:
                    if not self._room():
                        flush()  # what it holds must reach the consumer, whose progress makes room
                    self.space.wait_for(self._room)
                    if self.stopped:
                        return
                    self.waiting += 1
                if job.status == "pending" and self.offload is not None and self.offload.takes(job.input):
                    chunk.append(job)
                    if len(chunk) >= size:
                        flush()
                    continue
                flush()
                self.ready.put((job, self.pool.submit(self._decode, job) if job.status == "pending" else None))
            flush()
        except BaseException as error:  # e.g. an unreadable folder: raised in the consuming thread
            flush()
            self.ready.put((None, error))
            return
        self.ready.put(None)

    def _decode(self, job: Job):
        job.started = time.time()
        try:
            with timing.stage("decode"):
                decoded = io.read_image(job.input, BYTES_PER_VALUE)
        except io.ImageError as error:
            decoded = error
        return self._prepare(job, decoded, time.time() - job.started)

    def _decode_small(self, jobs: list[Job]) -> list:
        began = time.time()
        with timing.stage("decode"):
            decoded = self.offload.read([job.input for job in jobs], BYTES_PER_VALUE)
        share = (time.time() - began) / len(jobs)
        results = []
        for job, each in zip(jobs, decoded):
            job.started = began
            if each is None:  # a small file of many pixels (a blank scan): read here, as a large one
                results.append(self._decode(job))
            else:
                results.append(self._prepare(job, each, share))
        return results

    def _prepare(self, job: Job, decoded, seconds: float):
        """The work on one decoded file (``decoded`` an ImageError when it could not be read)."""
        job.seconds += seconds
        if isinstance(decoded, io.ImageError):
            job.status, job.reason = "failed", str(decoded)
            return None
        began = time.time()
        try:
            with timing.stage("prepare"):
                result = self.work(job, decoded)
        except io.ImageError as error:
            job.status, job.reason = "failed", str(error)
            return None
        finally:
            job.seconds += time.time() - began
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
                if isinstance(future, tuple):  # one of a chunk
                    future, index = future
                    result = future.result()[index]  # re-raises a worker's error
                else:
                    result = None if future is None else future.result()
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
    of threads (small images by the processes of ``offload``) while the next batch computes."""

    def __init__(self, workers: int, quality: int, recorder: Recorder, offload: Offload | None = None):
        self.workers, self.quality, self.recorder, self.offload = workers, quality, recorder, offload
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
        items = []
        for image in images:
            image.decoded.pixels = None  # every tile is done: free the input before encoding
            began = time.time()
            with timing.stage("blend"):
                items.append((image.job, image.decoded, image.result()))
            image.job.seconds += time.time() - began
        write(items, self.quality, self.recorder, self.offload)

    def close(self) -> None:
        """Wait for every write (a Ctrl-C still lets the files being written finish)."""
        self.pool.shutdown(wait=True)


def write(items: list[tuple[Job, io.Decoded, np.ndarray]], quality: int, recorder: Recorder,
          offload: Offload | None = None) -> None:
    """Encode and atomically write each ``(job, decoded, pixels)``; a failure is recorded against
    its job."""
    began = time.time()
    work = [(job.output, decoded, pixels) for job, decoded, pixels in items]
    failures = encode_and_write(work, quality) if offload is None else offload.write(work, quality)
    share = (time.time() - began) / max(1, len(items))
    for (job, _, _), failure in zip(items, failures):
        if failure is None:
            job.status = "ok"
        else:
            job.status, job.reason = "failed", failure
        job.seconds += share
        recorder.finish(job)
