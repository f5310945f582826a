"""Where the time of `denoise run` goes: the same command, with the stages' timing hooks on.

  python benchmarks/profile_run.py PROFILE.json -- run INPUT OUTPUT --model ... --sigma 25

Listens to denoise.timing (no patching: the package reports its own stages) and adds up, per
stage, wall seconds, the CPU seconds of the calling thread and the call count:

  start-up         importing TensorFlow and choosing the device
  model load       registry.load (reading the .keras file, building the model)
  decode           io.read_image (file read + Pillow decode + conversion to float32)
  prepare          each image made ready for the model in a decode thread (reading and treatments)
  noise reading    the level and noise kind read on each image (with --sigma auto, on the default path too)
  model            each call of the compiled inference function (the first one traces it)
  blend            tiles weighted back into the image, and the treatments undone
  encode           io.encode (float -> integers, Pillow encoder)
  write            io.write_atomic (temporary file + rename)
  wait for input   time the main thread spends waiting for decoded images

Stages run on several threads at once (decode threads, writer threads, the main thread runs the
model), so their wall seconds overlap; the CPU seconds do not. The model's arithmetic runs in
TensorFlow's own thread pool, so its CPU shows up only in the process total: "unattributed CPU" =
process CPU - the stages' thread CPU, which is mostly the model's compute. Some stages nest
(noise reading within prepare), so their CPU is counted in both.
"""

from __future__ import annotations

import collections
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


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out, args = Path(sys.argv[1]), sys.argv[3:]
    from denoise import timing
    from denoise.cli import main as cli

    timing.listener = _add

    code = 0
    try:
        cli.main(args=args, prog_name="denoise", standalone_mode=False)
    except SystemExit as exit_:
        code = exit_.code or 0
    wall = time.perf_counter() - START
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    stages = {stage: {"wall_s": round(w, 3), "thread_cpu_s": round(c, 3), "calls": n} for stage, (w, c, n) in STATS.items()}
    attributed = sum(c for stage, (_, c, _) in STATS.items() if stage != "noise reading")  # within prepare
    result = {"args": args, "exit": code, "wall_s": round(wall, 3), "process_cpu_s": round(cpu, 3),
              "unattributed_cpu_s": round(cpu - attributed, 3), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
              "stages": stages}
    out.write_text(json.dumps(result, indent=1) + "\n")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
