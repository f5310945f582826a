"""What a run says: one stderr line per failure, the progress bar, the closing summary line and
the JSON report; and the rules every batch command shares around its work (option checks, dry
run, SIGINT and SIGTERM, exit codes).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from denoise import io
from denoise.plan import Job, RunOptions, check_options, count_inputs, plan


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


def guarded(options: RunOptions, body: Callable[[Recorder], None], unit: str = "img") -> dict:
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


def one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
