"""Where the time of `denoise run` goes: the same command, with timers around its stages.

  python benchmarks/profile_run.py PROFILE.json -- run INPUT OUTPUT --model ... --sigma 25

Wraps (by attribute, so it follows the package as it changes) the stages of the pipeline and
adds up, per stage, wall seconds, the CPU seconds of the calling thread and the call count:

  start-up         importing TensorFlow and choosing the device (runtime.tensorflow)
  model load       registry.load (reading the .keras file, building the model)
  decode           io.read_image (file read + Pillow decode + conversion to float32)
  sigma estimate   estimate_sigma as called by the pipeline (only with --sigma auto)
  tiling           cutting images into model tiles (tiles.extract)
  model            each call of the compiled inference function (first call = tracing, apart)
  blend            tiles.Blender.add / result (weighting tiles back into the image)
  encode           io.encode (float -> integers, Pillow encoder)
  write            io.write_atomic (temporary file + rename)
  wait for input   time the main thread spends waiting on the tf.data decode stage

Stages run on several threads at once (tf.data workers decode, writer threads encode, the
main thread runs the model), so their wall seconds overlap; the CPU seconds do not. The
model's arithmetic runs in TensorFlow's own thread pool, so its CPU shows up only in the
process total: "unattributed CPU" = process CPU - the stages' thread CPU, which is mostly the
model's compute plus the Python / tf.data machinery around it.
"""

from __future__ import annotations

import collections
import functools
import json
import resource
import sys
import threading
import time
from pathlib import Path

STATS: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
LOCK = threading.Lock()
START = time.perf_counter()


def _add(stage: str, wall: float, cpu: float) -> None:
    with LOCK:
        entry = STATS[stage]
        entry[0] += wall
        entry[1] += cpu
        entry[2] += 1


def timed(stage: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _add(stage, time.perf_counter() - wall, time.thread_time() - cpu)

    return wrapper


def timed_iterator(stage: str, function):
    """Time each step of a generator (the time its consumer waits for the next item)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        iterator = iter(function(*args, **kwargs))
        while True:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                item = next(iterator)
            except StopIteration:
                _add(stage, time.perf_counter() - wall, time.thread_time() - cpu)
                return
            _add(stage, time.perf_counter() - wall, time.thread_time() - cpu)
            yield item

    return wrapper


def patch(owner, name: str, stage: str, wrap=timed) -> bool:
    function = getattr(owner, name, None)
    if function is None:
        return False
    setattr(owner, name, wrap(stage, function))
    return True


def install() -> list[str]:
    from denoise import engine, io, registry, runtime, stream, tiles, treatments

    patched = []
    for owner, name, stage, wrap in [
        (runtime, "tensorflow", "start-up (import TensorFlow)", timed),
        (registry, "load", "model load", timed),
        (io, "read_image", "decode", timed),
        (treatments, "estimate_level", "sigma estimate", timed),
        (treatments, "estimate_sigma", "sigma estimate", timed),
        (tiles, "extract", "tiling", timed_iterator),
        (tiles.Blender, "add", "blend", timed),
        (tiles.Blender, "result", "blend", timed),
        (io, "encode", "encode", timed),
        (io, "write_atomic", "write", timed),
        (stream.ReadAhead, "__iter__", "wait for input (main thread)", timed_iterator),
    ]:
        if patch(owner, name, stage, wrap):
            patched.append(f"{getattr(owner, '__name__', owner)}.{name}")

    runner = getattr(engine, "Engine", None)
    if runner is not None and hasattr(runner, "function"):
        original = runner.function

        def function(self, loaded):
            infer = original(self, loaded)
            if getattr(infer, "_profiled", False):
                return infer
            first = [True]

            def call(*args, **kwargs):
                stage = "model (first call: trace)" if first[0] else "model"
                first[0] = False
                wall, cpu = time.perf_counter(), time.thread_time()
                result = infer(*args, **kwargs)
                result = result.numpy() if hasattr(result, "numpy") else result
                _add(stage, time.perf_counter() - wall, time.thread_time() - cpu)
                return _Ready(result)

            call._profiled = True
            self.functions[loaded.name] = call
            return call

        runner.function = function
        patched.append("engine.Engine.function")
    return patched


class _Ready:
    """A model output already converted: ``.numpy()`` returns it (the pipeline calls it)."""

    def __init__(self, array):
        self.array = array

    def numpy(self):
        return self.array

    def __getattr__(self, name):
        return getattr(self.array, name)


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out, args = Path(sys.argv[1]), sys.argv[3:]
    patched = install()
    from denoise.cli import main as cli

    code = 0
    try:
        cli.main(args=args, prog_name="denoise", standalone_mode=False)
    except SystemExit as exit_:
        code = exit_.code or 0
    wall = time.perf_counter() - START
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    stages = {stage: {"wall_s": round(w, 3), "thread_cpu_s": round(c, 3), "calls": n} for stage, (w, c, n) in STATS.items()}
    attributed = sum(c for _, c, _ in STATS.values())
    result = {"args": args, "exit": code, "wall_s": round(wall, 3), "process_cpu_s": round(cpu, 3),
              "unattributed_cpu_s": round(cpu - attributed, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
              "patched": patched, "stages": stages}
    out.write_text(json.dumps(result, indent=1) + "\n")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
