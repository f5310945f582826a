"""Decode and encode small image files in worker processes, off the GIL of the process that runs
the model.

A batch of thousands of tiny images is bound by Python, not arithmetic: decoding, encoding and
writing each file holds the GIL for about as long as the network takes for it, and TensorFlow's
import holds it for seconds at the start. Worker processes (as many as the run's worker threads)
doing that work for small files let the model's process keep its GIL to itself. Large files stay in threads, where Pillow and numpy
release the GIL anyway and where copying their pixels between processes would cost more than it
saves.

The processes come from a fork server, a fresh process that imports this module and what it needs
(:mod:`denoise.io`, numpy, Pillow), so they never inherit TensorFlow or a lock held by another
thread. They ignore Ctrl-C: the run
stops feeding them and waits for what they are writing, so an interrupt never leaves part of a
file. Where processes cannot be started (no fork server on this platform, no temporary folder for
its socket) or a worker dies, the work runs in the calling thread instead: same bytes, same errors.
"""

from __future__ import annotations

import contextlib
import io as stdio
import multiprocessing
import os
import queue
import signal
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from denoise import io, timing
from denoise.report import one_line

# Files up to this many bytes, holding up to this many pixel values, go to the processes (and
# outputs up to this many values): a 28x28 PNG is about 1 KB. Beyond it the pickled pixels cost
# about what the decode does. The values are bounded too, since a blank scan compresses to a few
# KB: a chunk of 256 files brings back at most 64 MB of float32.
SMALL = 1 << 16


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_images(paths: list[Path], bytes_per_value: int) -> list:
    """Per path, its :class:`io.Decoded`, the :class:`io.ImageError` saying why it has none, or
    None for an image of more than SMALL values, left for the caller to read itself."""
    decoded = []
    for path in paths:
        try:
            data = io.read_file(path)
            decoded.append(None if _values_in(data) > SMALL else io.decode_bytes(data, bytes_per_value))
        except io.ImageError as error:
            decoded.append(error)
    return decoded


def _values_in(data: bytes) -> int:
    """The pixel values an encoded image holds, from its header (0 where it cannot be read: the
    decode then says why)."""
    try:
        with Image.open(stdio.BytesIO(data)) as image:
            return image.size[0] * image.size[1] * min(3, len(image.getbands()))
    except Exception:
        return 0


def encode_and_write(items: list[tuple[Path, io.Decoded, np.ndarray]], quality: int) -> list[str | None]:
    """Encode each ``(output, decoded, pixels)`` and write it atomically; per item, None when
    written, else the reason it was not (as ``ImageError`` or ``OSError`` say it)."""
    failures = []
    for output, decoded, pixels in items:
        try:
            with timing.stage("encode"):
                data = io.encode(decoded, pixels, io.EXTENSIONS[output.suffix.lower()], quality)
            with timing.stage("write"):
                io.write_atomic(output, data)
            failures.append(None)
        except Exception as error:  # a full disk, a read-only folder, an encoder refusing the data
            failures.append(f"cannot write {io.shown(output)}: {one_line(error)}")
    return failures


def _serve(connection) -> None:
    """A worker: answer each ``(function name, args)`` with ``(True, result)`` or ``(False, error)``
    until told ``None`` or its parent is gone."""
    _ignore_interrupts()
    functions = {"read": read_images, "write": encode_and_write}
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        name, args = request
        try:
            answer = (True, functions[name](*args))
        except Exception as error:
            answer = (False, error)
        connection.send(answer)


class Offload:
    """``workers`` processes, started at the first small file, each talking to one thread at a time
    over its own pipe (no dispatcher thread between them); :meth:`close` stops them once the
    requests under way are answered."""

    def __init__(self, workers: int):
        self.workers = workers
        self.idle: queue.LifoQueue | None = None
        self.processes: list = []
        self.broken = "forkserver" not in multiprocessing.get_all_start_methods()
        self.lock = threading.Lock()

    def takes(self, path: Path) -> bool:
        """Whether ``path`` is small enough for the processes (a file that cannot be seen is,
        so that the reason comes from the same read as any other's)."""
        try:
            return not self.broken and os.stat(path).st_size <= SMALL
        except OSError:
            return True

    def read(self, paths: list[Path], bytes_per_value: int) -> list:
        """:func:`read_images` of ``paths``, in a process (None: an image too large to send back)."""
        answer = self._call("read", paths, bytes_per_value)
        return read_images(paths, bytes_per_value) if answer is None else answer[0]

    def write(self, items: list[tuple[Path, io.Decoded, np.ndarray]], quality: int) -> list[str | None]:
        """:func:`encode_and_write` of ``items``, in a process when their pixels are small."""
        if all(pixels.size <= SMALL for _, _, pixels in items):
            answer = self._call("write", items, quality)
            if answer is not None:
                return answer[0]
        return encode_and_write(items, quality)

    def _call(self, name: str, *args) -> tuple | None:
        """``(result,)`` of a worker (its error raised here), or None when no worker can take it."""
        idle = self._start()
        if idle is None:
            return None
        connection = idle.get()
        if connection is None:  # a dead worker's slot, or the pool is closed: work here
            idle.put(None)
            return None
        try:
            connection.send((name, args))
            done, result = connection.recv()
        except (EOFError, OSError):  # the worker died (out of memory, killed): its slot stays dead
            connection.close()
            idle.put(None)
            return None
        idle.put(connection)
        if not done:
            raise result
        return (result,)

    def _start(self) -> queue.LifoQueue | None:
        with self.lock:
            if self.idle is None and not self.broken:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["denoise.offload"])
                self.idle = queue.LifoQueue()
                try:
                    for _ in range(self.workers):
                        ours, theirs = context.Pipe()
                        process = context.Process(target=_serve, args=(theirs,), daemon=True, name="denoise-offload")
                        process.start()
                        theirs.close()
                        self.processes.append(process)
                        self.idle.put(ours)
                except Exception:  # no fork server here (say, no writable temporary folder): work in threads
                    self.broken = True  # what did start is stopped by close()
            return None if self.broken else self.idle

    def close(self) -> None:
        """Stop the workers: each finishes the request it has (a write is never cut short)."""
        with self.lock:
            self.broken = True  # any later call works in its own thread
            idle, self.idle = self.idle, None
        if idle is None:
            return
        for _ in self.processes:
            connection = idle.get()  # waits for the request under way on it
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.send(None)
                connection.close()
        for _ in self.processes:
            idle.put(None)  # a caller still holding the queue works in its own thread
        for process in self.processes:
            process.join()
