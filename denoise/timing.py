"""Where a run's time goes: the stages of the stream report their wall and thread-CPU seconds to a
listener, when one is set (benchmarks/profile_run.py sets one); otherwise nothing is measured."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

# Called as listener(stage, wall seconds, thread CPU seconds), from any thread.
listener: Callable[[str, float, float], None] | None = None


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` for the listener, if there is one."""
    if listener is None:
        yield
        return
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        listener(name, time.perf_counter() - wall, time.thread_time() - cpu)
