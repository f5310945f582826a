"""Planning a batch: which input file goes to which output, and what is refused before any work.

Outputs mirror the input tree. Nothing here reads pixels or writes files: it walks folders, checks
paths and yields :class:`Job` records, lazily, so the first image starts at once in any tree.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterator

from denoise import io
from denoise.settings import Inference, UsageError


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything a batch run needs: the files, how to write them, and the inference settings."""

    inputs: tuple[Path, ...]
    output: Path
    inference: Inference = Inference()
    recursive: bool = True
    format: str = "keep"
    quality: int = 95
    overwrite: bool = False
    dry_run: bool = False
    report: Path | None = None
    progress: bool = False  # the progress bar (a terminal only)
    quiet: bool = False  # no closing summary line either
    workers: int = max(2, min(8, os.cpu_count() or 2))


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



def check_options(options: RunOptions) -> None:
    """Refuse runs that could overwrite or re-read their own inputs, or whose inference settings
    no run can do (UsageError: exit status 2)."""
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
    options.inference.check()


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
        if target.exists() and (same_file(target, path) or target.resolve() in self.files):
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


def same_file(target: Path, path: Path) -> bool:
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
